#!/usr/bin/env python3
"""Python bytecodes executed by one `llmlabel` command (every thread), counted with sys.settrace opcode events.

CPU seconds on a shared, loaded machine move by tens of percent from run to run; the bytecode count of the same
job hardly moves, so two checkouts' hot paths can be compared at a glance (results/results_model.md). It
leaves out C work (JSON, sockets, SQLite) and runs ~20x slower than the command itself.

    PYTHONPATH=<checkout> python benchmarks/bytecodes.py [--json OUT] label in.csv -c cfg.yaml -o out.jsonl -q

Per request: run a job of 10 rows and one of 1,000 (--limit) and divide the difference by 990.
"""

from __future__ import annotations

import collections
import gc
import json
import sys
import threading
from typing import Any


def main(argv: list[str]) -> int:
    out = None
    if argv[:1] == ["--json"]:
        out, argv = argv[1], argv[2:]
    from llmlabel.cli.main import GC_THRESHOLD
    from llmlabel.cli.main import main as cli

    ops: collections.Counter[Any] = collections.Counter()

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
        elif event == "opcode":
            ops[frame.f_code] += 1
        return trace

    old = gc.get_threshold()
    gc.set_threshold(max(GC_THRESHOLD, old[0]), *old[1:])  # as the console script does
    sys.argv = ["llmlabel", *argv]
    threading.settrace(trace)
    sys.settrace(trace)
    try:
        rc = cli()
    finally:
        sys.settrace(None)
        threading.settrace(None)
    total = sum(ops.values())
    if out:
        per: collections.Counter[str] = collections.Counter()
        for code, n in ops.items():
            where = code.co_filename.split("/llmlabel/")[-1].split("site-packages/")[-1]
            per[f"{where}:{code.co_name}"] += n
        with open(out, "w", encoding="utf-8") as fh:
            json.dump({"bytecodes": total, "per_function": dict(per.most_common())}, fh, indent=1)
    print(f"rc={rc} bytecodes={total}", file=sys.stderr)
    return 0 if rc is None else int(rc)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
