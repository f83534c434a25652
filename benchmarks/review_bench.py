#!/usr/bin/env python3
"""The review loop with simulated judges and a simulated human (the gold labels), on SST-2, TREC and SMS.

Three judges served by shared/tools/fakellm.py (accuracy 0.85, 0.75, 0.65; JSON answers) label each
set once through the `llmlabel` CLI; the review loop then runs in this process (llmlabel.review.loop.simulate,
the gold file answering every row it is asked). Measured:

(a) the final dataset's true accuracy after B human labels, targeted vs random review (mean of 3 seeds), and
    the human labels each needs to reach 95%: the smallest B on the grid, and the loop itself run with
    --target-accuracy 0.95 in rounds of 50 (where it stopped, and what it stated);
(b) the interval's coverage: over 50 seeded reviews (150 human labels, 100 of them random), how often the
    stated 95% interval holds the final dataset's true accuracy;
(c) ECE of each judge's own confidence (judges without logprobs; a logprob judge simulated in this process,
    since fakellm cannot answer llmlabel's logprob prompt) and of the ensemble's, raw
    and after Platt scaling on 30 and 100 gold rows (20 seeded draws; ECE on the rows not drawn).

Writes benchmarks/results/review_sim.md (and review_sim_*.png when matplotlib is installed: pip install
'.[bench]').

    python benchmarks/review_bench.py [--keep DIR] [--reps 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import (  # noqa: E402
    DATA,
    RESULTS,
    ROOT,
    FakeLLM,
    accuracy_args,
    command_line,
    machine,
    now,
    read_csv,
    table,
    write_csv,
    write_result,
)

from llmlabel.ensemble.calibration import calibrate_confidence  # noqa: E402
from llmlabel.evaluation.metrics import expected_calibration_error  # noqa: E402
from llmlabel.review.dataset import load_output, model_view  # noqa: E402
from llmlabel.review.loop import Settings, judge_calibrators, judge_confidence, simulate  # noqa: E402

# fakellm answers label names where llmlabel's logprob prompt asks for codes, so its judges here answer in JSON
# (no logprobs, confidence 1.0); the logprob kind is simulated in this process for (c) (see sim_logprob_judge).
JUDGES = [("strong", "judge-a", 0.85, False), ("medium", "judge-b", 0.75, False), ("weak", "judge-c", 0.65, False)]
TASKS = {
    "sst2": (
        "sst2_dev.csv",
        None,
        "Classify the sentiment of the movie review sentence.",
        {"negative": "negative about the movie", "positive": "positive about the movie"},
    ),
    "trec": (
        "trec_test.csv",
        None,
        "Classify the question by the kind of answer it asks for.",
        {
            "ABBR": "an abbreviation",
            "DESC": "a description or reason",
            "ENTY": "an entity",
            "HUM": "a person or group",
            "LOC": "a location",
            "NUM": "a number or date",
        },
    ),
    "sms": (
        "sms_spam.csv",
        1000,
        "Is the SMS message spam?",
        {"ham": "an ordinary message", "spam": "unsolicited advertising or a scam"},
    ),
}
GRID = [0, 50, 100, 200, 300, 400]
T = TypeVar("T")
ECE_OF = {  # the rows of table (c)
    "logprob (simulated)": "logprob judge (simulated in-process, 0.85)",
    "strong": "judge without logprobs (fakellm, 0.85)",
    "medium": "judge without logprobs (fakellm, 0.75)",
    "weak": "judge without logprobs (fakellm, 0.65)",
    "ensemble": "the ensemble (3 fakellm judges, refit)",
}


def prepare(work: Path, name: str) -> tuple[Path, Path, dict[str, str], list[str]]:
    fname, limit, instr, labels = TASKS[name]
    rows = read_csv(DATA / fname)
    rows = rows[:limit] if limit else rows
    inp = write_csv(work / f"{name}.csv", ["id", "text"], ([r["id"], r["text"]] for r in rows))
    gold = {r["id"]: r["label"] for r in rows}
    return inp, work / f"{name}.cfg.yaml", gold, list(labels)


def label(work: Path, name: str, base_url: str) -> tuple[Path, Path, dict[str, str], list[str]]:
    inp, cfg_path, gold, labels = prepare(work, name)
    _, _, instr, descr = TASKS[name]
    cfg = {
        "task": {"name": name, "instructions": instr, "labels": descr},
        "cache_dir": str(work / "cache"),
        "judges": [
            {
                "name": n,
                "model": m,
                "base_url": base_url,
                "logprobs": lp,
                "concurrency": 16,
                **({} if lp else {"response_format": "json_schema"}),
            }
            for n, m, _, lp in JUDGES
        ],
        "cascade": {"enabled": False},
    }
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = work / f"{name}.out.jsonl"
    if not out.exists():
        common.label(inp, cfg_path, out, cwd=ROOT)
    return out, cfg_path, gold, labels


def true_acc(records: list[dict], gold: dict[str, str]) -> float:
    return float(np.mean([r["label"] == gold[r["id"]] for r in records]))


def budget_curve(ds, gold, seeds=3, validation=50) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    base = model_view(ds)
    acc0 = float(np.mean([base.label[i] == gold[r] for i, r in enumerate(ds.ids)]))
    for strategy in ("targeted", "random"):
        accs = []
        for b in GRID:
            if b == 0:
                accs.append(acc0)
                continue
            vals = []
            for seed in range(seeds):
                s = Settings.make(budget=b, validation=min(validation, b), strategy=strategy, seed=seed)
                vals.append(true_acc(simulate(ds, s, lambda it: gold[it.id])[-1].result.records, gold))
            accs.append(float(np.mean(vals)))
        out[strategy] = accs
    return out


def to_target(ds, gold, strategy: str) -> dict[str, float]:
    s = Settings.make(budget=len(ds) // 2, validation=100, round_size=50, strategy=strategy, seed=0, target=0.95)
    reps = simulate(ds, s, lambda it: gold[it.id])
    res = reps[-1].result
    return {
        "human": res.human_labels,
        "rounds": len(reps),
        "met": bool(res.target_met),
        "true": true_acc(res.records, gold),
        "est": res.accuracy.estimate or float("nan"),
        "low": res.accuracy.low,
        "high": res.accuracy.high,
    }


def coverage(ds, gold, reps: int, strategy: str) -> dict[str, float]:
    hit, widths, accs = 0, [], []
    for seed in range(reps):
        if strategy == "targeted":
            s = Settings.make(budget=150, validation=100, seed=1000 + seed)
        else:  # the random sample alone: the final accuracy stays near the judges', where an interval can miss
            s = Settings.make(budget=100, validation=100, strategy="random", seed=1000 + seed)
        res = simulate(ds, s, lambda it: gold[it.id])[-1].result
        t = true_acc(res.records, gold)
        hit += res.accuracy.low <= t <= res.accuracy.high
        widths.append(res.accuracy.high - res.accuracy.low)
        accs.append(t)
    return {"coverage": hit / reps, "width": float(np.mean(widths)), "true": float(np.mean(accs)), "reps": reps}


def sim_logprob_judge(gold: list[str], labels: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A judge with logprobs, simulated: right on 85% of rows, its probability for its label ~ Beta(4, 2) when
    right and Beta(2, 2) when wrong (at least 1/K): confidence that ranks rows but is off in level (mean ~0.64
    for 0.85 right, like the embedded judge's 0.73 for 0.86 on SST-2). Returns (confidence, right)."""
    rng = np.random.default_rng(seed)
    right = rng.random(len(gold)) < 0.85
    conf = np.where(right, rng.beta(4, 2, len(gold)), rng.beta(2, 2, len(gold)))
    return np.maximum(conf, 1.0 / len(labels)), right


