"""Wall time of `label --batch` (run_batch) on 2,000 rows against the in-test Files/Batches fake (tests/fakebatch.py),
end to end, and of its last phase: writing the rows once every answer is in the cache (before issue 24: a second,
cache-only local run, `run_job`; after: the batch executor's own `write`, and `Run.finish`). One label task with 1 and 3 judges, and a
two-level taxonomy (two batch rounds). Each case runs REPS times on a fresh cache; the median and the minimum are
printed. Run from the repository root: `PYTHONPATH=$PWD python benchmarks/batch_direct.py [REPS]`."""

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = ["tests"]
import json  # noqa: E402

from conftest import write_config  # noqa: E402
from fakebatch import FakeBatch  # noqa: E402

from llmlabel.config import load_config  # noqa: E402
from llmlabel.pipeline import batch, lifecycle  # noqa: E402
from llmlabel.pipeline.batch import BatchOptions, run_batch  # noqa: E402
from llmlabel.pipeline.options import RunOptions  # noqa: E402

N = 2000
_ap = argparse.ArgumentParser(description="wall time of `label --batch` on 2,000 rows against tests/fakebatch.py")
_ap.add_argument("reps", type=int, nargs="?", default=3, help="runs of each case (default 3)")
REPS = _ap.parse_args().reps
TREE = {"animals": ["dog", "cat", "bird"], "vehicles": ["car", "bike"], "misc": ["other"]}
written: list[float] = []  # the last phase's duration, per run
phase = [0.0, 0.0]  # this run's so far: wall, CPU of the main thread (the fake server's threads apart)
cpu_written: list[float] = []


def _timed(fn):
    def wrapper(*a, **kw):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            phase[0] += time.perf_counter() - t
            phase[1] += time.thread_time() - c

    return wrapper


def _timed_async(fn):
    async def wrapper(*a, **kw):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return await fn(*a, **kw)
        finally:
            phase[0] += time.perf_counter() - t
            phase[1] += time.thread_time() - c

    return wrapper


if hasattr(batch, "run_job"):  # before: the output written by a second run (its checks, Run, rows and finish)
    batch.run_job = _timed(batch.run_job)
else:  # after: by the batch executor itself, then the run's finish
    batch.BatchExecutor.write = _timed_async(batch.BatchExecutor.write)
    lifecycle.Run.finish = _timed(lifecycle.Run.finish)


def case(name: str, judges: int, taxonomy: bool) -> None:
    walls, cpus = [], []
    del written[:], cpu_written[:]
    for _ in range(REPS):
        fbs = [FakeBatch().start() for _ in range(judges)]
        d = Path(tempfile.mkdtemp())
        with open(d / "in.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["id", "text"])
            w.writeheader()
            w.writerows({"id": f"r{i}", "text": f"text {i} is {'good' if i % 3 else 'bad'}"} for i in range(N))
        js = [
            {"name": f"j{k}", "model": f"m{k}", "base_url": fb.base_url, "concurrency": 8, "timeout": 5}
            for k, fb in enumerate(fbs)
        ]
        extra = {"task": {"name": "things", "taxonomy": TREE}} if taxonomy else {}
        cfg = load_config(write_config(d / "c.yaml", None, judges=js, **extra))
        phase[:] = [0.0, 0.0]
        t, c = time.perf_counter(), time.process_time()
        res = run_batch(cfg, d / "in.csv", d / "out.jsonl", RunOptions(progress=False), BatchOptions(poll=0.01))
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        written.append(phase[0])
        cpu_written.append(phase[1])
        rows = [json.loads(x) for x in open(d / "out.jsonl")]
        assert res.run is not None and res.run.complete and len(rows) == N
        assert sum(fb.online for fb in fbs) == 0, "asked online"
        for fb in fbs:
            fb.stop()
    print(
        f"{name}: {N} rows, {res.submitted} batches/run, {res.collected} answers/run, {REPS} runs: "
        f"wall median {statistics.median(walls):.2f}s (min {min(walls):.2f}s), "
        f"CPU median {statistics.median(cpus):.2f}s; writing the rows: median {statistics.median(written):.3f}s "
        f"(min {min(written):.3f}s), its CPU median {statistics.median(cpu_written):.3f}s"
    )


case("label, 1 judge", 1, False)
case("label, 3 judges", 3, False)
case("taxonomy (2 levels), 1 judge", 1, True)
