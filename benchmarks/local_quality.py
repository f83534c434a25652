"""How good is the embedded default (no key, no judges: Qwen2.5-Coder-0.5B since issue 16; SmolLM2-135M and
Gemma 3 270M before) on a seeded sample of SST-2 dev, through `llmlabel label` with the real llama.cpp
server, scored against gold.

    python benchmarks/local_quality.py [--rows 200] [--gold-rows 30] [--data-dir ../shared/data]

--gold-rows N: the first N sampled rows' labels go to a `gold:` file (llmlabel then recalibrates confidences on
them, Platt scaling); every score is on the other rows. Answers are cached in --cache-dir, so a second run with
gold rows asks the model nothing new.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from llmlabel.evaluation.metrics import expected_calibration_error

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--gold-rows", type=int, default=0)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "llmlabel-local-quality-cache"))
    a = ap.parse_args()
    rows = list(csv.DictReader(open(Path(a.data_dir) / "sst2_dev.csv", encoding="utf-8")))
    random.Random(0).shuffle(rows)
    rows = rows[: a.rows]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        with open(d / "in.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
            w.writeheader()
            w.writerows(rows)
        # Only a task section: no judges, and no OPENAI_* variables, so llmlabel runs its embedded models.
        (d / "c.yaml").write_text(
            "task:\n  name: sst2\n  instructions: Is the movie review positive or negative?\n"
            "  labels: {negative: the reviewer dislikes the movie, positive: the reviewer likes the movie}\n"
            f"cache_dir: {a.cache_dir}\n" + (f"gold: {d / 'gold.csv'}\n" if a.gold_rows else "")
        )
        with open(d / "gold.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["id", "label"], extrasaction="ignore")
            w.writeheader()
            w.writerows(rows[: a.gold_rows])
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "llmlabel",
                "label",
                str(d / "in.csv"),
                "-c",
                str(d / "c.yaml"),
                "-o",
                str(d / "out.jsonl"),
                "-q",
            ],
            check=True,
            env=env,
        )
        wall = time.perf_counter() - t
        out = [json.loads(l) for l in open(d / "out.jsonl")]
    gold_ids = {r["id"] for r in rows[: a.gold_rows]}
    out = [r for r in out if r["id"] not in gold_ids]
    n = len(out)
    judges = sorted(out[0]["judges"])
    acc = {j: sum(r["judges"][j].get("label") == r["label_input"] for r in out) / n for j in judges}
    share = {j: sum(r["judges"][j].get("label") == "positive" for r in out) / n for j in judges}
    ens = sum(r["label"] == r["label_input"] for r in out) / n
    valid = sum(all(r["judges"][j].get("label") in ("positive", "negative") for j in judges) for r in out) / n
    gold_pos = sum(r["label_input"] == "positive" for r in out) / n
    conf = np.array([r["confidence"] for r in out], dtype=float)
    ok = np.array([r["label"] == r["label_input"] for r in out])
    ece = expected_calibration_error(conf, ok)
    lines = [
        "## Embedded local models on SST-2 dev (real llama.cpp server)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores ({platform.machine()}), load at start {load:.2f}. "
        f"Command: `python benchmarks/local_quality.py --rows {a.rows}`",
        "",
        f"{n} reviews scored"
        + (f" (after the first {a.gold_rows} of the sample, given as gold rows)" if a.gold_rows else "")
        + f" (seeded sample of sst2_dev.csv, {gold_pos:.0%} positive), the embedded default: a JSON answer, its label token's logprobs "
        f"calibrated on content-free inputs; {wall:.0f}s wall for {a.rows} rows ({wall / a.rows:.2f}s each"
        ", 0 when the answers came from the cache).",
        "",
        "| judge | accuracy | answers 'positive' | valid labels |",
        "|---|---|---|---|",
    ]
    lines += [f"| {j} | {acc[j]:.3f} | {share[j]:.0%} | {valid:.0%} |" for j in judges]
    lines += [
        f"| llmlabel's label (calibrated distributions, soft vote) | {ens:.3f} | | |",
        "",
        f"Confidence: mean {conf.mean():.3f}, ECE {ece:.3f} (15 bins).",
        "",
        "These are small models: they exist so llmlabel runs with no key at all. "
        "Point a judge at a real endpoint for real work (see the README).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    name = "local_quality_gold.md" if a.gold_rows else "local_quality.md"
    (ROOT / "benchmarks" / "results" / name).write_text(text)


if __name__ == "__main__":
    main()