def ece_table(ds, gold, draws: int = 20) -> dict[str, dict[int, float]]:
    ids = ds.ids
    rng = np.random.default_rng(0)
    out: dict[str, dict[int, list[float]]] = {}
    lp_conf, lp_right = sim_logprob_judge([gold[r] for r in ids], ds.labels)
    for k in (0, 30, 100):
        if k >= len(ids):  # a small sample: no rows left to score after k gold rows
            continue
        for d in range(draws if k else 1):
            pick = set(rng.choice(len(ids), size=k, replace=False).tolist()) if k else set()
            g = {ids[i]: gold[ids[i]] for i in pick}
            cals = judge_calibrators(ds, g) if k else {}
            rest = [i for i in range(len(ids)) if i not in pick]
            # The simulated logprob judge, Platt-scaled by the same function on the same rows.
            f = (
                calibrate_confidence([float(lp_conf[i]) for i in pick], [bool(lp_right[i]) for i in pick])
                if k
                else None
            )
            c = np.array([f(float(lp_conf[i])) if f else float(lp_conf[i]) for i in rest])
            out.setdefault("logprob (simulated)", {}).setdefault(k, []).append(
                expected_calibration_error(c, lp_right[rest])
            )
            for name in ds.judge_names:
                conf, ok = [], []
                f = cals.get(name, (None, 0))[0]
                for i in rest:
                    lab, c = judge_confidence(ds.results[i].judges.get(name))
                    if lab is None or c is None:
                        continue
                    conf.append(f(c) if f else c)
                    ok.append(lab == gold[ids[i]])
                out.setdefault(name, {}).setdefault(k, []).append(
                    expected_calibration_error(np.array(conf), np.array(ok))
                )
            view = model_view(ds, g or None)
            conf = [float(view.confidence[i]) for i in rest]
            ok = [view.label[i] == gold[ids[i]] for i in rest]
            out.setdefault("ensemble", {}).setdefault(k, []).append(
                expected_calibration_error(np.array(conf), np.array(ok))
            )
    return {n: {k: float(np.mean(v)) for k, v in d.items()} for n, d in out.items()}


