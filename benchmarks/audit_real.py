"""The audit on real noise with a real judge: `llmlabel audit` with the embedded default (Qwen2.5-Coder-0.5B,
label mode, calibrated logprobs) on a seeded sample whose true labels are known.

    python benchmarks/audit_real.py [--task sst2] [--rows 200] [--flip 0.1] [--cache-dir DIR]

sst2: a seeded sample of SST-2 dev (the same sample and prompt as benchmarks/local_quality.py, so its answer
cache is reused) with a seeded share of labels flipped; the flips are the known errors (a flipped TREC label
goes to one of the other five at random). sms and trec the same way, or with their own labels (--flip 0): no
known errors, so the report lists the top of the ranking to read by hand.

Reported per flip seed (each seed flips other rows; the judge's answers are the same, so extra seeds are
free) and pooled: rows flagged, the audit's estimated precision against the true precision of the flags,
recall, precision@k of the ranking (k = number of flipped rows), AUROC of the score for flipped rows, and
the audit's estimated number of errors against the true one. Writes benchmarks/results/audit_real_TASK.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# The tasks (instructions and labels) are real_quality.py's; SST-2's is also local_quality.py's, whose cached
# answers are reused.
from real_quality import TASKS  # noqa: E402

from llmlabel.auditing.signals import auroc  # noqa: E402


def noisy_sample(
    data_dir: Path, task: str, n: int, flip: float, seed: int
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The first n rows of the seed-0 shuffle (local_quality's sample), with round(flip * n) labels flipped
    (chosen by `seed`) to another label; returns the rows (given labels) and each id's true label."""
    rows = list(csv.DictReader(open(data_dir / TASKS[task]["file"], encoding="utf-8")))
    random.Random(0).shuffle(rows)
    rows = [dict(r) for r in rows[:n]]
    truth = {r["id"]: r["label"] for r in rows}
    labels = list(TASKS[task]["labels"])
    rng = random.Random(seed)
    for i in rng.sample(range(n), round(flip * n)):
        rows[i]["label"] = rng.choice([lab for lab in labels if lab != rows[i]["label"]])
    return rows, truth


def start_servers(state_dir: Path, threads: int) -> list[Any]:
    """Embedded servers on `threads` llama.cpp threads, registered in state_dir so the audit reuses them."""
    from llmlabel.local import servers

    st, procs = servers.launch(state_dir / "run", threads=threads)
    servers._write_state(state_dir, st)
    return procs


def audit(d: Path, task: str, rows: list[dict[str, str]], truth: dict[str, str], a: argparse.Namespace) -> dict:
    t = TASKS[task]
    with open(d / "in.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        w.writeheader()
        w.writerows(rows)
    with open(d / "gold.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label"])
        w.writerows(truth.items())
    # Only a task section: no judges and no OPENAI_* variables, so llmlabel runs its embedded default.
    cfg = {"task": {"name": task, "instructions": t["instructions"], "labels": t["labels"]}, "cache_dir": a.cache_dir}
    (d / "c.yaml").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["LLMLABEL_STATE_DIR"] = str(d.parent / "state")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "llmlabel", "audit", str(d / "in.csv"), "-c", str(d / "c.yaml")]
    cmd += ["-o", str(d / "audit.jsonl"), "--gold", str(d / "gold.csv"), "--min-precision", str(a.min_precision)]
    start = time.perf_counter()
    subprocess.run([*cmd, "-q"], check=True, env=env)
    wall = time.perf_counter() - start
    recs = [json.loads(x) for x in open(d / "audit.jsonl")]
    summary = json.loads((d / "audit.jsonl.summary.json").read_text())
    return {"recs": recs, "summary": summary, "wall": wall}


def measure(recs: list[dict[str, Any]], truth: dict[str, str]) -> dict[str, Any]:
    """Against the true labels; recs are in the audit's order (most suspicious first)."""
    wrong = np.array([truth[r["id"]] != r["given_label"] for r in recs])
    flag = np.array([r["flagged"] for r in recs])
    k = int(wrong.sum())
    n = len(recs)
    tp = int((flag & wrong).sum())
    out: dict[str, Any] = {"rows": n, "errors": k, "flagged": int(flag.sum()), "tp": tp}
    out["precision"] = tp / flag.sum() if flag.any() else float("nan")
    out["recall"] = tp / k if k else float("nan")
    out["p_at_k"] = float(wrong[:k].mean()) if k else float("nan")
    out["est_errors"] = float(sum(1 - r["score"] for r in recs))
    out["est_flag"] = [1 - r["score"] for r in recs if r["flagged"]]
    for sig in ("score", "judge_score", "cleanlab_score"):
        s = np.array([r[sig] if r[sig] is not None else np.nan for r in recs], dtype=float)
        out[f"auroc_{sig}"] = auroc(-s, wrong) if k and not np.isnan(s).any() else float("nan")
    judge = [next(iter(r["judges"].values()), {}).get("label") for r in recs]
    out["judge_acc"] = float(np.mean([j == truth[r["id"]] for j, r in zip(judge, recs)]))
    return out


