#!/usr/bin/env python3
"""CPU cost of the typed row results (llmlabel.results, io/records.py) against the code before them.

Every row of a job now becomes a `RowResult` and is serialised through io.records, and the whole-job refit
reads results and returns new ones (a weighted or Dawid-Skene job reads every row back as a result and
writes it again). This runs the same `llmlabel label` jobs with two checkouts of llmlabel, alternating, on
the same machine and server:

- cold: 3 judges, every answer asked of fakellm (zero latency), a fresh cache each run (the per-row path);
- warm majority: the same job from a full cache (the bulk cache pass; no row changes at the end);
- warm weighted: from the cache with aggregate: weighted (the refit rewrites every row).

Figures are the llmlabel process's own user+sys CPU seconds (os.wait4), median of --repeats runs.

    python benchmarks/results_model_bench.py --base /tmp/base     # /tmp/base: `git archive <commit> | tar -x`
"""

from __future__ import annotations

import argparse
import compileall
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ROOT,
    FakeLLM,
    fmt,
    header,
    judge,
    label,
    median,
    now,
    table,
    tempdir,
    wait_for_quiet,
    write_config,
    write_result,
    write_synthetic,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="a checkout of llmlabel to compare with (its root folder)")
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--cold-rows", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-wait", type=float, default=300, help="seconds to wait for a quiet machine first")
    ap.add_argument("--out", help="results file (default benchmarks/results/results_model.md)")
    args = ap.parse_args(argv)
    codes = {"before": str(Path(args.base).resolve()), "typed results": str(ROOT)}
    for c in codes.values():
        compileall.compile_dir(str(Path(c) / "llmlabel"), quiet=1)
    started = now()
    load = wait_for_quiet(max_wait=args.max_wait)
    cpu: dict[tuple[str, str], list[float]] = {}
    with tempdir("results-model") as tmp:
        data = write_synthetic(tmp / "in.csv", args.rows)
        cold = write_synthetic(tmp / "cold.csv", args.cold_rows, prefix="c")
        server = FakeLLM([data, cold])
        server.start()
        try:
            js = [judge(n, f"model-{n}", server.base_url, 32) for n in ("a", "b", "c")]
            warm_cache = tmp / "cache"
            cfg = {
                agg: write_config(tmp / f"{agg}.yaml", js, warm_cache, aggregate=agg)
                for agg in ("majority", "weighted")
            }
            os.environ["PYTHONPATH"] = codes["typed results"]
            label(data, cfg["majority"], tmp / "fill.jsonl")  # fills the cache both checkouts read
            for rep in range(args.repeats):
                for name, code in codes.items():
                    os.environ["PYTHONPATH"] = code
                    tag = f"{rep}-{name[0]}"
                    ccfg = write_config(tmp / f"cold-{tag}.yaml", js, tmp / f"cold-cache-{tag}")
                    runs = {
                        "cold": label(cold, ccfg, tmp / f"cold-{tag}.jsonl"),
                        "warm majority": label(data, cfg["majority"], tmp / f"m-{tag}.jsonl"),
                        "warm weighted": label(data, cfg["weighted"], tmp / f"w-{tag}.jsonl"),
                    }
                    for kind, run in runs.items():
                        cpu.setdefault((kind, name), []).append(run.cpu)
        finally:
            server.stop()
    rows = []
    for kind in ("cold", "warm majority", "warm weighted"):
        before, after = median(cpu[(kind, "before")]), median(cpu[(kind, "typed results")])
        n = args.cold_rows if kind == "cold" else args.rows
        rows.append([kind, n, fmt(before), fmt(after), f"{(after / before - 1) * 100:+.1f}%"])
    text = header(
        "Typed row results: CPU before and after",
        load,
        started,
        [
            f"{args.repeats} runs of each job with each checkout, alternating; median CPU seconds of the llmlabel process"
        ],
    )
    text += "\n" + table(["job", "rows", "before (s)", "typed results (s)", "change"], rows)
    write_result("results_model.md", text, Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
