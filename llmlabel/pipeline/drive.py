"""Driving a job's rows concurrently: a bulk cache pass first, then bounded per-row tasks, stopping cleanly on
a budget, a dead judge, a signal or a cancel flag. Input is any iterable of (index, row); output any Sink; what
the run counts and why it stops go into its RunState (pipeline.run_state), never into the shared RowLabeler.

Inside a server (`serving`), a drive shares the event loop with every other client: it installs no signal
handler (the server owns them), a failed cache neither stops it nor its run (the answers are returned, and the
server warns that they are not cached), and it yields to the loop between chunks of the bulk cache pass (kept
small) and between rows, so a large request does not hold the other clients."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmlabel.errors import BudgetExhausted, LLMLabelError, OutputError
from llmlabel.io.rows import iter_rows, row_id
from llmlabel.pipeline.progress import Reporter
from llmlabel.pipeline.row_labeler import RowLabeler, Sink, Started
from llmlabel.pipeline.run_state import RunState

Rows = Iterable[tuple[int, dict[str, Any]]]


def pending_rows(
    labeler: RowLabeler, input_path: Path, done: set[str], count: bool = True
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The input's rows (up to the limit) whose ids are not done yet; skipped ones are counted (`count`: a source
    read more than once, as the Batch API's stage after stage, counts them on one read)."""
    limit, id_column, shard = labeler.opts.limit, labeler.cfg.task.id_column, labeler.opts.shard
    for i, row in enumerate(iter_rows(input_path)):
        if limit is not None and i >= limit:
            return
        rid = row_id(row, id_column, i)
        if shard is not None and not shard.has(rid):
            continue  # another shard's row
        if rid in done:
            if count:
                labeler.ledger.rows_skipped += 1
            continue
        yield i, row


# Inside a server, what one loop turn of the bulk cache pass holds: 64 rows at most, fewer once their texts
# reach 64k characters (a row's start cuts its text to max_text_tokens: ~0.7 ms per 1,000 characters measured
# on a loaded 2-core machine, so 64 texts of 200,000 characters would hold the loop for seconds).
SERVED_CHUNK = 64
SERVED_CHARS = 1 << 16


def _chars(row: dict[str, Any]) -> int:
    return sum(len(v) for v in row.values() if isinstance(v, str))


async def yield_to_loop() -> None:
    """A served drive's turn given to the server's other clients (a test holds it here to serve one)."""
    await asyncio.sleep(0)


def row_by_row(labeler: RowLabeler) -> bool:
    """Whether the job's rows skip the bulk cache pass: a cascade asks its judges in turn and stops early, so a row's
    record holds the judges asked, not every cached answer."""
    cascade = labeler.cfg.cascade
    return cascade is not None and cascade.enabled and len(labeler.judges) > 1


