"""Is the embedded default's confidence one a user can act on? `llmlabel label` with the embedded default
(Qwen2.5-Coder-0.5B, label mode, its label token's logprobs calibrated on content-free inputs) on seeded
samples of SST-2 dev, SMS spam and TREC test (../shared/data), scored against their labels.

    python benchmarks/confidence_real.py [--tasks sst2,sms,trec] [--rows 200,200,120] [--gold-rows 30]

Each sample is split in two halves: A (the first half) is where a change may be chosen, B is where it is
reported. Without gold: accuracy, mean confidence and ECE (15 bins; ± a bootstrap standard error) on each half.
With --gold-rows G: the first G rows of A go to llmlabel as gold rows (Platt scaling of the confidence) and
the scores are on B. The samples are audit_real.py's (its answer cache is reused with the same --cache-dir).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from audit_real import TASKS, noisy_sample, start_servers  # noqa: E402

from llmlabel.evaluation.metrics import expected_calibration_error  # noqa: E402


def label(d: Path, task: str, rows: list[dict[str, str]], gold: list[dict[str, str]], cache_dir: str) -> list[dict]:
    """`llmlabel label` on rows (embedded default), gold rows given as `gold:` when any; the output records."""
    t = TASKS[task]
    with open(d / "in.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        w.writeheader()
        w.writerows(rows)
    cfg = {"task": {"name": task, "instructions": t["instructions"], "labels": t["labels"]}, "cache_dir": cache_dir}
    if gold:
        with open(d / "gold.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "label"])
            w.writerows((r["id"], r["label"]) for r in gold)
        cfg["gold"] = str(d / "gold.csv")
    (d / "c.yaml").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["LLMLABEL_STATE_DIR"] = str(d.parent / "state")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = d / "out.jsonl"
    cmd = [sys.executable, "-m", "llmlabel", "label", str(d / "in.csv"), "-c", str(d / "c.yaml"), "-o", str(out)]
    subprocess.run([*cmd, "-q"], check=True, env=env)
    return [json.loads(x) for x in open(out)]


def scores(recs: list[dict], seed: int = 0) -> dict[str, float]:
    ok = np.array([r["label"] == r["label_input"] for r in recs])
    conf = np.array([r["confidence"] if r["confidence"] is not None else 0.0 for r in recs], dtype=float)
    rng = np.random.default_rng(seed)
    boot = [expected_calibration_error(conf[i], ok[i]) for i in (rng.integers(0, len(ok), len(ok)) for _ in range(200))]
    return {
        "n": len(ok),
        "acc": float(ok.mean()),
        "conf": float(conf.mean()),
        "ece": expected_calibration_error(conf, ok),
        "se": float(np.std(boot)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="sst2,sms,trec")
    ap.add_argument("--rows", default="200,200,120", help="rows per task, in --tasks order")
    ap.add_argument("--gold-rows", type=int, default=30)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "llmlabel-local-quality-cache"))
    ap.add_argument("--work", help="keep the runs' files here")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    ap.add_argument("--name", default="confidence_real", help="results file benchmarks/results/NAME.md")
    ap.add_argument("--note", default="", help="a line under the heading (what code this run measures)")
    a = ap.parse_args()
    from llmlabel.local import servers

    tasks, sizes = a.tasks.split(","), [int(x) for x in a.rows.split(",")]
    load = os.getloadavg()[0]
    table = [
        "| dataset | half | rows scored | gold rows | accuracy | mean confidence | ECE (± se) |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(a.work or tmp)
        d.mkdir(parents=True, exist_ok=True)
        procs = start_servers(d / "state", a.threads)
        try:
            for task, n in zip(tasks, sizes):
                rows, _ = noisy_sample(Path(a.data_dir), task, n, 0.0, 0)
                half = n // 2
                (d / task).mkdir(exist_ok=True)
                recs = {r["id"]: r for r in label(d / task, task, rows, [], a.cache_dir)}
                for name, part in (("A", rows[:half]), ("B", rows[half:])):
                    s = scores([recs[r["id"]] for r in part])
                    table.append(
                        f"| {task} | {name} | {s['n']} | 0 | {s['acc']:.3f} | {s['conf']:.3f} | "
                        f"{s['ece']:.3f} ± {s['se']:.3f} |"
                    )
                if a.gold_rows:
                    (d / f"{task}_gold").mkdir(exist_ok=True)
                    recs = {r["id"]: r for r in label(d / f"{task}_gold", task, rows, rows[: a.gold_rows], a.cache_dir)}
                    s = scores([recs[r["id"]] for r in rows[half:]])
                    table.append(
                        f"| {task} | B | {s['n']} | {a.gold_rows} (from A) | {s['acc']:.3f} | {s['conf']:.3f} | "
                        f"{s['ece']:.3f} ± {s['se']:.3f} |"
                    )
        finally:
            for p in procs:
                servers._terminate(p.pid)
    lines = [
        f"## Confidence of the embedded default on real data: {a.name} (benchmarks/confidence_real.py)",
        "",
        *([a.note, ""] if a.note else []),
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores ({platform.machine()}) shared with other jobs "
        f"(load {load:.1f} at start), llama.cpp threads {a.threads}. Command: `python benchmarks/confidence_real.py "
        f"--tasks {a.tasks} --rows {a.rows} --gold-rows {a.gold_rows}`.",
        "",
        "`llmlabel label` with the embedded default (Qwen2.5-Coder-0.5B, label mode, calibrated logprobs) on "
        "seeded samples; half A (first half of each sample) is for choosing, half B for reporting. ECE: 15 bins, "
        "± a bootstrap standard error (200 resamples). Gold rows: the first rows of half A, given as `gold:` "
        "(judge weights, label prior, Platt scaling of the confidence); scored on half B.",
        "",
        *table,
        "",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "benchmarks" / "results" / f"{a.name}.md").write_text(text)
    from benchmarks import collect  # rebuilds BENCHMARKS.md from every results file

    collect.main([])


if __name__ == "__main__":
    main()
