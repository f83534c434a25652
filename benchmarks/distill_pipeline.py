"""The distillation acceptance run, through the CLI: a simulated teacher labels TREC train in candidate mode,
`llmlabel distill` trains students (candidates and single), `llmlabel predict` labels TREC test.

    python benchmarks/distill_pipeline.py [--data-dir ../shared/data] [--accuracy 0.71]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmlabel", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--accuracy", type=float, default=0.71)
    a = ap.parse_args()
    data = Path(a.data_dir)
    train, test = data / "trec_train.csv", data / "trec_test.csv"
    port = free_port()
    fake = subprocess.Popen(
        [
            sys.executable,
            str(ROOT.parent / "shared" / "tools" / "fakellm.py"),
            "--data",
            str(train),
            "--data",
            str(test),
            "--port",
            str(port),
            "--accuracy",
            f"teacher={a.accuracy}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2)
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            (d / "c.yaml").write_text(
                "task:\n  name: trec\n  instructions: Classify the question by the kind of answer it asks for.\n"
                "  labels: {ABBR: abbreviation, DESC: description or reason, ENTY: entity, HUM: person or group,"
                " LOC: location, NUM: number or date}\n"
                f"judges:\n  - {{name: teacher, model: teacher, base_url: 'http://127.0.0.1:{port}/v1', concurrency: 32}}\n"
                f"mode: candidates\ncache_dir: {d / 'cache'}\n"
            )
            t_label = cli("label", str(train), "-c", str(d / "c.yaml"), "-o", str(d / "train.jsonl"), "-q")
            lab = [json.loads(l) for l in open(d / "train.jsonl")]
            t_acc = sum(r["label"] == r["label_input"] for r in lab) / len(lab)
            cov = sum(r["label_input"] in r["candidates"] for r in lab) / len(lab)
            size = sum(len(r["candidates"]) for r in lab) / len(lab)
            gold = {r["id"]: r["label"] for r in csv.DictReader(open(test))}
            results = []
            for mode in ("candidates", "single"):
                t_fit = cli(
                    "distill", str(d / "train.jsonl"), "-o", str(d / f"{mode}.skops"), "--mode", mode, "--no-cv"
                )
                t_pred = cli("predict", str(d / f"{mode}.skops"), str(test), "-o", str(d / f"{mode}.pred.jsonl"))
                pred = [json.loads(l) for l in open(d / f"{mode}.pred.jsonl")]
                acc = sum(gold[p["id"]] == p["label"] for p in pred) / len(pred)
                results.append((mode, acc, t_fit, t_pred))
    finally:
        fake.terminate()
        fake.wait()
    cmd = "python benchmarks/distill_pipeline.py" + (f" --accuracy {a.accuracy}" if a.accuracy != 0.71 else "")
    lines = [
        "## Distillation through the CLI (label -> distill -> predict)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores ({platform.machine()}), load at start "
        f"{os.getloadavg()[0]:.2f}. Command: `{cmd}`",
        "",
        f"Teacher: fakellm model of accuracy {a.accuracy} labeling TREC train ({len(lab)} rows) in candidate mode "
        f"in {t_label:.1f}s: single-label accuracy {t_acc:.3f}, candidate coverage {cov:.3f}, mean set size {size:.2f}.",
        "",
        "| student (`llmlabel distill --mode`) | accuracy on TREC test (500, gold) | distill s (incl. start-up) | predict s |",
        "|---|---|---|---|",
    ]
    lines += [f"| {m} | {acc:.3f} | {tf:.1f} | {tp:.1f} |" for m, acc, tf, tp in results]
    lines.append("")
    lines.append(f"Target: candidate student >= 0.80: {'met' if results[0][1] >= 0.80 else 'NOT met'}.")
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "benchmarks" / "results" / "distill_pipeline.md").write_text(text)


if __name__ == "__main__":
    main()