class _Drive:
    def __init__(self, labeler: RowLabeler, run: RunState, sink: Sink, progress: Reporter, serving: bool) -> None:
        self.labeler, self.run, self.sink, self.progress, self.serving = labeler, run, sink, progress, serving
        self.window = asyncio.Semaphore(max(64, 2 * sum(j.concurrency for j in labeler.judges)))
        self.stop = asyncio.Event()
        self.stopped_by: list[str] = []
        self.graceful = False  # a cancel: let requests in flight finish, as a budget stop does
        self.tasks: set[asyncio.Task[None]] = set()
        self.calibrating: list[asyncio.Future[None]] = []
        self.cancel = labeler.opts.cancel
        # Rows are first looked up in the cache in bulk (chunks growing while they hit); the rest are asked.
        # A cold run stops looking ahead after its first chunk misses. A cascade asks row by row.
        self.size = 0 if row_by_row(labeler) else 64

    def halt(self, why: str, graceful: bool = False) -> None:
        if graceful:
            # No new paid request from here (rows waiting for a connection raise BudgetExhausted, as at a
            # budget stop); requests already sent finish and their rows are kept.
            self.run.budget.halt()
        if not self.stopped_by:
            self.graceful = graceful
        elif not graceful:
            self.graceful = False  # a signal after a cancel: stop now
        self.stopped_by.append(why)
        self.stop.set()
        if not self.graceful:
            # Asks waiting in a retry backoff or re-asking (the calibration's too) stop now, not when they give up.
            for t in [*self.tasks, *self.calibrating]:
                t.cancel()

    def stopping(self) -> bool:
        """Whether to launch no more rows (a cancel flag is also polled by `watch`, for rows in flight). A failed
        cache also stops a file run's launches, while the rows in flight finish: their answers are kept in the
        sink (a server's drive goes on: its answers are returned)."""
        if self.cancel is not None and self.cancel.is_set() and not self.stopped_by:
            self.halt("cancelled", graceful=True)
        return self.stop.is_set() or (not self.serving and self.run.cache_error is not None)

    def died(self, exc: BaseException) -> None:
        """The run's error (a dead judge, a rejected request, the budget; a full part file): nothing more is
        sent from here. A judge client says it as the error leaves it (Budget.on_error), before any other ask
        runs: the ask that takes the connection slot the failed request freed is refused, not sent and then
        thrown away with its row. Requests in flight are waited for after a budget or a full part file (their
        answers are kept), cancelled after any other error (`drain`)."""
        self.stopping()  # a cancel raised meanwhile is why the run stops (a refused ask's BudgetExhausted is not)
        if self.run.fail(exc):
            self.run.budget.halt()
        self.stop.set()

    def finished(self, t: asyncio.Task[None]) -> None:
        self.tasks.discard(t)
        self.window.release()
        if t.cancelled():
            return
        exc = t.exception()
        if exc is not None:
            self.died(exc)  # (already said by the judge client when the error is its)
        else:
            self.progress.row_done()

    async def launch(self, rows: list[tuple[int, dict[str, Any]]]) -> bool:
        labeler, run = self.labeler, self.run
        started: list[Started]
        if self.size:
            started, found = labeler.from_cache(rows, self.sink, run)
            self.progress.rows_done(len(rows) - len(started))
            largest = SERVED_CHUNK if self.serving else 1024
            self.size = 0 if found < len(rows) * len(labeler.judges) // 2 else min(2 * self.size, largest)
            if self.serving:
                await yield_to_loop()  # the other clients' turn after each chunk's synchronous lookups
        else:
            started = [labeler.start(i, row) for i, row in rows]
        for st in started:
            await self.window.acquire()
            if self.stopping():
                self.window.release()
                return False
            t = asyncio.ensure_future(labeler.process(st, self.sink, run))
            self.tasks.add(t)
            t.add_done_callback(self.finished)
            if self.serving:
                await yield_to_loop()  # each row's start (rendering, cutting, hashing) in a loop turn of its own
        return True

    async def feed(self, rows: Rows) -> None:
        chunk: list[tuple[int, dict[str, Any]]] = []
        chars = 0
        for item in rows:
            if self.stopping():
                return
            chunk.append(item)
            if self.serving:
                chars += _chars(item[1])
            if len(chunk) >= max(self.size, 1) or chars >= SERVED_CHARS:
                batch, chunk, chars = chunk, [], 0
                if not await self.launch(batch):
                    return
        if chunk and not self.stopping():
            await self.launch(chunk)

    async def drain(self) -> None:
        tasks = self.tasks
        if tasks:
            waiter = asyncio.ensure_future(self.stop.wait())
            while tasks and not self.stop.is_set():
                await asyncio.wait(set(tasks) | {waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        if self.stop.is_set() and tasks:
            # Budget stops and cancels let paid requests in flight finish; a dead judge or a signal cancels them.
            budget = isinstance(self.run.fatal, (BudgetExhausted, OutputError)) and not self.stopped_by
            if budget or self.graceful:
                await asyncio.wait(set(tasks), timeout=min(30.0, max(j.timeout for j in self.labeler.judges)))
            for t in list(tasks):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def watch(self) -> None:
        while not self.stopping():
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def _signals(d: _Drive) -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the run cleanly (only on the main thread: elsewhere the caller owns them). The
    first stops sending and waits (bounded) for the requests in flight, whose answers are paid for: they are
    cached and their rows kept. A second one stops at once."""
    loop = asyncio.get_running_loop()
    installed = []

    def on_signal(name: str) -> None:
        first = not d.stopped_by
        d.halt(name, graceful=first)
        if first and d.tasks and d.labeler.opts.progress:
            print(
                f"llmlabel: {name}: waiting up to 30 s for the requests in flight (their answers are paid for); "
                "press Ctrl-C again to stop at once",
                file=sys.stderr,
                flush=True,
            )

    for sig, name in ((signal.SIGINT, "interrupted (Ctrl-C)"), (signal.SIGTERM, "terminated")):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, name)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def drive(
    labeler: RowLabeler,
    rows: Rows,
    sink: Sink,
    total: int,
    done_before: int = 0,
    run: RunState | None = None,
    serving: bool = False,
) -> str | None:
    """Label `rows` into `sink`, counted in `run` (the labeler's current run by default). Returns why it stopped
    early (a signal, a cancel), or None; a dead judge or a budget leaves its LLMLabelError in `run.fatal`; any
    other error is raised. `serving`: inside a server (see the module's doc). (Called through
    executors.LocalExecutor.)"""
    run = run or labeler.run
    progress = Reporter(labeler.opts, run.ledger, total, done_before)
    d = _Drive(labeler, run, sink, progress, serving)
    helpers = []
    if progress.timed:
        helpers.append(asyncio.ensure_future(progress.tick()))
    if labeler.opts.cancel is not None:
        helpers.append(asyncio.ensure_future(d.watch()))
    try:
        with contextlib.nullcontext() if serving else _signals(d):
            d.calibrating.append(asyncio.ensure_future(labeler.ensure_calibrated(run)))
            try:
                await d.calibrating[0]
            except (asyncio.CancelledError, BudgetExhausted):
                d.stopping()  # a cancel that a request saw before the run's poll did: the stop is the cancel's
                if not d.stopped_by:
                    raise
            run.budget.on_error = d.died
            await d.feed(rows)
            await d.drain()
    finally:
        run.budget.on_error = None
        for h in helpers:
            h.cancel()
        progress.close(finished=run.fatal is None and not d.stopped_by)
    run.settle(cancelled=d.graceful, cache_stops=not serving)
    run.stopped_by = d.stopped_by[0] if d.stopped_by else None
    if run.fatal is not None and not isinstance(run.fatal, LLMLabelError):
        raise run.fatal
    return run.stopped_by
