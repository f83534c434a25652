"""Retrieved few-shot demonstrations (`task.examples_file`) on a real model: the embedded Qwen 0.5B judge
(label mode, calibrated logprobs, as by default) zero-shot vs with its k nearest labeled pool rows (TF-IDF) as
demonstrations, on the same seeded samples as benchmarks/real_quality.py. Pools: TREC train for TREC test,
SST-2 test for SST-2 dev (disjoint from the scored rows). Writes benchmarks/results/fewshot_real.md.

    python benchmarks/fewshot_real.py --rows 60 --k 4 [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_quality import ROOT, TASKS, judge_config, run_task, sample, scored  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--tasks", default="trec,sst2")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--work", help="keep inputs, outputs and the answer cache here (a rerun is then free)")
    ap.add_argument("--name", default="fewshot_real", help="results file benchmarks/results/NAME.md")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ["LLMLABEL_LOCAL_MODELS"] = "qwen2.5-coder-0.5b"
    from llmlabel.local import servers

    load = os.getloadavg()[0]
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(a.work or tmp)
        d.mkdir(parents=True, exist_ok=True)
        state, procs = servers.launch(d / "run", threads=1)
        try:
            (j,) = state.judges()
            judge = judge_config(j, logprobs=True)
            for task in a.tasks.split(","):
                rows = sample(Path(a.data_dir), task, a.rows)
                labels = list(TASKS[task]["labels"])
                for k in (0, a.k):
                    extra = {"examples_file": str(Path(a.data_dir) / TASKS[task]["pool"]), "examples_k": k} if k else {}
                    sub = d / f"{task}-k{k}"
                    sub.mkdir(exist_ok=True)
                    (sub / "cache").mkdir(exist_ok=True)
                    TASKS[task]["task_extra"] = extra
                    res = run_task(task, rows, [judge], sub, "majority")
                    s = scored(res, rows, labels)[0]
                    led = res["ledger"]["judges"]["qwen"]
                    tokens = (led["input_tokens"] + led["output_tokens"]) / max(led["responses"], 1)
                    rows_out.append(
                        f"| {task} | {'zero-shot' if not k else f'{k} retrieved demonstrations'} | {len(rows)} | "
                        f"{s['acc']:.3f} | {s['f1']:.3f} | {s['ece']:.3f} | {res['wall'] / len(rows):.2f} | {tokens:.0f} |"
                    )
                    print(rows_out[-1], flush=True)
        finally:
            for p in procs:
                servers._terminate(p.pid)
    text = "\n".join(
        [
            "## Retrieved few-shot demonstrations on a real model (benchmarks/fewshot_real.py)",
            "",
            f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} shared cores (load {load:.1f} at start), llama.cpp "
            f"threads 1. Command: `python benchmarks/fewshot_real.py --rows {a.rows} --k {a.k} --tasks {a.tasks}"
            + (f" --name {a.name}" if a.name != "fewshot_real" else "")
            + "`",
            "",
            "Judge: the embedded Qwen2.5-Coder-0.5B (label mode, JSON schema, logprobs calibrated on content-free "
            "inputs). Demonstrations: the k most similar rows of a labeled pool by TF-IDF cosine (TREC train for "
            "TREC test, SST-2 test for SST-2 dev), after the shared system prompt, closest last. s/row: wall "
            "seconds per row (2 cores shared with other jobs); tokens/row: prompt + answer tokens per request.",
            "",
            "| dataset | prompt | rows | accuracy | macro-F1 | ECE | s/row | tokens/row |",
            "|---|---|---|---|---|---|---|---|",
            *rows_out,
        ]
    )
    out = ROOT / "benchmarks" / "results" / f"{a.name}.md"
    out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
