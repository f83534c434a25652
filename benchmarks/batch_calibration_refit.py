"""The whole-job refit's time with and without Batch Calibration (`batch_calibration: true`), on in-memory rows.

    nice python benchmarks/batch_calibration_refit.py [--rows 100000] [--labels 6] [--judges 1,3]
        [--methods majority,dawid_skene] [--repeat 3] [--no-bc] [--out benchmarks/results/batch_calibration_refit.md]

Each row holds J logprob judges' answers (a label distribution over K labels, rounded to 4 digits as stored,
the first judge biased toward the first label). Timed: `refit` itself (the fit over every row) and the
revote of every row (each row's new result, what writing the output calls), best of --repeat, in this process.
--no-bc times the refit without the option only (what an llmlabel without the feature can run)."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmlabel.ensemble.combine import refit  # noqa: E402
from llmlabel.results import JudgeAnswer, RowResult  # noqa: E402


def rows(n: int, K: int, J: int, seed: int = 0) -> list[RowResult]:
    rng = np.random.default_rng(seed)
    labels = [f"l{k}" for k in range(K)]
    truth = rng.integers(0, K, n)
    out = []
    for j in range(J):
        logits = rng.normal(0, 1, (n, K))
        logits[np.arange(n), truth] += 1.5
        if j == 0:
            logits[:, 0] += 1.0  # the bias Batch Calibration removes
        p = np.exp(logits)
        out.append(np.round(p / p.sum(1, keepdims=True), 4))
    res = []
    for i in range(n):
        judges = {}
        for j in range(J):
            probs = dict(zip(labels, out[j][i].tolist()))
            judges[f"j{j}"] = JudgeAnswer(label=max(probs, key=probs.__getitem__), probs=probs)
        res.append(RowResult.make(f"r{i}", judges=judges, label=judges["j0"].label))
    return res


def timed(data: list[RowResult], J: int, K: int, method: str, bc: bool, repeat: int) -> tuple[float, float, int]:
    labels = [f"l{k}" for k in range(K)]
    names = [f"j{j}" for j in range(J)]
    kw = {"batch": names[:1]} if bc else {}
    fit = apply = float("inf")
    changed = 0
    for _ in range(repeat):
        t = time.perf_counter()
        update, _ = refit(lambda: iter(data), names, labels, method, "label", **kw)  # type: ignore[arg-type]
        t2 = time.perf_counter()
        new = [update(pos, r) for pos, r in enumerate(data)] if update else data
        t3 = time.perf_counter()
        fit, apply = min(fit, t2 - t), min(apply, t3 - t2)
        changed = sum(a.label != b.label for a, b in zip(new, data))
    return fit, apply, changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--labels", type=int, default=6)
    ap.add_argument("--judges", default="1,3")
    ap.add_argument("--methods", default="majority,dawid_skene")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-bc", action="store_true", help="time without Batch Calibration only")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    lines = [
        "## The whole-job refit with Batch Calibration",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores ({platform.machine()}) "
        f"shared with other jobs (load {os.getloadavg()[0]:.1f}), Python {platform.python_version()}. Command: "
        f"`python benchmarks/batch_calibration_refit.py {shlex.join(sys.argv[1:])}`",
        "",
        f"{a.rows:,} in-memory rows, {a.labels} labels, logprob judges (the first biased toward one label); "
        f"best of {a.repeat}. refit: the fit over every row; revote: every row's new result.",
        "",
        "| judges | method | batch calibration | refit s | revote s | total s | labels changed |",
        "|---|---|---|---|---|---|---|",
    ]
    for J in (int(x) for x in a.judges.split(",")):
        data = rows(a.rows, a.labels, J)
        for method in a.methods.split(","):
            if J == 1 and method != "majority":
                continue
            for bc in (False,) if a.no_bc else (False, True):
                fit, apply, changed = timed(data, J, a.labels, method, bc, a.repeat)
                lines.append(
                    f"| {J} | {method} | {'first judge' if bc else 'off'} | {fit:.2f} | {apply:.2f} | "
                    f"{fit + apply:.2f} | {changed:,} |"
                )
                print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
