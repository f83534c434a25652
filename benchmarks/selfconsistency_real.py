"""Self-consistency (`samples:` on a judge) on a real model: the embedded Qwen 0.5B judge (label mode, JSON
schema, no logprobs) answering greedily once per row, against the same judge asked k times per row at a
temperature (seeds seed..seed+k-1) with the vote as its label and the vote share as its confidence, on the
seeded samples of benchmarks/real_quality.py. Writes benchmarks/results/selfconsistency_real.md.

    python benchmarks/selfconsistency_real.py --rows 40 --samples 5 --temperatures 0.7,1.2 [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_quality import ROOT, TASKS, judge_config, run_task, sample, scored  # noqa: E402


def _split(gold: list[str], pred: list[str | None], conf: list[float | None]) -> str:
    """Accuracy of the unanimous rows (confidence 1) and of the split ones, with their counts."""
    parts = []
    for name, keep in (("unanimous", lambda c: c is not None and c >= 1.0), ("split", lambda c: c is None or c < 1.0)):
        ok = [g == p for g, p, c in zip(gold, pred, conf) if keep(c)]
        parts.append(f"{name} {sum(ok) / len(ok):.2f} ({len(ok)})" if ok else f"{name} - (0)")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--temperatures", default="0.7", help="comma-separated: one sampled judge per temperature")
    ap.add_argument("--tasks", default="sst2,trec")
    ap.add_argument("--port", type=int, default=18301, help="the llama.cpp server's port")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--work", help="keep inputs, outputs and the answer cache here (a rerun is then free)")
    ap.add_argument("--name", default="selfconsistency_real", help="results file benchmarks/results/NAME.md")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ["LLMLABEL_LOCAL_MODELS"] = "qwen2.5-coder-0.5b"
    from llmlabel.local import servers

    load = os.getloadavg()[0]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    temps = [float(t) for t in a.temperatures.split(",")]
    variants: list[tuple[str, dict[str, Any]]] = [("greedy, 1 sample", {})]
    variants += [
        (f"{a.samples} samples at T={t:g}", {"samples": a.samples, "temperature": t, "seed": 1}) for t in temps
    ]
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(a.work or tmp)
        d.mkdir(parents=True, exist_ok=True)
        state, procs = servers.launch(d / "run", port=a.port, threads=1)
        try:
            (j,) = state.judges()
            base = judge_config(j)
            for task in a.tasks.split(","):
                rows = sample(Path(a.data_dir), task, a.rows)
                labels = list(TASKS[task]["labels"])
                for name, extra in variants:
                    sub = d / f"{task}-s{extra.get('samples', 1)}-t{extra.get('temperature', 0):g}"
                    (sub / "cache").mkdir(parents=True, exist_ok=True)
                    res = run_task(task, rows, [{**base, **extra}], sub, "majority")
                    s, gold, pred, conf = scored(res, rows, labels)
                    led = res["ledger"]["judges"]["qwen"]
                    asked = led["requests"] + led["cache_hits"]
                    cold = sub / "cold.json"  # the seconds of the run that sent the requests (a rerun is cached)
                    if led["requests"] or not cold.exists():
                        cold.write_text(json.dumps({"wall": res["wall"], "rows": len(rows), "sent": led["requests"]}))
                    first = json.loads(cold.read_text())
                    mean_conf = sum(c or 0.0 for c in conf) / len(conf)
                    rows_out.append(
                        f"| {task} | {name} | {len(rows)} | {s['acc']:.3f} | {s['f1']:.3f} | {mean_conf:.2f} | "
                        f"{s['ece']:.3f} | {s['cov90']:.2f} | {_split(gold, pred, conf)} | {asked / len(rows):.1f} | "
                        f"{first['sent']} | {first['wall'] / first['rows']:.2f} |"
                    )
                    print(rows_out[-1], flush=True)
        finally:
            for p in procs:
                servers._terminate(p.pid)
    text = "\n".join(
        [
            "## Self-consistency on a real model (benchmarks/selfconsistency_real.py)",
            "",
            f"{started}, {os.cpu_count()} shared cores (load {load:.1f} at start), llama.cpp threads 1, "
            f"run under `nice -n 10`. Command: `python benchmarks/selfconsistency_real.py --rows {a.rows} "
            f"--samples {a.samples} --temperatures {a.temperatures} --tasks {a.tasks}"
            + (f" --name {a.name}" if a.name != "selfconsistency_real" else "")
            + "`",
            "",
            "Judge: the embedded Qwen2.5-Coder-0.5B (label mode, JSON schema, no logprobs), on the seeded samples "
            "of benchmarks/real_quality.py. Greedy: one answer per row at temperature 0, so confidence is 1.0 "
            f"on every row. Sampled: `samples: {a.samples}`, `temperature: T`, `seed: 1` (sample "
            "i asks with seed 1+i); the label is the vote and the confidence the vote share. Accuracy, macro-F1, "
            "ECE (10 bins) and coverage at 90% accuracy (cov@0.9: the share of rows above the lowest confidence "
            "threshold whose rows are 90% right) from llmlabel.evaluation.metrics. by vote: accuracy of the rows "
            "whose samples all agreed and of the split ones (row counts). req/row: requests asked per "
            "row (sent + cached); sent and s/row: requests sent and wall seconds per row in the run that sent them "
            "(2 cores shared with other jobs; a rerun is served from the cache in --work).",
            "",
            "| dataset | judge | rows | accuracy | macro-F1 | mean conf | ECE | cov@0.9 | by vote | req/row | sent "
            "| s/row |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows_out,
        ]
    )
    out = ROOT / "benchmarks" / "results" / f"{a.name}.md"
    out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
