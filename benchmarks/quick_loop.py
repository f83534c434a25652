"""How long the quick loop (`pytest -m "not slow"`) would take on a quiet machine, measured on a busy one.

    nice -n 10 python benchmarks/quick_loop.py [--top N] [--tsv FILE] [-- PYTEST_ARGS]

runs pytest in this process (default args: `-q -m "not slow" -p no:cacheprovider`) and reports, for the session
and for each test (setup + call + teardown): the wall time, the CPU time (this process's threads and its reaped
child processes), and the time its tasks sat runnable waiting for a CPU (the kernel's schedstat `run_delay`): the
main thread's, each Python thread's (read as it ends) and each child process's (read as it is reaped). The quiet
estimate is wall minus those waits, never less than the CPU time: what is left is work and genuine waits (sleeps,
timeouts, polls), which a quiet machine does not shorten. Waits of threads that overlap are subtracted once each,
so a test with many busy threads is estimated low, down to its CPU time. Tests estimated over 1 s are listed:
tests/conftest.py says they get `@pytest.mark.slow`. Linux only (/proc)."""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def _run_delay(path: str = "/proc/thread-self/schedstat") -> float:
    try:
        with open(path) as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@dataclass
class Sample:
    wall: float
    cpu: float
    rq_main: float
    rq_threads: float
    rq_children: float

    def __sub__(self, o: Sample) -> Sample:
        return Sample(*(a - b for a, b in zip(vars(self).values(), vars(o).values())))

    @property
    def quiet(self) -> float:
        return max(self.cpu, self.wall - self.rq_main - self.rq_threads - self.rq_children)


class QuietTimer:
    """The pytest plugin. It wraps threading.Thread.run and os.waitpid to read the run-queue waits of threads and
    children before they are gone, so it is meant for a process of its own (this script's)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rq_threads = self.rq_children = 0.0
        self.reaped: set[int] = set()
        self.rows: list[tuple[str, Sample]] = []
        run, waitpid = threading.Thread.run, os.waitpid

        def thread_run(thread: threading.Thread) -> None:
            try:
                run(thread)
            finally:
                d = _run_delay()
                with self.lock:
                    self.rq_threads += d

        def wait(pid: int, options: int) -> tuple[int, int]:
            self._child_ended(pid, options)
            return waitpid(pid, options)

        threading.Thread.run = thread_run  # type: ignore[method-assign,assignment]
        os.waitpid = wait

    def _child_ended(self, pid: int, options: int) -> None:
        if pid <= 0 or pid in self.reaped:
            return
        flags = os.WEXITED | os.WNOWAIT | (os.WNOHANG if options & os.WNOHANG else 0)
        try:
            if os.waitid(os.P_PID, pid, flags) is None:
                return
        except OSError:
            return
        d = _run_delay(f"/proc/{pid}/schedstat")  # an exited child keeps its counters until it is reaped
        with self.lock:
            self.reaped.add(pid)
            self.rq_children += d

    def sample(self) -> Sample:
        return Sample(time.perf_counter(), _cpu(), _run_delay(), self.rq_threads, self.rq_children)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Any) -> Any:
        before = self.sample()
        yield
        self.rows.append((item.nodeid, self.sample() - before))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=25, help="list this many tests, slowest first (quiet estimate)")
    ap.add_argument("--tsv", type=Path, help="write every test's figures here")
    ap.add_argument("pytest_args", nargs="*", default=["-q", "-m", "not slow", "-p", "no:cacheprovider"])
    args = ap.parse_args()
    load0 = os.getloadavg()
    timer = QuietTimer()
    start = timer.sample()
    rc = pytest.main(args.pytest_args, plugins=[timer])
    total = timer.sample() - start
    tests = Sample(*(sum(getattr(s, k) for _, s in timer.rows) for k in vars(total)))
    load1 = os.getloadavg()
    print(
        f"\nload average (1/5/15 min) before {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, after "
        f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}"
    )
    outside = total - tests  # start-up, collection, session fixtures' teardown
    quiet = outside.quiet + sum(s.quiet for _, s in timer.rows)
    for name, s in (("session", total), ("outside tests", outside), (f"{len(timer.rows)} tests", tests)):
        print(
            f"{name}: wall {s.wall:.1f} s, CPU {s.cpu:.1f} s, waiting for a CPU: main thread {s.rq_main:.1f} s, "
            f"threads {s.rq_threads:.1f} s, children {s.rq_children:.1f} s"
        )
    print(f"quiet estimate: {quiet:.1f} s (outside tests {outside.quiet:.1f} s + tests {quiet - outside.quiet:.1f} s)")
    rows = sorted(timer.rows, key=lambda r: -r[1].quiet)
    print(f"\nslowest {args.top} (quiet estimate, CPU, wall):")
    for nodeid, s in rows[: args.top]:
        print(f"{s.quiet:6.2f} {s.cpu:6.2f} {s.wall:6.2f}  {nodeid}")
    over = [n for n, s in rows if s.quiet > 1.0]
    print(f"\n{len(over)} test(s) estimated over 1 s" + "".join(f"\n  {n}" for n in over))
    if args.tsv:
        with open(args.tsv, "w") as fh:
            fh.write("nodeid\t" + "\t".join(vars(total)) + "\tquiet\n")
            for nodeid, s in timer.rows:
                fh.write(nodeid + "".join(f"\t{v:.3f}" for v in vars(s).values()) + f"\t{s.quiet:.3f}\n")
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
