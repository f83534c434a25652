"""The `llmlabel` command. Imports stay inside the commands so that `--help` starts fast."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from llmlabel.errors import ConfigError, LLMLabelError


def _load(path: str):
    from llmlabel.config import load_config

    return load_config(path)


def _print_ledger(ledger: Any) -> None:
    print(ledger.table(), file=sys.stderr)


_TEARDOWN_FREE = False  # set once a command has closed everything it opened


def cmd_label(a: argparse.Namespace) -> int:
    global _TEARDOWN_FREE
    from llmlabel.pipeline.options import RunOptions
    from llmlabel.pipeline.run import run_job

    _TEARDOWN_FREE = True  # run_job closes its files, cache and connections on every path out
    shard = None
    if a.shard:
        from llmlabel.io.shard_spec import Shard

        shard = Shard.parse(a.shard)
    cfg = _load(a.config)
    opts = RunOptions(
        limit=a.limit,
        max_cost=a.max_cost,
        max_requests=a.max_requests,
        progress=not a.quiet,
        restart=a.restart,
        retry_errors=a.retry_errors,
        shard=shard,
    )
    try:
        if a.batch:
            if a.engine != "local":
                raise ConfigError("--batch sends the job to the provider's Batch API: drop --engine ray")
            if shard is not None:
                raise ConfigError("--batch does not take --shard yet: run each shard online, or the whole job in batch")
            from llmlabel.cli.batch import label_batch

            res = label_batch(a, cfg, opts)
            if res is None:  # --no-wait: batches submitted, a rerun collects
                return 0
        elif a.engine == "ray":
            from llmlabel.distributed.driver import run_job_ray

            res = run_job_ray(cfg, a.input, a.output, opts, actors=a.actors)
        else:
            res = run_job(cfg, a.input, a.output, opts)
    except LLMLabelError as e:
        if e.ledger is not None and e.ledger.rows_done:  # what the stopped run cost
            _print_ledger(e.ledger)
        raise
    _print_ledger(res.ledger)
    for w in res.warnings:
        print(f"llmlabel: warning: {w}", file=sys.stderr)
    q = res.quality.get("judges") if res.quality else None
    if q:
        print(
            "judges (estimated by "
            + res.quality["method"]
            + "): "
            + ", ".join(
                f"{n} " + ", ".join(f"{k} {x:.3f}" for k, x in v.items() if k in ("accuracy", "coverage", "weight"))
                for n, v in q.items()
            ),
            file=sys.stderr,
        )
    if res.stopped_by:
        print(
            f"llmlabel: stopped: {res.stopped_by}; finished rows are kept, rerun the same command to continue",
            file=sys.stderr,
        )
        return 130
    print(f"wrote {res.rows} rows to {res.output}", file=sys.stderr)
    return 0


def _planning_judges(cfg):
    from llmlabel.config import Judge, default_judges

    if cfg.judges:
        return cfg.judges
    return default_judges() or [Judge(name="local", model="embedded local models", base_url="http://127.0.0.1")]


def cmd_prompt(a: argparse.Namespace) -> int:
    from llmlabel.errors import InputError
    from llmlabel.io.rows import iter_rows
    from llmlabel.llm.prompts import first_kind, render_messages, response_format, row_text

    cfg = _load(a.config)
    judges = _planning_judges(cfg)
    judge = next((j for j in judges if j.name == a.judge), None) if a.judge else judges[0]
    if judge is None:
        raise LLMLabelError(
            f"no judge named '{a.judge}' in the config; use one of: {', '.join(j.name for j in judges)}"
        )
    kind = first_kind(cfg.task, a.kind or cfg.kind)
    for i, row in enumerate(iter_rows(a.input)):
        if i == a.row:
            break
    else:
        raise InputError(f"{a.input} has no row {a.row} (rows are numbered from 0)")
    text = row_text(row, cfg.task, cfg.prompts_dir) or ""
    given = row.get(a.label_column) if kind == "verify" else None
    codes = judge.logprobs and judge.response_format in ("auto", "text") and kind != "multilabel"
    demos = None
    if cfg.task.examples_file:
        from llmlabel.llm.demos import DemoPool

        demos = DemoPool(cfg.task).nearest(text)
    msgs = render_messages(
        cfg, judge, kind, text, given_label=None if given is None else str(given), logprob_codes=codes, demos=demos
    )
    fmt = "text" if codes else ("json_schema" if judge.response_format == "auto" else judge.response_format)
    out = {
        "judge": judge.name,
        "model": judge.model,
        "messages": msgs,
        "response_format": response_format(fmt, kind, cfg.task.label_names, "labels"),
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def cmd_plan(a: argparse.Namespace) -> int:
    from llmlabel.pipeline.plan import plan

    cfg = _load(a.config)
    print(plan(cfg, _planning_judges(cfg), a.input, sample=a.sample, limit=a.limit, batch=a.batch))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmlabel", description="Label, audit and distill text data with an ensemble of LLM judges."
    )
    from llmlabel import __version__

    p.add_argument("--version", action="version", version=f"llmlabel {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("label", help="label a corpus (CSV/JSONL/Parquet) with the config's judges")
    s.add_argument("input")
    s.add_argument("-c", "--config", required=True, help="YAML config (task, judges, options)")
    s.add_argument("-o", "--output", required=True, help="output file: .jsonl, .csv or .parquet")
    s.add_argument("--limit", type=int, help="label only the first N rows")
    s.add_argument(
        "--max-cost", type=float, help="a hard cap in dollars: each request's worst case is reserved before it is sent"
    )
    s.add_argument("--max-requests", type=int, help="stop cleanly after this many paid requests")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.add_argument(
        "--restart",
        action="store_true",
        help="discard the rows of an unfinished run of this output and start over (cached answers are reused)",
    )
    s.add_argument(
        "--retry-errors", action="store_true", help="ask the judges again for rows that failed in the last run"
    )
    s.add_argument(
        "--shard",
        metavar="I/N",
        help="label only shard I of N (0-based; rows picked by a hash of their id); join with `llmlabel merge`",
    )
    s.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process; ray: a Ray cluster (RAY_ADDRESS, else a local one), for corpora past one machine",
    )
    s.add_argument("--actors", type=int, default=2, help="with --engine ray: labeling actors (default 2)")
    from llmlabel.cli.batch import add_label_options

    add_label_options(s)
    s.set_defaults(func=cmd_label)

    s = sub.add_parser("plan", help="estimate requests, tokens and cost of a run; makes no call")
    s.add_argument("input")
    s.add_argument("-c", "--config", required=True)
    s.add_argument("--sample", type=int, default=200, help="rows rendered to measure prompt sizes")
    s.add_argument("--limit", type=int)
    s.add_argument("--batch", action="store_true", help="at the Batch API's prices (label --batch)")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("prompt", help="print the exact messages and response schema for one row")
    s.add_argument("input")
    s.add_argument("-c", "--config", required=True)
    s.add_argument("--row", type=int, default=0, help="row number, from 0")
    s.add_argument("--judge", help="judge name (default: the first)")
    s.add_argument("--kind", choices=["label", "candidates", "verify"], help="prompt kind (default: the config's mode)")
    s.add_argument("--label-column", default="label", help="the given label shown by the verify prompt")
    s.set_defaults(func=cmd_prompt)

    import importlib

    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"llmlabel.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"llmlabel.cli.{name}":
                raise
            continue
        mod.register(sub)
    return p


# Each llmlabel/cli/<name>.py defines register(subparsers); keep their top-level imports light.
COMMAND_MODULES = ["init", "eval", "distill", "audit", "review", "local", "serve", "merge", "batch"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return a.func(a)
    except LLMLabelError as e:
        from llmlabel.cli.messages import error_line
        from llmlabel.redaction import redact

        print(f"llmlabel: error: {redact(error_line(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("llmlabel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:
        from llmlabel.redaction import redact

        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"llmlabel: error: cannot access{where}: {redact(e.strerror or str(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


# Python's cyclic collector at a gen-0 threshold of 10,000 allocations (default 700) for the command's life.
# A run keeps a steady set of live objects (requests in flight, their tasks and futures) that every young
# collection walks again, and makes little cyclic garbage: at 700, 10,000 cold requests spent 0.62 s of ~5.9 s
# CPU in ~1,000 collections, at 10,000 0.05 s (benchmarks/throughput.py). Set here, in the process the CLI owns,
# never by the library (a notebook's collector is the notebook's).
GC_THRESHOLD = 10_000


def console() -> None:
    """The `llmlabel` console script."""
    import gc

    old = gc.get_threshold()
    gc.set_threshold(max(GC_THRESHOLD, old[0]), *old[1:])
    rc = main()
    if _TEARDOWN_FREE:
        # Interpreter teardown (collecting numpy, aiohttp, pydantic...) adds ~0.1 s to every job; nothing is
        # left to flush but the standard streams, logging and other libraries' exit hooks (run here, so that
        # skipping the teardown loses nothing of theirs), so exit directly after them.
        import atexit
        import os

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(rc)
    sys.exit(rc)
