"""`llmlabel merge OUT.0 OUT.1 ... -o OUT`: join the outputs of a job's shards (`label --shard I/N`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_merge(a: argparse.Namespace) -> int:
    from llmlabel.pipeline.merge import merge_shards

    res = merge_shards(a.shards, a.output)
    print(res.ledger.table(), file=sys.stderr)
    if res.failed:
        print(
            f"llmlabel: warning: {res.failed} rows have errors (see their error field); rerun their shards with "
            "--retry-errors, then merge again",
            file=sys.stderr,
        )
    print(f"wrote {res.rows} rows to {res.output}", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser(
        "merge",
        help="join the outputs of `label --shard I/N` runs into one output, re-aggregated over all rows",
    )
    s.add_argument(
        "shards", nargs="+", help="the shards' outputs (-o of each shard run), or a glob such as 'out.*.jsonl'"
    )
    s.add_argument("-o", "--output", required=True, help="the merged output: .jsonl, .csv or .parquet")
    s.set_defaults(func=cmd_merge)
