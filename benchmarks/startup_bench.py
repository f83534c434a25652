#!/usr/bin/env python3
"""Start-up time: `llmlabel --help`, and a 10-row `llmlabel label` job against fakellm (cold cache each time).

Median (and min/max) of --repeat runs of each, wall time from spawn to exit, plus the CPU time of the
process. Also lists the slowest imports of the label path (`python -X importtime -c "import llmlabel.pipeline.run"`),
which is where a job's start-up goes.

    python benchmarks/startup_bench.py [--repeat 5] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    FakeLLM,
    clean_env,
    fmt,
    header,
    judge,
    label,
    median,
    now,
    run_cli,
    table,
    tempdir,
    timing_options,
    wait_for_quiet,
    write_config,
    write_result,
    write_synthetic,
)


def importtime(module: str, top: int = 12) -> tuple[list[list[str]], float]:
    """The heaviest third-party packages that llmlabel modules import, from `python -X importtime`."""
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    entries = []  # (name, depth, self us, cumulative us), children listed before their parent
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cum_us, raw = line.split(":", 1)[1].split("|")
        raw = raw[1:]
        name = raw.strip()
        entries.append((name, (len(raw) - len(raw.lstrip())) // 2, int(self_us), int(cum_us)))
    parents: dict[int, str] = {}
    picked = []
    for name, depth, _, cum in reversed(entries):
        parents[depth] = name
        parent = parents.get(depth - 1, "")
        if parent.startswith("llmlabel") and not name.startswith("llmlabel"):
            picked.append((cum, name, parent))
    total = next((c for n, d, _, c in entries if n == module and d == 0), max(e[3] for e in entries))
    picked.sort(reverse=True)
    return [[n, par, f"{c / 1000:.0f}", f"{100 * c / total:.0f}%"] for c, n, par in picked[:top]], total / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=10)
    timing_options(ap, "startup.md")
    a = ap.parse_args(argv)
    if a.quick:
        a.repeat = 2
        a.out = a.out or "/tmp/startup-quick.md"
    started = now()
    results = []
    with tempdir("llmlabel-start-") as tmp:
        corpus = write_synthetic(tmp / "corpus.csv", a.rows)
        load0 = wait_for_quiet(a.load_max, max_wait=a.max_wait)
        run_cli(["--help"])  # warm the OS file cache (and .pyc files) once, untimed
        helps = []
        for _ in range(a.repeat):
            helps.append((wait_for_quiet(a.load_max, max_wait=a.max_wait), run_cli(["--help"])))
        results.append(("`llmlabel --help`", helps))
        with FakeLLM([corpus], latency=0.0) as fake:
            jobs = []
            for k in range(a.repeat + 1):
                d = tmp / f"job{k}"
                d.mkdir()
                cfg = write_config(d / "cfg.yaml", [judge("j", "judge-a", fake.base_url, 16)], d / "cache")
                load = wait_for_quiet(a.load_max, max_wait=a.max_wait)
                r = label(corpus, cfg, d / "out.jsonl")
                if k:  # the first one is an untimed warm-up
                    jobs.append((load, r))
            results.append((f"`llmlabel label` {a.rows} rows, cold cache, 0 ms server", jobs))
        load_imp = wait_for_quiet(a.load_max, max_wait=a.max_wait)
        imports, imp_total = importtime("llmlabel.pipeline.run")

    rows = []
    for what, runs in results:
        walls = [r.wall for _, r in runs]
        rows.append(
            [
                what,
                len(runs),
                fmt(median(walls), 3),
                fmt(min(walls), 3),
                fmt(max(walls), 3),
                fmt(median([r.cpu for _, r in runs]), 3),
                f"{median([r.maxrss_mb for _, r in runs]):.0f}",
                ", ".join(f"{ld:.2f}" for ld, _ in runs),
            ]
        )
    text = header(
        "Start-up time",
        f"{load0:.2f}",
        started,
        [
            "wall = process spawn to exit (os.wait4), median of the runs; one untimed warm-up run of each first",
            "the job: one judge (concurrency 16) on fakellm --latency 0, a fresh cache dir and output per run",
        ],
    )
    text += "\n" + table(
        ["command", "runs", "median s", "min s", "max s", "median CPU s", "peak RSS MiB", "load at start of each run"],
        rows,
    )
    text += (
        f'\n\n## Where a job\'s start-up goes: `python -X importtime -c "import llmlabel.pipeline.run"`\n\n'
        f"One run (load at start {load_imp:.2f}); `import llmlabel.pipeline.run` took {imp_total:.3f} s in all. "
        "The heaviest imports (cumulative, including what they import):\n\n"
        + table(["package", "first imported by", "ms (cumulative)", "share of the import"], imports)
        + "\n"
    )
    write_result("startup.md", text, Path(a.out) if a.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
