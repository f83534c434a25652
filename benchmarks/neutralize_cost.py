"""Cost of llm.prompts.neutralize (a text's own <text>/</text> tags swapped for look-alikes) per text:
100,000 plain English texts, 20,000 HTML-heavy ones (21 tags each), 100,000 accented French ones.
Run: PYTHONPATH=. python benchmarks/neutralize_cost.py"""

import argparse
import time

from llmlabel.llm.prompts import neutralize

argparse.ArgumentParser(description="cost of llm.prompts.neutralize per text").parse_args()
CORPORA = {
    "plain": [
        f"review number {i}: the product is great and I would buy it again, really a fine thing" for i in range(100_000)
    ],
    "html": [f"<p>review <b>{i}</b>: the <i>product</i> is great</p> <br/>" * 3 for i in range(20_000)],
    "unicode": [f"revue numéro {i}: le produit est génial, vraiment" for i in range(100_000)],
}

for name, texts in CORPORA.items():
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for t in texts:
            neutralize(t)
        best = min(best, time.perf_counter() - start)
    print(f"{name} {len(texts)} {best * 1e6 / len(texts):.2f} us/text (best of 5)")
