"""The embedded default's speed in a whole `llmlabel label` job, beside llama.cpp's own speed on the same
cores (issue 29: "the speed of the default on a quiet machine, rows/s beside llama.cpp's own prompt and
generation tokens/s").

    python benchmarks/embedded_job_speed.py [--rows 100] [--task sst2] [--out benchmarks/results/embedded_job_speed.md]

Writes N seeded rows of the task (benchmarks/embedded_quality.py's sample and config, the one a new user
writes), runs `llmlabel label` on them as a subprocess with no key, no judges and a fresh cache (so every
request is asked: server start, the content-free probes and every row), reads the run's ledger (wall seconds,
requests, prompt and generated tokens), scores the output against the gold labels, then measures llama.cpp's
own prompt (pp) and generation (tg) tokens/s for the same model and threads (benchmarks/embedded_speed.py).
"Expected s/request" is what llama.cpp's own speed gives for the job's mean tokens a request: the rest is
llmlabel and HTTP. Run it with nothing else on the machine: the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import read_jsonl, tempdir, write_csv  # noqa: E402
from embedded_quality import TASKS, sample, wilson  # noqa: E402
from embedded_speed import bench  # noqa: E402

DEFAULT_OUT = str(ROOT / "benchmarks" / "results" / "embedded_job_speed.md")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sst2", help="a task of benchmarks/embedded_quality.py (news: see its TASKS)")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--pp", type=int, default=128, help="llama.cpp prompt tokens measured")
    ap.add_argument("--tg", type=int, default=16, help="llama.cpp generated tokens measured")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--keep", help="a folder to keep the job's files in (input, config, cache, output, ledger)")
    a = ap.parse_args()

    import yaml

    from llmlabel.local import servers
    from llmlabel.local.models import MODELS, model_paths, selected

    alias = selected()[0]
    t = TASKS[a.task]
    rows = sample(a.task, a.rows)
    if a.keep and Path(a.keep).exists() and any(Path(a.keep).iterdir()):
        raise SystemExit(f"--keep {a.keep}: not empty (the job needs a fresh cache)")
    with tempdir("embedded-job-", a.keep) as d:
        write_csv(d / "in.csv", ["id", "text"], ([r["id"], r["text"]] for r in rows))
        write_csv(d / "gold.csv", ["id", "label"], ([r["id"], r["label"]] for r in rows))
        cfg = {"task": {"name": a.task, "instructions": t["instructions"], "labels": t["labels"]}}
        (d / "c.yaml").write_text(yaml.safe_dump({**cfg, "cache_dir": str(d / "cache")}, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}  # no key: the embedded model
        before = load()
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "llmlabel", "label", "in.csv", "-c", "c.yaml", "-o", "out.jsonl"]
        subprocess.run(cmd, cwd=d, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        after = load()
        run = json.loads((d / "out.jsonl.ledger.json").read_text())["runs"][-1]
        out = read_jsonl(d / "out.jsonl")
    gold = {r["id"]: r["label"] for r in rows}
    right = sum(r["label"] == gold[r["id"]] for r in out)
    bc = (run.get("quality") or {}).get("batch_calibration") or {}
    judge = next(iter(run["judges"].values()))
    req = run["requests"]
    # (a per-label judge asks each row one question per label, and no content-free probes)
    per_row = round(req / a.rows)
    judge_mode = (
        f"{per_row} a row: one Yes/No question per label" if per_row > 1 else "the rows and the content-free probes"
    )
    tin, tout = judge["input_tokens"] / req, judge["output_tokens"] / req
    threads = servers.env_threads() or os.cpu_count() or 1  # as the job's server ran
    pp, tg = bench(str(model_paths([alias])[alias]), a.pp, a.tg, 3, threads)
    llama_after = load()
    expected = tin / pp + tout / tg
    secs = run["wall_seconds"]
    text = "\n".join(
        [
            f"## The embedded default ({alias}) in a whole `llmlabel label` job, and llama.cpp's own speed",
            "",
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores ({platform.machine()}), "
            f"nothing else running by intent. Load average (1, 5, 15 min) before the job {before}, after it {after}, "
            f"after llama.cpp's own measurement {llama_after}. Command: `python benchmarks/embedded_job_speed.py "
            f"--task {a.task} --rows {a.rows}{'' if a.out == DEFAULT_OUT else ' --out ' + os.path.relpath(a.out, ROOT)}`. "
            f"Model file: {MODELS[alias].filename}.",
            "",
            f"Job: {a.rows} seeded rows of {t['file']} ({t['kind']}), the config a new user writes, no key, a fresh "
            f"cache: {req} requests ({judge_mode}), {tin:.0f} prompt and {tout:.1f} "
            f"generated tokens a request on average; accuracy {right}/{len(out)} = {right / len(out):.3f} "
            "[{:.2f}, {:.2f}] (95% Wilson interval). Batch Calibration: {}; content-free calibration undone: {}.".format(
                *wilson(right, len(out)), bc.get("judges") or "none", bc.get("content_free_undone") or "none"
            ),
            "",
            "| measure | value |",
            "|---|---|",
            f"| run's wall seconds (ledger; the server already started) | {secs:.1f} |",
            f"| whole command, server start included | {wall:.1f} s |",
            f"| rows/s | {a.rows / secs:.3f} |",
            f"| s/row | {secs / a.rows:.2f} |",
            f"| s/request | {secs / req:.2f} |",
            f"| llama.cpp prompt tokens/s (pp{a.pp}, {threads} threads, best of 3) | {pp:.1f} |",
            f"| llama.cpp generated tokens/s (tg{a.tg}, {threads} threads, best of 3) | {tg:.1f} |",
            f"| expected s/request from llama.cpp's own speed | {expected:.2f} |",
            "",
            "A request can take less than expected: llama.cpp's server keeps the previous prompt's tokens and "
            "processes only what differs, so the instructions and labels every request shares are not read again "
            "(and a per-label question, the row's text that its other labels' questions share).",
            "",
        ]
    )
    print(text)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
