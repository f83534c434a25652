"""`llmlabel label --batch` options, and `llmlabel batch status|cancel OUTPUT` for a job's batches."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_label_options(s: Any) -> None:
    s.add_argument(
        "--batch",
        action="store_true",
        help="buy the missing answers through the Batch API (about half price, up to 24 h), then write the output",
    )
    s.add_argument("--no-wait", action="store_true", help="with --batch: submit and exit; rerun later to collect")
    s.add_argument(
        "--batch-fallback",
        choices=["batch", "online"],
        default="batch",
        help="with --batch: lines a batch did not answer go into a new, smaller batch (default) or online",
    )
    s.add_argument(
        "--batch-max-requests",
        type=int,
        help="with --batch: requests per batch file (default: the judge's batch_max_requests, 50000)",
    )


def label_batch(a: argparse.Namespace, cfg: Any, opts: Any) -> Any:
    """The --batch run: its RunResult, or None when batches are still running (--no-wait)."""
    from llmlabel.pipeline.batch import BatchOptions, run_batch

    bopts = BatchOptions(wait=not a.no_wait, fallback=a.batch_fallback, max_lines=a.batch_max_requests)
    res = run_batch(cfg, a.input, a.output, opts, bopts)
    print(
        f"llmlabel: batch: {res.submitted} submitted, {res.attached} re-attached, {res.collected:,} answers "
        f"collected, {res.failed:,} failed lines, {res.invalid:,} invalid answers",
        file=sys.stderr,
    )
    return res.run


def cmd_batch(a: argparse.Namespace) -> int:
    """Reads the journal and never writes it: the `label --batch` run owns it (a status written here without
    the batch's files made the next run count the batch as collected with no answers and buy it again; a
    journal saved from a stale copy could drop a batch that run had just recorded)."""
    from llmlabel.llm.batch_api import TERMINAL
    from llmlabel.pipeline.batch_journal import api_for, journal_path, load_journal, request_counts

    journal = load_journal(a.output)
    if not journal["batches"]:
        print(f"no batches recorded for {a.output} ({journal_path(a.output).name} is missing or empty)")
        return 0
    for e in journal["batches"]:
        if not e.get("batch_id"):
            print(f"{e['judge']}: (being created; a rerun of the label command finds it)")
            continue
        api = api_for(e)
        try:
            b = api.get(e["batch_id"])  # its live status: the journal's may be older (this command leaves it)
            if a.action == "cancel" and b.get("status") not in TERMINAL:
                b = api.cancel(e["batch_id"])
        finally:
            api.close()
        c = request_counts(b)
        done = "collected" if e.get("collected") else "not collected"
        print(
            f"{e['judge']}: {e['batch_id']} {b.get('status')}, {c.get('completed', 0)}/{c.get('total', 0)} lines "
            f"done, {c.get('failed', 0)} failed ({done})"
        )
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("batch", help="show or cancel the Batch API batches of a `label --batch` output")
    s.add_argument("action", choices=["status", "cancel"])
    s.add_argument("output", help="the output path given to `llmlabel label --batch`")
    s.set_defaults(func=cmd_batch)
