#!/usr/bin/env python3
"""The cost of checking every value's type (issue 25, items 6-7): warm reruns of the same job, this tree
against a baseline tree (default /work/main), interleaved, in CPU seconds of the whole `llmlabel` process.

A warm rerun relabels every row from the cache, so it is all row handling: reading, RowLabeler.start (column
names, blank-text check), serialising the part-file lines (io.values.dumps), the final write. Also a
typed Parquet input (timestamps, decimals, lists, ...) to a Parquet output, which the baseline cannot do.

    python benchmarks/values_overhead.py [--rows 20000] [--repeats 5] [--baseline /work/main]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakeserver import FakeLLM  # noqa: E402


def cpu_run(code: Path, args: list[str]) -> float:
    """CPU seconds (user + sys) of one `llmlabel` process run from the tree `code`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": str(code)}
    r = subprocess.run([sys.executable, "-m", "llmlabel", *args], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{code}: {r.stderr.strip().splitlines()[-1]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline", type=Path, default=Path("/work/main"))
    a = ap.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    d = Path(tempfile.mkdtemp(prefix="values-bench-"))
    with open(d / "in.jsonl", "w") as fh:
        for i in range(a.rows):
            text = f"review {i} says the thing is {'good' if i % 3 else 'bad'} #{i * 7919 % 1000}"
            fh.write(json.dumps({"id": f"r{i}", "text": text, "meta": i % 10}) + "\n")
    n = a.rows
    pq.write_table(
        pa.table(
            {
                "id": pa.array(range(n), pa.int64()),
                "text": [f"typed row {i} is {'good' if i % 3 else 'bad'} #{i * 7919 % 1000}" for i in range(n)],
                "ts": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5)] * n, pa.timestamp("us")),
                "price": pa.array([Decimal("1.10")] * n, pa.decimal128(10, 2)),
                "tags": pa.array([[1, 2]] * n, pa.list_(pa.int64())),
            }
        ),
        d / "typed.parquet",
    )
    fake = FakeLLM().start()
    judges = [{"name": x, "model": f"m{x}", "base_url": fake.base_url, "concurrency": 32} for x in "abc"]
    cfg = {"task": {"name": "s", "instructions": "Sentiment?", "labels": ["positive", "negative"]}}
    (d / "c.yaml").write_text(yaml.safe_dump({**cfg, "cache_dir": str(d / "cache"), "judges": judges}))

    def args(inp: str, out: str) -> list[str]:
        return ["label", str(d / inp), "-c", str(d / "c.yaml"), "-o", str(d / out), "-q", "--restart"]

    cold = {"jsonl": cpu_run(ROOT, args("in.jsonl", "cold.jsonl"))}
    cold["typed"] = cpu_run(ROOT, args("typed.parquet", "cold.parquet"))
    paid = fake.requests
    warm: dict[str, list[float]] = {"baseline jsonl": [], "this tree jsonl": [], "this tree typed parquet": []}
    for _ in range(a.repeats):
        warm["baseline jsonl"].append(cpu_run(a.baseline, args("in.jsonl", "w0.jsonl")))
        warm["this tree jsonl"].append(cpu_run(ROOT, args("in.jsonl", "w1.jsonl")))
        warm["this tree typed parquet"].append(cpu_run(ROOT, args("typed.parquet", "w2.parquet")))
    print(f"rows {n} x 3 judges; requests: cold {paid}, warm reruns {fake.requests - paid}")
    print(f"cold CPU s: jsonl {cold['jsonl']:.2f}, typed parquet {cold['typed']:.2f}")
    print(f"load average {os.getloadavg()[0]:.1f}, {platform.machine()}, {os.cpu_count()} CPUs")
    for k, ts in warm.items():
        print(f"warm {k}: median CPU {statistics.median(ts):.2f} s  ({' '.join(f'{t:.2f}' for t in ts)})")
    t = pq.read_table(d / "w2.parquet")
    print("typed output types:", {c: str(t.schema.field(c).type) for c in ("id", "ts", "price", "tags")})
    fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
