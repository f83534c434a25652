"""A labeling run over a file on this process: the rows through the asyncio driver, inside the one lifecycle
(pipeline.lifecycle.Run: checks, lock, judges, cache, part file, finish, ledger).

`run_job` serves the CLI, `--shard`, `audit`'s judges and the service's batch jobs; `run_file` runs on a job
its caller keeps open (`Labeler.label_file`). Safe to rerun: finished rows are skipped, paid answers cached."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from llmlabel.config import Config
from llmlabel.pipeline.drive import pending_rows
from llmlabel.pipeline.executors import LocalExecutor, RowSource
from llmlabel.pipeline.fingerprint import fingerprint
from llmlabel.pipeline.inflight import in_flight, leave_to_batches
from llmlabel.pipeline.lifecycle import Run, check_run
from llmlabel.pipeline.options import RunOptions, RunResult


def loop_factory() -> Any:
    """uvloop when installed (a faster event loop: less CPU per request at high concurrency), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_job(cfg: Config, input_path: str | Path, output_path: str | Path, opts: RunOptions | None = None) -> RunResult:
    """Label a corpus file into an output file. Safe to rerun: finished rows are skipped, paid answers cached."""
    opts = opts or RunOptions()
    with Run(cfg, check_run(cfg, input_path, output_path, opts), opts) as run:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(closing_judges(run, run_file(run)))


async def closing_judges(run: Run, coro: Coroutine[Any, Any, Any]) -> Any:
    """`coro`, then the run's judge connections closed on the loop that opened them."""
    try:
        return await coro
    finally:
        await run.labeler.aclose()


async def run_file(run: Run) -> RunResult:
    """The rows of the run's input not yet in its part file, on the job's event loop, then `Run.finish`."""
    labeler, checked = run.labeler, run.checked
    part = run.open_part(run.typed(fingerprint(labeler, checked.input), checked.input), checked.input)
    flight = in_flight(labeler.cfg.cache_dir, checked.output)  # rows whose requests a batch holds are left to it
    source = RowSource(
        lambda: leave_to_batches(labeler, pending_rows(labeler, checked.input, part.done), flight),
        checked.total,
        len(part.done),
    )
    try:
        stopped = await LocalExecutor().execute(labeler, source, part)
    finally:
        part.close()
    return run.finish(part, stopped or flight.stop_reason(checked.output))
