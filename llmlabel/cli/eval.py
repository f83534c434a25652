"""`llmlabel eval OUTPUT --gold FILE`: score a labeled output against gold labels."""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_eval(a: argparse.Namespace) -> int:
    from llmlabel.evaluation.evaluate import eval_path, evaluate, format_report
    from llmlabel.io.guard import check_output, inputs
    from llmlabel.io.paths import ledger_path

    dest = a.report or eval_path(a.output)
    reads = inputs(a.output, what="the labeled output") + inputs(a.gold, what="the --gold file")
    check_output(dest, reads + inputs(ledger_path(a.output), what="the output's ledger"), table=False, sidecars=False)
    rep = evaluate(a.output, a.gold, label_column=a.label_column, id_column=a.id_column)
    from llmlabel.io.files import atomic_write

    atomic_write(dest, json.dumps(rep, indent=2, ensure_ascii=False))
    print(format_report(rep))
    print(f"report saved to {dest}")
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser(
        "eval",
        help="score a labeled output against gold labels (accuracy, judges, agreement, "
        "candidate sets, calibration, cost per correct label)",
    )
    s.add_argument("output", help="a file written by `llmlabel label` (its ledger beside it gives the cost)")
    s.add_argument("--gold", required=True, help="CSV/JSONL/Parquet file with id and gold label columns")
    s.add_argument("--label-column", default="label", help="gold label column (default: label)")
    s.add_argument("--id-column", default="id", help="gold id column, matched to the output's id (default: id)")
    s.add_argument("-o", "--report", help="JSON report path (default: OUTPUT.eval.json)")
    s.set_defaults(func=cmd_eval)
