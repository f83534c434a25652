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

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DATA,
    FakeLLM,
    accuracy_args,
    header,
    judge,
    label_and_eval,
    now,
    read_csv,
    sample_parser,
    table,
    tempdir,
    write_config,
    write_csv,
    write_result,
)

ACCURACIES = {"judge-a": 0.85, "judge-b": 0.75, "judge-c": 0.6}


def _r(rep: dict) -> list[str]:
    return [f"{rep[k]:.3f}" for k in ("micro_f1", "macro_f1", "hamming_loss", "subset_accuracy")]


def main() -> None:
    ap = sample_parser()
    ap.add_argument("--gold-rows", type=int, default=200)
    a = ap.parse_args()
    started = now()
    src = DATA / "goemotions_test.csv"
    labels = (DATA / "goemotions_labels.txt").read_text().split()
    rows = random.Random(a.seed).sample(read_csv(src), a.rows)
    results = []
    with (
        tempdir("llmlabel-ml-") as tmp,
        FakeLLM([src], extra=accuracy_args(ACCURACIES)) as fake,
    ):
        inp = write_csv(tmp / "in.csv", ["id", "text"], ([r["id"], r["text"]] for r in rows))
        # Every setup is scored on the rows after the first gold_rows (the gold setup's anchors are never scored).
        gold = write_csv(tmp / "gold.csv", ["id", "label"], ([r["id"], r["labels"]] for r in rows[a.gold_rows :]))
        gold_part = write_csv(
            tmp / "gold_part.csv", ["id", "label"], ([r["id"], r["labels"]] for r in rows[: a.gold_rows])
        )
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
            run, _, rep = label_and_eval(inp, cfg, gold, tmp, fake)
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
