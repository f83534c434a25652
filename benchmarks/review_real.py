#!/usr/bin/env python3
"""The review loop over the embedded real model's labels (no key: Qwen2.5-Coder-0.5B behind llama.cpp), with the
gold file as the simulated human, on seeded samples of SST-2 dev, TREC test and SMS.

The same measurements as benchmarks/review_bench.py (which uses simulated judges), on labels a real model gave:
(a) the final dataset's true accuracy after B human labels, targeted vs random (mean of 3 seeds), and the loop
    run with --target-accuracy 0.95 in rounds of 25; (b) the stated interval's coverage over seeded reviews;
(c) ECE of the model's own (logprob, content-free calibrated) confidence, raw and after Platt scaling on 30 and
    100 gold rows. Labeling is the slow part (the model on 2 CPU cores); it is cached, so a rerun is quick.

    python benchmarks/review_real.py [--rows 200] [--reps 50] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import review_bench as rb  # noqa: E402
from common import RESULTS, ROOT, command_line, machine, now  # noqa: E402

from llmlabel.review.dataset import load_output  # noqa: E402

SIZES = {"sst2": "sst2_dev.csv", "trec": "trec_test.csv", "sms": "sms_spam.csv"}


def label_real(work: Path, name: str, rows: int) -> tuple[Path, dict[str, str], list[str], float]:
    """A seeded sample labeled by the embedded model; returns (output, gold, labels, seconds spent labeling)."""
    fname, _, instr, descr = rb.TASKS[name]
    with open(rb.DATA / fname, newline="", encoding="utf-8") as fh:
        data = list(csv.DictReader(fh))
    sample = random.Random(0).sample(data, min(rows, len(data)))
    inp = work / f"{name}.csv"
    with open(inp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text"])
        w.writeheader()
        w.writerows({"id": r["id"], "text": r["text"]} for r in sample)
    cfg = work / f"{name}.cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"task": {"name": name, "instructions": instr, "labels": descr}, "cache_dir": str(work / "cache")},
            sort_keys=False,
        )
    )
    out = work / f"{name}.out.jsonl"
    t = time.time()
    if not out.exists():
        common.label(inp, cfg, out, cwd=ROOT)  # no key: the embedded model (common.clean_env drops every key)
    return out, {r["id"]: r["label"] for r in sample}, list(descr), time.time() - t


COVERAGES = (0.2, 0.4, 0.6, 0.8, 1.0)


def risk_coverage(ds, gold: dict[str, str]) -> list[tuple[float, float]]:
    """(coverage, accuracy of the kept rows) when rows are kept most confident first."""
    view = rb.model_view(ds)
    order = np.argsort(-np.array([float(c) for c in view.confidence]), kind="stable")
    right = np.array([view.label[i] == gold[ds.ids[i]] for i in order])
    return [(c, float(right[: max(1, round(c * len(right)))].mean())) for c in COVERAGES]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="200", help="rows per set: N, or per set: sst2=100,trec=60,sms=60")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--tasks", default="sst2,trec,sms")
    ap.add_argument("--keep", help="work directory to keep (labeled outputs and the cache are reused)")
    a = ap.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="review-real-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = {t: int(a.rows) for t in a.tasks.split(",")} if "=" not in a.rows else {}
    for part in a.rows.split(",") if "=" in a.rows else []:
        t, n = part.split("=")
        sizes[t.strip()] = int(n)
    t0 = time.time()
    rows_out = []
    risk: dict[str, list[tuple[float, float]]] = {}
    plans: dict[str, tuple[int, int]] = {}  # per set: (validation rows, round size = 10% of the rows)
    for name in a.tasks.split(","):
        out, gold, labels, secs = label_real(work, name, sizes[name])
        step = max(1, sizes[name] // 10)
        rb.GRID = [0, step, 2 * step, 3 * step, 4 * step, 5 * step]  # budgets up to half the sample
        val = max(10, round(0.3 * sizes[name]))  # the random validation rows of the loop and the coverage reviews
        ds = load_output(out, labels)
        acc0 = rb.true_acc(ds.records, gold)
        curve = rb.budget_curve(ds, gold, validation=step)  # one round: 10% at random, the rest chosen or random
        target = {}
        for s in ("targeted", "random"):
            st = rb.Settings.make(budget=len(ds) // 2, validation=val, round_size=step, strategy=s, seed=0, target=0.95)
            res = rb.simulate(ds, st, lambda it: gold[it.id])[-1].result
            target[s] = (res.human_labels, bool(res.target_met), res.accuracy, rb.true_acc(res.records, gold))
        cov = {}
        for s in ("targeted", "random"):
            hit, widths = 0, []
            for seed in range(a.reps):
                budget = val + 2 * step if s == "targeted" else val
                st = rb.Settings.make(budget=budget, validation=val, strategy=s, seed=1000 + seed)
                res = rb.simulate(ds, st, lambda it: gold[it.id])[-1].result
                tr = rb.true_acc(res.records, gold)
                hit += res.accuracy.low <= tr <= res.accuracy.high
                widths.append(res.accuracy.high - res.accuracy.low)
            cov[s] = (hit, float(np.mean(widths)))
        ece = {k: v for k, v in rb.ece_table(ds, gold).items() if k != "logprob (simulated)"}
        risk[name] = risk_coverage(ds, gold)
        rows_out.append((name, len(ds), secs, acc0, curve, target, cov, ece))
        plans[name] = (val, step)
        print(f"[{name}] {len(ds)} rows, accuracy {acc0:.3f}, labeled in {secs:.0f} s", file=sys.stderr, flush=True)
    L = [
        "# Review loop over the embedded real model's labels",
        "",
        f"- date: {now()}",
        f"- command: `{command_line()}`",
        f"- machine: {machine()}",
        f"- wall: {time.time() - t0:.0f} s (labeling included; a rerun reads the cache)",
        "",
        "Labels: the no-key default (Qwen2.5-Coder-0.5B-Instruct, logprobs over label codes, content-free "
        "calibration), one judge, on "
        + ", ".join(f"{r[0]} {r[1]}" for r in rows_out)
        + " rows sampled with seed 0. The human is the gold file.",
        "",
        "## (a) Final dataset accuracy (true) after B human labels, mean of 3 seeds",
        "",
        "B: human labels, as a share of the set's rows; one round: 10% of the rows at random, the rest chosen "
        "(targeted) or random.",
        "",
        "| set | rows | model accuracy | strategy | " + " | ".join(f"B={10 * k}%" for k in range(6)) + " |",
        "|---|---|---|---|" + "---|" * 6,
    ]
    for name, n, _, acc0, curve, *_ in rows_out:
        for s, ys in curve.items():
            L.append(f"| {name} | {n} | {acc0:.3f} | {s} | " + " | ".join(f"{y:.3f}" for y in ys) + " |")
    L += [
        "",
        "The loop with `--target-accuracy 0.95`: 30% of the rows at random, then rounds of 10% (budget: half the rows).",
        "",
        "| set | strategy | human labels | target met | stated accuracy [95% interval] | true accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for name, _, _, _, _, target, *_ in rows_out:
        for s, (h, met, acc, tr) in target.items():
            est = acc.estimate if acc.estimate is not None else float("nan")
            L.append(f"| {name} | {s} | {h} | {met} | {est:.3f} [{acc.low:.3f}, {acc.high:.3f}] | {tr:.3f} |")
    L += [
        "",
        f"## (b) Coverage of the stated 95% interval over {a.reps} seeded reviews",
        "",
        "targeted: 50% of the rows reviewed (30% random, 20% chosen); random: the 30% random rows only.",
        "",
        "| set | review | coverage | mean width |",
        "|---|---|---|---|",
    ]
    for name, _, _, _, _, _, cov, _ in rows_out:
        for s, (hit, w) in cov.items():
            L.append(f"| {name} | {s} | {hit / a.reps:.2f} ({hit}/{a.reps}) | {w:.3f} |")
    L += [
        "",
        "## (c) ECE of the model's confidence after 0 / 30 / 100 gold rows (Platt; mean of 20 draws, rows not drawn)",
        "",
        "| set | confidence of | 0 | 30 | 100 |",
        "|---|---|---|---|---|",
    ]
    for name, *_, ece in rows_out:
        for j, d in ece.items():
            L.append(f"| {name} | {j} | " + " | ".join(f"{d[k]:.3f}" if k in d else "n/a" for k in (0, 30, 100)) + " |")
    L += [
        "",
        "## (d) Risk-coverage: accuracy of the rows kept when only the most confident share is kept",
        "",
        "| set | " + " | ".join(f"keep {c:.0%}" for c in COVERAGES) + " |",
        "|---|" + "---|" * len(COVERAGES),
    ]
    for name, pts in risk.items():
        L.append(f"| {name} | " + " | ".join(f"{a_:.3f}" for _, a_ in pts) + " |")
    L += ["", "Seconds spent labeling (this run): " + ", ".join(f"{r[0]} {r[2]:.0f}" for r in rows_out) + "."]
    (RESULTS / "review_real.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
