#!/usr/bin/env python3
"""Peak RSS of `llmlabel label` on generated corpora of growing size (default 10k, 100k, 1,000,000 rows).

Each corpus is written as a stream (unique texts "q0000123 " + a TREC question) and is also fakellm's --data
file, so every lookup is a dict hit. fakellm --latency 0, one judge, concurrency 64, JSONL output, fresh cache.
Peak RSS is ru_maxrss of the llmlabel process (os.wait4); VmRSS is also polled from /proc every second to
show where in the run the peak falls. Target: <= 300 MB, flat in corpus size.

The results file is rewritten after every size, so sizes that did not finish are marked as such, never
extrapolated.

    python benchmarks/memory_bench.py [--sizes 10000,100000,1000000] [--quick]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CHILDREN,
    FakeLLM,
    count_lines,
    fmt,
    header,
    judge,
    label,
    loadavg,
    now,
    table,
    tempdir,
    write_config,
    write_result,
    write_synthetic,
)

TARGET_MB = 300


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", help="work directory to keep (default: a temp dir, removed)")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if a.quick:
        a.sizes = "1000,5000"
        a.out = a.out or "/tmp/memory-quick.md"
    sizes = [int(s) for s in a.sizes.split(",") if s]
    started = now()
    load0 = loadavg()
    done: list[dict] = []
    stopped: list[str] = []
    current: list[int | None] = [None]

    def on_term(signum, frame):  # a stopped run still leaves an honest file: measured sizes, the rest marked
        stopped.append(f"signal {signal.Signals(signum).name} after {time.time() - t_size[0]:.0f} s")
        report(current[0])
        for child in list(CHILDREN):
            child.kill()
        raise SystemExit(143)

    t_size = [time.time()]
    signal.signal(signal.SIGTERM, on_term)

    def report(running: int | None) -> None:
        rows = []
        for r in done:
            rows.append(
                [
                    f"{r['rows']:,}",
                    f"{r['load']:.2f}",
                    fmt(r["wall"], 1),
                    fmt(r["rps"], 0),
                    fmt(r["cpu"], 1),
                    f"{r['rss']:.1f}",
                    f"{r['sampled']:.1f}",
                    f"{r.get('anon', float('nan')):.1f} / {r.get('file', float('nan')):.1f}",
                    f"{r['peak_at']:.0%}",
                    f"{r['rss_mid']:.1f}",
                    "met" if r["rss"] * 1.048576 <= TARGET_MB else "**not met**",
                ]
            )
        for s in sizes[len(done) :]:
            what = (
                ("did not finish (stopped: " + stopped[0] + ")" if stopped else "running when this file was written")
                if s == running
                else "not run"
            )
            rows.append([f"{s:,}", "", what, "", "", "", "", "", "", "", ""])
        flat = ""
        if len(done) >= 2:
            lo, hi = done[0], done[-1]
            flat = (
                f"\nFrom {lo['rows']:,} to {hi['rows']:,} rows ({hi['rows'] / lo['rows']:.0f}x) peak RSS went "
                f"{lo['rss']:.1f} -> {hi['rss']:.1f} MiB ({hi['rss'] / lo['rss']:.2f}x).\n"
            )
        text = header(
            "Memory: peak RSS vs corpus size",
            f"{load0:.2f}",
            started,
            [
                f"`llmlabel label corpus.csv -c cfg.yaml -o out.jsonl -q`, one judge, concurrency {a.concurrency}, "
                "fakellm --latency 0 with the corpus as its --data, fresh cache dir per size",
                f"target: peak RSS <= {TARGET_MB} MB ({TARGET_MB / 1.048576:.0f} MiB), flat in corpus size",
                "peak RSS = ru_maxrss of the llmlabel process; 'sampled' = max of 1 s /proc VmRSS polls; "
                "'peak at' = when the sampled peak happened, as a fraction of the run's wall time; "
                "'RSS at 50%' = the sample nearest the middle of the run; "
                "anon / file = RssAnon / RssFile of the peak sample (heap vs mapped files such as the cache's SQLite mmap)",
            ],
        )
        text += (
            "\n"
            + table(
                [
                    "rows",
                    "load",
                    "seconds",
                    "rows/s",
                    "CPU s",
                    "peak RSS MiB",
                    "sampled max MiB",
                    "anon / file MiB at peak",
                    "peak at",
                    "RSS at 50% MiB",
                    f"<= {TARGET_MB} MB",
                ],
                rows,
            )
            + "\n"
            + flat
        )
        write_result("memory.md", text, Path(a.out) if a.out else None)

    with tempdir("llmlabel-mem-", a.keep) as tmp:
        for n in sizes:
            current[0], t_size[0] = n, time.time()
            report(n)
            d = tmp / f"n{n}"
            d.mkdir(exist_ok=True)
            corpus = write_synthetic(d / "corpus.csv", n)
            with FakeLLM([corpus], latency=0.0) as fake:
                cfg = write_config(d / "cfg.yaml", [judge("j", "judge-a", fake.base_url, a.concurrency)], d / "cache")
                load = loadavg()
                t = time.time()
                r = label(corpus, cfg, d / "out.jsonl", sample_every=1.0)
                assert count_lines(d / "out.jsonl") == n
            s = r.samples or [(0.0, r.maxrss_mb, float("nan"), float("nan"))]
            peak_t, peak, peak_anon, peak_file = max(s, key=lambda x: x[1])
            mid = min(s, key=lambda x: abs(x[0] - r.wall / 2))[1]
            done.append(
                dict(
                    rows=n,
                    load=load,
                    wall=r.wall,
                    rps=n / r.wall,
                    cpu=r.cpu,
                    rss=r.maxrss_mb,
                    sampled=peak,
                    peak_at=peak_t / r.wall,
                    rss_mid=mid,
                    anon=peak_anon,
                    file=peak_file,
                )
            )
            print(f"[bench] {done[-1]} ({time.time() - t:.0f} s)", file=sys.stderr, flush=True)
            for f in d.iterdir():  # free the disk before the next size
                if f.is_dir():
                    import shutil

                    shutil.rmtree(f, ignore_errors=True)
                else:
                    f.unlink()
    report(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
