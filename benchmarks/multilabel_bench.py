#!/usr/bin/env python3
"""Multi-label labeling on GoEmotions test (28 emotions, 1.18 labels a row) with simulated judges.

fakellm answers a multi-label row with a noisy label set (each gold label kept with the judge's accuracy, now
and then a wrong one added) and a one-label row with a candidate-style set (the gold label, sometimes with a
confusion). Three judges of different accuracies label a seeded sample; the report gives each judge's own
micro/macro-F1 (from the ensemble output's judge answers) beside each aggregation's (majority, weighted,
Dawid-Skene per label), and Dawid-Skene with per-label thresholds fitted on 200 gold rows.

    python benchmarks/multilabel_bench.py                 # 1,000 rows
    python benchmarks/multilabel_bench.py --rows 300 --out /tmp/ml.md
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, FakeLLM, header, judge, label, now, run_cli, table, tempdir, write_config, write_result  # noqa: E402

ACCURACIES = {"judge-a": 0.85, "judge-b": 0.75, "judge-c": 0.6}


def _r(rep: dict) -> list[str]:
    return [f"{rep[k]:.3f}" for k in ("micro_f1", "macro_f1", "hamming_loss", "subset_accuracy")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gold-rows", type=int, default=200)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    started = now()
    src = DATA / "goemotions_test.csv"
    labels = (DATA / "goemotions_labels.txt").read_text().split()
    with open(src, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rows = random.Random(a.seed).sample(rows, a.rows)
    results = []
    with (
        tempdir("llmlabel-ml-") as tmp,
        FakeLLM([src], extra=[x for m, acc in ACCURACIES.items() for x in ("--accuracy", f"{m}={acc}")]) as fake,
    ):
        inp, gold, gold_part = tmp / "in.csv", tmp / "gold.csv", tmp / "gold_part.csv"
        with open(inp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "text"])
            w.writerows([[r["id"], r["text"]] for r in rows])
        # Every setup is scored on the rows after the first gold_rows (the gold setup's anchors are never scored).
        for path, part in ((gold, rows[a.gold_rows :]), (gold_part, rows[: a.gold_rows])):
            with open(path, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["id", "label"])
                w.writerows([[r["id"], r["labels"]] for r in part])
        task = {
            "name": "goemotions",
            "instructions": "Which emotions does this Reddit comment express?",
            "labels": labels,
            "multi_label": True,
        }
        judges = [judge(m.replace("judge-", ""), m, fake.base_url, 32) for m in ACCURACIES]
        setups = [
            ("majority", {"aggregate": "majority"}),
            ("weighted", {"aggregate": "weighted"}),
            ("dawid_skene", {"aggregate": "dawid_skene"}),
            (
                f"dawid_skene + {a.gold_rows} gold rows (thresholds)",
                {"aggregate": "dawid_skene", "gold": str(gold_part)},
            ),
        ]
        judge_rows = None
        for name, extra in setups:
            cfg = write_config(tmp / "c.yaml", judges, tmp / "cache", task=task, **extra)
            out = tmp / "out.jsonl"
            run = label(inp, cfg, out)
            run_cli(["eval", str(out), "--gold", str(gold), "-o", str(tmp / "eval.json")])
            rep = json.loads((tmp / "eval.json").read_text())
            if judge_rows is None:
                judge_rows = [
                    [f"{n} alone (simulated accuracy {ACCURACIES['judge-' + n]})", *_r(j), "", ""]
                    for n, j in rep["judges"].items()
                ]
            ece = rep.get("calibration", {}).get("ece_pairs")
            results.append([name, *_r(rep), "" if ece is None else f"{ece:.3f}", f"{run.wall:.1f}"])
        requests = fake.requests()
    text = header(
        "Multi-label labeling: GoEmotions test, simulated judges",
        "n/a",
        started,
        [
            f"{a.rows} rows sampled from goemotions_test.csv (seed {a.seed}); 28 labels; gold: the dataset's label sets",
            f"judges: fakellm models {', '.join(f'{m}={acc}' for m, acc in ACCURACIES.items())} (its multi-label noise: "
            "each gold label kept with that probability, now and then a wrong one added)",
            f"requests paid: {requests} (each setup after the first reads the cache: {a.rows * 3} answers)",
            f"metrics from `llmlabel eval` on the {a.rows - a.gold_rows} rows after the first {a.gold_rows} (those are the "
            "last setup's gold rows, so no setup is scored on them)",
        ],
    )
    text += "\n" + table(
        ["setup", "micro-F1", "macro-F1", "Hamming loss", "subset accuracy", "ECE (row, label)", "wall s"],
        (judge_rows or []) + results,
    )
    text += (
        "\n\nA published zero-shot LLM baseline for GoEmotions was not found in the sources available to this "
        "project; none is quoted.\n"
    )
    write_result("multilabel_goemotions.md", text, a.out)


if __name__ == "__main__":
    main()
