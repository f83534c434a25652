#!/usr/bin/env python3
"""Response cache: a cold run vs a warm rerun of the same job (default 5,000 rows x 3 judges).

Cold: a fresh cache directory, every answer is a request to fakellm. Warm: the same config (same cache
directory) writing a new output file, so every row is relabeled from the cache. Requests are counted on the
server (/stats) and in the run's ledger. Target: warm wall time <= 5% of cold, 0 requests.

    python benchmarks/cache_bench.py [--rows 5000] [--latency 0.1] [--concurrency 32] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    FakeLLM,
    count_lines,
    fmt,
    header,
    judge,
    label,
    now,
    table,
    tempdir,
    timing_options,
    wait_for_quiet,
    write_config,
    write_result,
    write_synthetic,
)

MODELS = [("strong", "judge-a"), ("medium", "judge-b"), ("weak", "judge-c")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--judges", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=32, help="per judge")
    ap.add_argument("--warm-runs", type=int, default=5, help="warm reruns (the median is the figure)")
    timing_options(ap, "cache.md")
    a = ap.parse_args(argv)
    if a.quick:
        a.rows, a.warm_runs = 300, 1
        a.out = a.out or "/tmp/cache-quick.md"
    started = now()
    models = MODELS[: a.judges]
    with tempdir("llmlabel-cache-") as tmp:
        corpus = write_synthetic(tmp / "corpus.csv", a.rows)
        with FakeLLM([corpus], latency=a.latency) as fake:
            cfg = write_config(
                tmp / "cfg.yaml",
                [judge(n, m, fake.base_url, a.concurrency) for n, m in models],
                tmp / "cache",
                aggregate="majority",
            )
            runs = []
            for k in range(1 + a.warm_runs):
                kind = "cold" if k == 0 else "warm"
                out = tmp / f"out{k}.jsonl"
                load = wait_for_quiet(a.load_max, max_wait=a.max_wait)
                req0 = fake.requests()
                r = label(corpus, cfg, out)
                reqs = fake.requests() - req0
                assert count_lines(out) == a.rows
                led = json.loads(out.with_name(out.name + ".ledger.json").read_text())["runs"][-1]
                hits = sum(j["cache_hits"] for j in led["judges"].values())
                runs.append(
                    dict(
                        kind=kind,
                        load=load,
                        wall=r.wall,
                        cpu=r.cpu,
                        rss=r.maxrss_mb,
                        server=reqs,
                        ledger=led["requests"],
                        hits=hits,
                    )
                )
                print(f"[bench] {runs[-1]}", file=sys.stderr, flush=True)
    cold = runs[0]
    warm = sorted(runs[1:], key=lambda r: r["wall"])[len(runs[1:]) // 2]
    ratio = 100 * warm["wall"] / cold["wall"]
    rows = [
        [
            r["kind"],
            f"{r['load']:.2f}",
            fmt(r["wall"]),
            f"{100 * r['wall'] / cold['wall']:.1f}%",
            fmt(r["cpu"]),
            f"{r['rss']:.0f}",
            f"{r['server']:,}",
            f"{r['ledger']:,}",
            f"{r['hits']:,}",
        ]
        for r in runs
    ]
    met = ratio <= 5 and all(r["server"] == 0 for r in runs[1:])
    text = header(
        "Response cache: cold run vs warm rerun",
        f"{cold['load']:.2f}",
        started,
        [
            f"job: {a.rows:,} unique rows x {len(models)} judges (label mode, TREC task, majority), concurrency "
            f"{a.concurrency} per judge, fakellm --latency {a.latency}; `llmlabel label corpus.csv -c cfg.yaml -o outK.jsonl -q`",
            "cold = fresh cache dir; warm = same config and cache, a new output file (every row relabeled from the cache)",
            "seconds = whole process, start-up included; requests counted by the server (/stats) and by the run's ledger",
        ],
    )
    text += "\n" + table(
        [
            "run",
            "load",
            "seconds",
            "% of cold",
            "CPU s",
            "peak RSS MiB",
            "server requests",
            "ledger requests",
            "cache hits",
        ],
        rows,
    )
    text += (
        f"\n\nWarm (median of {a.warm_runs}) = {ratio:.1f}% of cold, "
        f"{warm['server']} requests: target (<= 5% of cold, 0 requests) **{'met' if met else 'not met'}**.\n"
    )
    write_result("cache.md", text, Path(a.out) if a.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
