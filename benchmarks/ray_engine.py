"""The local engine vs `--engine ray` (1 and 2 actors) vs 2 shards as processes (+ `llmlabel merge`), on
20,000 synthetic TREC-like rows against the lean simulated server (benchmarks/lean_server.py) at 0 ms and
100 ms latency; one judge, concurrency 64, a fresh cache each run (every row is a paid request).

Reported per run: wall seconds from spawn to exit (Ray's local cluster start-up included), rows/s, the
client's CPU seconds and CPU per request, server requests, and whether the output equals the local
engine's byte for byte. Client CPU: the llmlabel processes and every process they start (Ray's GCS, raylet,
workers), read from /proc every 0.2 s (a process's last 0.2 s before it exits can be missed).

    python benchmarks/ray_engine.py --rows 20000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
from pathlib import Path

from common import (
    LLMLABEL,
    LeanServer,
    byte_compile,
    clean_env,
    header,
    judge,
    loadavg,
    now,
    table,
    write_config,
    write_result,
    write_synthetic,
)

TICK = os.sysconf("SC_CLK_TCK")


def _procs() -> dict[int, tuple[int, float, float]]:
    """pid -> (ppid, own CPU seconds, start time in ticks) of every live process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(d)] = (int(f[1]), (int(f[11]) + int(f[12])) / TICK, float(f[19]))
    return out


class TreeCPU:
    """CPU seconds of some root processes and all their descendants, sampled while they run."""

    def __init__(self, roots: list[int]) -> None:
        self.roots, self.seen = set(roots), {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.2):
            procs = _procs()
            tree, grew = set(self.roots), True
            while grew:
                grew = False
                for pid, (ppid, _, _) in procs.items():
                    if ppid in tree and pid not in tree:
                        tree.add(pid)
                        grew = True
            for pid in tree:
                if pid in procs:
                    key = (pid, procs[pid][2])  # a recycled pid is another process
                    self.seen[key] = max(self.seen.get(key, 0.0), procs[pid][1])

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return sum(self.seen.values())


def timed(cmds: list[list[str]]) -> tuple[float, float, list[str]]:
    """Run commands at once; (wall seconds, client CPU seconds, stderr of each)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    cpu = TreeCPU([p.pid for p in procs])
    errs = [p.communicate()[1].decode() for p in procs]
    wall = time.perf_counter() - t0
    used = cpu.stop()
    for c, p, e in zip(cmds, procs, errs):
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(c)} exited {p.returncode}: {e[-2000:]}")
    return wall, used, errs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--latencies", type=float, nargs="+", default=[0.0, 0.1])
    ap.add_argument("--work", default="/tmp/ray-bench")
    ap.add_argument("--engines", nargs="*", default=[], help="only these rows of the table (by name)")
    a = ap.parse_args()
    byte_compile()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = write_synthetic(work / "in.csv", a.rows)
    started, load0 = now(), loadavg()
    lines = []
    for latency in a.latencies:
        rows = []
        with LeanServer(latency=latency) as srv:
            reference = None
            for name, extra in [
                x
                for x in (
                    ("local engine", None),
                    ("ray, 1 actor", ["--engine", "ray", "--actors", "1"]),
                    ("ray, 2 actors", ["--engine", "ray", "--actors", "2"]),
                    ("ray, 2 actors, start-up and 100 rows", ["--engine", "ray", "--actors", "2", "--limit", "100"]),
                    ("2 shards as processes + merge", "shards"),
                )
                if x[0] in a.engines or not a.engines
            ]:
                run = work / f"{name.replace(' ', '').replace(',', '_')}-{latency}"
                run.mkdir(exist_ok=True)
                # Every engine gets one job-wide concurrency of 64: Ray splits it among its actors, and each of
                # the 2 shard processes is given 32.
                conc = 32 if extra == "shards" else 64
                cfg = write_config(run / "c.yaml", [judge("a", "m", srv.base_url, conc)], run / "cache")
                out = run / "out.jsonl"
                before = srv.requests()
                base = [LLMLABEL, "label", str(corpus), "-c", str(cfg), "-q", "--restart"]
                if extra == "shards":
                    shards = [[*base, "-o", str(run / f"out.{i}.jsonl"), "--shard", f"{i}/2"] for i in range(2)]
                    wall, cpu, _ = timed(shards)
                    w2, c2, _ = timed(
                        [[LLMLABEL, "merge", str(run / "out.0.jsonl"), str(run / "out.1.jsonl"), "-o", str(out)]]
                    )
                    wall, cpu = wall + w2, cpu + c2
                else:
                    wall, cpu, _ = timed([[*base, "-o", str(out), *(extra or [])]])
                paid = srv.requests() - before
                data = out.read_bytes()
                reference = reference or data
                same = "yes" if data == reference else ("(100 rows)" if "100 rows" in name else "NO")
                rows.append(
                    [
                        name,
                        f"{wall:.1f}",
                        f"{(100 if '100 rows' in name else a.rows) / wall:,.0f}",
                        f"{cpu:.1f}",
                        f"{1000 * cpu / max(paid, 1):.2f}",
                        f"{paid:,}",
                        same,
                    ]
                )
                print(rows[-1], flush=True)
        lines.append(f"\n### Server latency {int(latency * 1000)} ms\n")
        lines.append(
            table(
                [
                    "engine",
                    "wall s",
                    "rows/s",
                    "client CPU s",
                    "CPU ms / request",
                    "server requests",
                    "output = local engine's",
                ],
                rows,
            )
        )
    text = header(
        f"Ray engine vs local engine vs shards ({a.rows:,} rows, one judge, concurrency 64)",
        load0,
        started,
        [
            "server: benchmarks/lean_server.py (a few tens of us of CPU a request), a fresh cache per run",
            "wall and rows/s include each process's start-up: a local Ray cluster start for --engine ray",
            "client CPU: the llmlabel processes and all their descendants (Ray's GCS, raylet, actors), sampled from /proc",
        ],
    )
    write_result("ray_engine.md", text + "\n".join(lines))


if __name__ == "__main__":
    main()