def plot(curves: dict[str, dict[str, list[float]]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), sharey=True)
    for ax, (name, c) in zip(np.atleast_1d(axes), curves.items()):
        for strategy, ys in c.items():
            ax.plot(GRID, ys, marker="o", label=strategy)
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
        ax.set_title(name)
        ax.set_xlabel("human labels")
    np.atleast_1d(axes)[0].set_ylabel("final dataset accuracy (true)")
    np.atleast_1d(axes)[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def by_set(headers: list[str], results: dict[str, dict[str, T]], cells: Callable[[T], list[Any]]) -> str:
    """A results table with a row for each set and each of its entries (a strategy, a judge): set, entry, cells."""
    return table(headers, [[name, key, *cells(v)] for name, d in results.items() for key, v in d.items()])


def needed(ys: list[float]) -> str:
    return next((str(b) for b, y in zip(GRID, ys) if y >= 0.95), f"> {GRID[-1]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="work directory to keep (labeled outputs are reused)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--tasks", default="sst2,trec,sms")
    a = ap.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="review-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    server = FakeLLM(
        [DATA / TASKS[t][0] for t in TASKS], extra=accuracy_args({m: acc for _, m, acc, _ in JUDGES}), log_dir=work
    ).start()
    curves, targets, covs, eces, sizes = {}, {}, {}, {}, {}
    try:
        for name in a.tasks.split(","):
            out, cfg, gold, labels = label(work, name, server.base_url)
            ds = load_output(out, labels)
            sizes[name] = len(ds)
            print(f"[{name}] labeled {len(ds)} rows", file=sys.stderr, flush=True)
            curves[name] = budget_curve(ds, gold)
            print(f"[{name}] curve {curves[name]}", file=sys.stderr, flush=True)
            targets[name] = {s: to_target(ds, gold, s) for s in ("targeted", "random")}
            print(f"[{name}] to target {targets[name]}", file=sys.stderr, flush=True)
            covs[name] = {s: coverage(ds, gold, a.reps, s) for s in ("targeted", "random")}
            print(f"[{name}] coverage {covs[name]}", file=sys.stderr, flush=True)
            eces[name] = ece_table(ds, gold)
    finally:
        server.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "review_sim_budget.png"
    plotted = plot(curves, png)
    L = [
        "# Review loop with simulated judges and a simulated human",
        "",
        f"- date: {now()}",
        f"- command: `{command_line()}`",
        f"- machine: {machine()}",
        f"- wall: {time.time() - t0:.0f} s",
        "",
        "Judges (shared/tools/fakellm.py, JSON answers without logprobs, so each says 1.0): strong 0.85, "
        "medium 0.75, weak 0.65 accuracy. fakellm cannot play a logprob judge for llmlabel (it answers label names "
        "where llmlabel's logprob prompt asks for codes, and only its right answers parsed), so the logprob kind "
        "in (c) is simulated in this process. "
        "Aggregation: majority (the config default); after answers, the refit on them (gold-weighted vote, the "
        "answers' label prior, Platt-scaled confidence). The human is the gold file. Rows: "
        + ", ".join(f"{k} {v}" for k, v in sizes.items())
        + " (SMS: its first 1,000 rows).",
        "",
        "## (a) Final dataset accuracy (true) after B human labels, mean of 3 seeds",
        "",
        "One round: 50 random rows (B < 50: B) for the estimate, the rest chosen (targeted) or random.",
        "",
        by_set(
            ["set", "strategy", *(f"B={b}" for b in GRID), "B to reach 0.95"],
            curves,
            lambda ys: [*(f"{y:.3f}" for y in ys), needed(ys)],
        ),
    ]
    if plotted:
        L += ["", f"![accuracy vs human labels]({png.name})"]
    L += [
        "",
        "The loop with `--target-accuracy 0.95`: 100 random rows, then rounds of 50 until the interval's lower "
        "bound reaches 0.95 (budget: half the rows).",
        "",
        by_set(
            [
                "set",
                "strategy",
                "human labels",
                "rounds",
                "target met",
                "stated accuracy [95% interval]",
                "true accuracy",
            ],
            targets,
            lambda r: [
                r["human"],
                r["rounds"],
                r["met"],
                f"{r['est']:.3f} [{r['low']:.3f}, {r['high']:.3f}]",
                f"{r['true']:.3f}",
            ],
        ),
    ]
    L += [
        "",
        f"## (b) Coverage of the stated 95% interval over {a.reps} seeded reviews",
        "",
        "targeted: 150 human labels (100 random, 50 targeted); random: 100 random rows only. The true accuracy "
        "is the final dataset's (human labels plus the refit model labels) against gold.",
        "",
        by_set(
            ["set", "review", "coverage", "mean width", "mean true accuracy"],
            covs,
            lambda c: [
                f"{c['coverage']:.2f} ({round(c['coverage'] * c['reps'])}/{c['reps']})",
                f"{c['width']:.3f}",
                f"{c['true']:.3f}",
            ],
        ),
    ]
    L += [
        "",
        "## (c) ECE after 0 / 30 / 100 gold rows (Platt scaling; mean of 20 draws, on the rows not drawn)",
        "",
        by_set(
            ["set", "confidence of", "0", "30", "100"],
            {name: {ECE_OF.get(j, j): d for j, d in e.items()} for name, e in eces.items()},
            lambda d: [f"{d[0]:.3f}", f"{d[30]:.3f}", f"{d[100]:.3f}"],
        ),
    ]
    write_result("review_sim.md", "\n".join(L))


if __name__ == "__main__":
    main()
