#!/usr/bin/env python3
"""CPU cost of writing the ledger as a run goes (OUTPUT.ledger.jsonl, issue 25 item 4), per paid request.

Each simulated request changes the counters a real one does (requests at the send; responses, input and output
tokens with the answer; a finished row), on a Ledger with and without its log attached. Reported: the median
over --reps repetitions of the process CPU time per request, in microseconds.

    python benchmarks/ledger_log_bench.py --requests 20000 --reps 7
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from llmlabel.llm.ledger import Ledger


def one(log: bool, n: int) -> float:
    led = Ledger()
    j = led.add_judge("a", "m", 1.0, 2.0)
    with tempfile.TemporaryDirectory() as d:
        if log:
            led.record(Path(d) / "o.jsonl.ledger.json")
        t = time.process_time()
        for _ in range(n):
            j.requests += 1
            j.responses += 1
            j.input_tokens += 100
            j.output_tokens += 5
            led.rows_done += 1
        dt = time.process_time() - t
        led.close_log()
    return dt / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    off = statistics.median(one(False, a.requests) for _ in range(a.reps))
    on = statistics.median(one(True, a.requests) for _ in range(a.reps))
    print(f"{a.requests} requests x {a.reps} reps: no log {off:.1f} us/request, log {on:.1f} us/request")


if __name__ == "__main__":
    main()