def se(p: float, n: int) -> str:
    return f" ± {math.sqrt(p * (1 - p) / n):.2f}" if n and not math.isnan(p) else ""


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def report(task: str, a: argparse.Namespace, runs: list[tuple[int, dict, dict]], load: float) -> str:
    m0 = runs[0][2]
    lines = [
        f"## Audit on real noise with a real judge: {a.name or task} (benchmarks/audit_real.py)",
        "",
        *([a.note, ""] if a.note else []),
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores ({platform.machine()}) shared with other jobs "
        f"(load {load:.1f} at start), llama.cpp threads {a.threads}. Command: `python benchmarks/audit_real.py "
        f"--task {task} --rows {a.rows} --flip {a.flip} --seeds {a.seeds} --min-precision {a.min_precision}"
        f"{' --name ' + a.name if a.name else ''}`; "
        f"first audit {runs[0][1]['wall']:.0f}s wall"
        f" ({'answers from the cache' if runs[0][1]['wall'] < a.rows * 0.5 else 'answers asked'}).",
        "",
        f"`llmlabel audit` (embedded default judge: Qwen2.5-Coder-0.5B, label mode, calibrated logprobs; TF-IDF "
        f"confident-learning signal) on {m0['rows']} rows of {TASKS[task]['file']} (seeded sample), "
        + (
            f"{m0['errors']} labels flipped at random per seed: the known errors; each seed flips other rows."
            if a.flip
            else "with the dataset's own labels (errors unknown: judged by reading the top of the ranking)."
        )
        + f" The judge alone is right on {m0['judge_acc']:.1%} of the rows (true labels).",
        "",
    ]
    if a.flip:
        lines += [
            "| flip seed | flagged | est. precision | true precision | recall | precision@k | AUROC combined "
            "/ judges / classifier | est. errors / true |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for seed, res, m in runs:
            est = res["summary"].get("est_precision")
            lines.append(
                f"| {seed} | {m['flagged']} | {fmt(est)} | {fmt(m['precision'])} ({m['tp']}) | {m['recall']:.2f} | "
                f"{m['p_at_k']:.2f} | {m['auroc_score']:.3f} / {m['auroc_judge_score']:.3f} / "
                f"{fmt(m['auroc_cleanlab_score'], '.3f')} | {m['est_errors']:.1f} / {m['errors']} |"
            )
        ms = [m for _, _, m in runs]
        flagged, tp = sum(m["flagged"] for m in ms), sum(m["tp"] for m in ms)
        est = [e for m in ms for e in m["est_flag"]]
        errs = sum(m["errors"] for m in ms)
        true_p = tp / flagged if flagged else float("nan")
        pk = float(np.mean([m["p_at_k"] for m in ms]))
        lines += [
            f"| **pooled** | {flagged} | {fmt(float(np.mean(est)) if est else None)} | "
            f"{fmt(true_p)}{se(true_p, flagged)} ({tp}) | {tp / errs:.2f} | {pk:.2f}{se(pk, errs)} | "
            f"{np.mean([m['auroc_score'] for m in ms]):.3f} / {np.mean([m['auroc_judge_score'] for m in ms]):.3f} / "
            f"{fmt(float(np.mean([m['auroc_cleanlab_score'] for m in ms])), '.3f')} | "
            f"{np.mean([m['est_errors'] for m in ms]):.1f} / {errs / len(ms):.0f} |",
            "",
            "est. precision: the audit's own expected precision of its flags (mean P(wrong) over them; pooled: over "
            "every flag); true precision: the share of flags that are flipped rows (± one standard error); "
            "precision@k: the share of flipped rows among the k most suspicious, k = the number flipped.",
        ]
    else:
        res, m = runs[0][1], m0
        est = res["summary"].get("est_precision")
        lines += [
            f"Flagged {m['flagged']} of {m['rows']} rows (target precision {a.min_precision}), estimated precision "
            f"{fmt(est)}; estimated label errors in the file {m['est_errors']:.1f}.",
            "",
            f"Top {a.show} of the ranking (given label -> suggested label, score, text):",
            "",
        ]
        lines += [
            f"{i + 1}. {r['given_label']} -> {r['suggested_label']} ({r['score']:.3f}"
            f"{', flagged' if r['flagged'] else ''}): {r['text'][:140]!r}"
            for i, r in enumerate(res["recs"][: a.show])
        ]
    lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sst2", choices=sorted(TASKS))
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--flip", type=float, default=0.1, help="share of labels flipped (0: the dataset's own)")
    ap.add_argument("--seeds", default="1,2,3,4,5", help="flip seeds (which rows are flipped), one audit each")
    ap.add_argument("--min-precision", type=float, default=0.8)
    ap.add_argument("--show", type=int, default=30, help="with --flip 0: how many top rows to list")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "llmlabel-local-quality-cache"))
    ap.add_argument("--work", help="keep the audit's files here (a rerun then reuses its judges' answers)")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    ap.add_argument("--name", help="results file benchmarks/results/NAME.md (default audit_real_TASK)")
    ap.add_argument("--note", default="", help="a line under the heading (what code this run measures)")
    a = ap.parse_args()
    from llmlabel.local import servers

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(a.work or tmp)
        d.mkdir(parents=True, exist_ok=True)
        procs = start_servers(d / "state", a.threads)
        runs = []
        try:
            for seed in [int(x) for x in a.seeds.split(",")] if a.flip else [0]:
                rows, truth = noisy_sample(Path(a.data_dir), a.task, a.rows, a.flip, seed)
                (d / f"seed{seed}").mkdir(exist_ok=True)
                res = audit(d / f"seed{seed}", a.task, rows, truth, a)
                runs.append((seed, res, measure(res["recs"], truth)))
        finally:
            for p in procs:
                servers._terminate(p.pid)
    text = report(a.task, a, runs, load)
    print(text)
    (ROOT / "benchmarks" / "results" / f"{a.name or 'audit_real_' + a.task}.md").write_text(text)
    from benchmarks import collect  # rebuilds BENCHMARKS.md from every results file

    collect.main([])


if __name__ == "__main__":
    main()
