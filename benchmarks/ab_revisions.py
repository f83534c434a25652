"""A/B: the same workloads on two git revisions of llmlabel, runs alternating, on one machine state.

A shared 2-core machine drifts by tens of percent over minutes, so figures taken at different times cannot
show a 5% change; alternating runs of both revisions in one session can. Two workloads, each a whole
`python -m llmlabel label` process against the simulated server at zero latency (client CPU is the cost):
- warm: 5,000 rows x 3 judges, every answer cached (the bulk cache pass);
- cold: 10,000 rows x 1 judge at concurrency 64, a fresh cache each run (the request path).
Reported: the median of each revision's user+sys CPU seconds and wall seconds.

    python benchmarks/ab_revisions.py 826c5b1 HEAD --reps 4
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from common import ROOT, FakeLLM, header, judge, loadavg, now, table, write_config, write_result, write_synthetic


def checkout(rev: str, into: Path) -> Path:
    """The revision's files (not the working tree), with `llmlabel.templates` resolving to its own prompts/."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    (into / "llmlabel" / "templates").symlink_to("../prompts")
    compileall.compile_dir(str(into / "llmlabel"), quiet=1)  # as pip install does; timed runs must not compile
    return into


def run(tree: Path, corpus: Path, cfg: Path, out: Path) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLMLABEL_"))}
    env["PYTHONPATH"] = str(tree)
    args = [sys.executable, "-m", "llmlabel", "label", str(corpus), "-c", str(cfg), "-o", str(out), "-q"]
    t = time.perf_counter()
    p = subprocess.Popen(args, env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{tree.name}: llmlabel failed: {p.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return wall, ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    started, load = now(), loadavg()
    with tempfile.TemporaryDirectory(prefix="ab-") as d:
        tmp = Path(d)
        trees = {name: checkout(rev, tmp / name) for name, rev in (("before", a.before), ("after", a.after))}
        warm_csv, cold_csv = write_synthetic(tmp / "warm.csv", 5000), write_synthetic(tmp / "cold.csv", 10000)
        res: dict[tuple[str, str], list[tuple[float, float]]] = {}
        with FakeLLM([warm_csv, cold_csv], latency=0.0) as fake:
            judges = [judge(n, m, fake.base_url, 32) for n, m in (("a", "judge-a"), ("b", "judge-b"), ("c", "judge-c"))]
            warm_cfg = {n: write_config(tmp / f"w-{n}.yaml", judges, tmp / f"wcache-{n}") for n in trees}
            for n, tree in trees.items():  # fill each revision's own cache (their layouts differ)
                run(tree, warm_csv, warm_cfg[n], tmp / f"{n}-fill.jsonl")
            for k in range(a.reps):
                order = list(trees.items()) if k % 2 == 0 else list(trees.items())[::-1]
                for n, tree in order:
                    res.setdefault(("warm", n), []).append(run(tree, warm_csv, warm_cfg[n], tmp / f"{n}-w{k}.jsonl"))
                for n, tree in order:
                    cfg = write_config(
                        tmp / f"c-{n}{k}.yaml", [judge("a", "judge-a", fake.base_url, 64)], tmp / f"cc-{n}{k}"
                    )
                    res.setdefault(("cold", n), []).append(run(tree, cold_csv, cfg, tmp / f"{n}-c{k}.jsonl"))
    rows = []
    for work in ("warm", "cold"):
        cpu = {n: statistics.median(c for _, c in res[(work, n)]) for n in trees}
        wall = {n: statistics.median(w for w, _ in res[(work, n)]) for n in trees}
        rows.append(
            [
                work,
                f"{cpu['before']:.3f}",
                f"{cpu['after']:.3f}",
                f"{100 * (cpu['after'] / cpu['before'] - 1):+.1f}%",
                f"{wall['before']:.2f}",
                f"{wall['after']:.2f}",
            ]
        )
    notes = [f"before = {a.before}, after = {a.after}; {a.reps} alternating runs of each, medians"]
    text = header("A/B of two revisions: warm rerun and cold request path", load, started, notes)
    text += table(["workload", "CPU s before", "CPU s after", "CPU change", "wall s before", "wall s after"], rows)
    write_result("ab_revisions.md", text, a.out)


if __name__ == "__main__":
    main()
