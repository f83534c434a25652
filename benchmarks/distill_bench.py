#!/usr/bin/env python3
"""Distillation benchmark: students trained from a simulated teacher on TREC, plus scale.

(a) Simulates the teacher over trec_train.csv exactly like shared/tools/fakellm.py (its World
    class: seed "0", model "teacher", accuracy 0.71), trains students from the teacher's single
    labels and from its candidate sets (with and without confidence weights) and one on the true
    labels (ceiling), and scores them on trec_test.csv gold. Refinery choices are made on a
    held-out slice of train scored against the teacher, never on test gold.
(b) Fit time on 100k rows (TREC train texts replicated with small perturbations) and
    predict_rows throughput.

Writes benchmarks/results/distill.md.

    python benchmarks/distill_bench.py [--data-dir ../shared/data] [--rows 100000]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import os
import platform
import random
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from llmlabel.distill.student import CandidateDistiller  # noqa: E402
from llmlabel.distill.training import predict_rows  # noqa: E402


def load_world(data_dir: str, train_csv: str):
    tool = os.path.join(data_dir, "..", "tools", "fakellm.py")
    spec = importlib.util.spec_from_file_location("fakellm", tool)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod.World([train_csv], {"teacher": 0.71}, "0")


def read(path: str) -> tuple[list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"] for r in rows], np.array([r["label"] for r in rows], dtype=object)


def perturb(texts: list[str], n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """n texts (and their source index): originals with a random word inserted, dropped or
    swapped (most rows)."""
    rng = random.Random(seed)
    vocab = [w for t in texts for w in t.split()]
    out, src = [], []
    while len(out) < n:
        i = rng.randrange(len(texts))
        src.append(i)
        w = texts[i].split()
        op = rng.random()
        if op < 0.4:
            w.insert(rng.randrange(len(w) + 1), rng.choice(vocab))
        elif op < 0.6 and len(w) > 3:
            del w[rng.randrange(len(w))]
        elif op < 0.8:
            w[rng.randrange(len(w))] = rng.choice(vocab)
        out.append(" ".join(w))
    return out, src


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--rows", type=int, default=100_000, help="rows for the scale test (0 skips it)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "distill.md"))
    a = ap.parse_args(argv)

    train_csv = os.path.join(a.data_dir, "trec_train.csv")
    texts, gold = read(train_csv)
    test_texts, test_gold = read(os.path.join(a.data_dir, "trec_test.csv"))
    world = load_world(a.data_dir, train_csv)
    ans = [world.answer("teacher", t, g, world.labels, "") for t, g in zip(texts, gold)]
    single = [s for s, _, _ in ans]
    cands = [c for _, c, _ in ans]
    conf = np.array([c for _, _, c in ans])
    t_acc = float(np.mean(np.array(single, dtype=object) == gold))
    t_cov = float(np.mean([g in c for g, c in zip(gold, cands)]))
    t_size = float(np.mean([len(c) for c in cands]))
    print(f"teacher on train: accuracy {t_acc:.3f}, candidate coverage {t_cov:.3f}, mean set size {t_size:.2f}")

    runs = [
        ("single label (teacher)", dict(y=single)),
        ("single label, confidence-weighted", dict(y=single, sample_weight=conf)),
        ("candidates (refinery)", dict(candidates=cands, y=single)),
        ("candidates (refinery), confidence-weighted", dict(candidates=cands, y=single, sample_weight=conf)),
        ("true labels (ceiling)", dict(y=list(gold))),
    ]
    table = []
    for name, kw in runs:
        m = CandidateDistiller()
        t0 = time.perf_counter()
        m.fit(texts, **kw)
        secs = time.perf_counter() - t0
        acc = float(np.mean(m.predict(test_texts) == test_gold))
        extra = f"best round {m.best_round_}, held-out {m.holdout_score_[:2]}" if m.mode_ == "candidates" else ""
        print(f"{name:45s} test acc {acc:.3f}  fit {secs:5.1f}s  {extra}")
        table.append((name, acc, secs, extra))

    scale = []
    if a.rows:
        big, src = perturb(texts, a.rows)
        # The teacher answers each perturbed text as it would its source text's gold.
        bans = [world.answer("teacher", t, gold[i], world.labels, "") for t, i in zip(big, src)]
        for mode, kw in [
            ("candidates", dict(candidates=[c for _, c, _ in bans], y=[s for s, _, _ in bans])),
            ("single", dict(y=[s for s, _, _ in bans])),
        ]:
            m = CandidateDistiller()
            t0 = time.perf_counter()
            m.fit(big, **kw)
            fit_s = time.perf_counter() - t0
            rows = [{"id": i, "text": t} for i, t in enumerate(big)]
            t0 = time.perf_counter()
            n = sum(1 for _ in predict_rows(m, rows))
            pred_s = time.perf_counter() - t0
            print(f"scale {mode}: fit {a.rows} rows {fit_s:.1f}s, predict_rows {n / pred_s:,.0f} rows/s")
            scale.append((mode, fit_s, n / pred_s))

    cmd = "python benchmarks/distill_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Distillation benchmark",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `{cmd.strip()}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        f'- teacher (fakellm World, seed "0", model "teacher", accuracy 0.71) on TREC train: '
        f"accuracy {t_acc:.3f}, candidate coverage {t_cov:.3f}, mean candidate-set size {t_size:.2f}",
        "- students: CandidateDistiller defaults (hashed word 1-2 + char_wb 2-5 TF-IDF, "
        "multinomial logistic regression); rounds chosen on a 10% held-out slice of train scored "
        "against the teacher, never on test gold",
        "",
        "| student | accuracy on TREC test | fit seconds | notes |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {acc:.3f} | {s:.1f} | {x} |" for n, acc, s, x in table]
    if scale:
        lines += [
            "",
            f"## Scale ({a.rows:,} perturbed TREC rows)",
            "",
            "| mode | fit seconds | predict_rows rows/s |",
            "|---|---|---|",
        ]
        lines += [f"| {m} | {f:.1f} | {r:,.0f} |" for m, f, r in scale]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
