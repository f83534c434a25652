"""llama.cpp's own speed for the embedded models, the way llama-bench measures it: prompt processing (pp: one
batch of N prompt tokens) and text generation (tg: M tokens one by one), in tokens/s, loaded as llmlabel's
servers load them (entry.no_repack, n_ctx 2048, --threads threads), in this process (no server, no HTTP).

    nice python benchmarks/embedded_speed.py --model /path/to/model.gguf [--pp 256] [--tg 32] [--reps 3]

Prints one Markdown row per model with the load average before and after: on a shared machine the figures
are what the cores gave while other jobs ran. Rows/s of labeling are in the embedded_*.md results (s/row).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmlabel.local.entry import no_repack  # noqa: E402


def bench(path: str, pp: int, tg: int, reps: int, threads: int) -> tuple[float, float]:
    from llama_cpp import Llama

    no_repack()
    llm = Llama(path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
    # A fixed token sequence: the text's content does not change the time of a forward pass.
    prompt = llm.tokenize(("The quick brown fox jumps over the lazy dog. " * 64).encode())[:pp]
    pps, tgs = [], []
    for _ in range(reps):
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        pps.append(len(prompt) / (time.perf_counter() - t))
        tok = prompt[-1]
        t = time.perf_counter()
        for _ in range(tg):
            llm.eval([tok])
        tgs.append(tg / (time.perf_counter() - t))
    return max(pps), max(tgs)  # llama-bench reports the mean; the max is the least disturbed by other jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="GGUF path (repeatable)")
    ap.add_argument("--pp", type=int, default=256)
    ap.add_argument("--tg", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    print(f"| model | pp{a.pp} tokens/s | tg{a.tg} tokens/s | threads | load before -> after |")
    print("|---|---|---|---|---|")
    for path in a.model:
        before = os.getloadavg()[0]
        pp, tg = bench(path, a.pp, a.tg, a.reps, a.threads)
        print(f"| {Path(path).name} | {pp:.1f} | {tg:.1f} | {a.threads} | {before:.1f} -> {os.getloadavg()[0]:.1f} |")


if __name__ == "__main__":
    main()
