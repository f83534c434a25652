"""The Ray engine's workers: async actors that run the labeling core (pipeline.row_labeler through the local executor,
as a local run does) over batches of rows, and the gate that makes each judge's rate limits job-wide.

Imported only inside Ray processes and by the driver (llmlabel.distributed.driver); it never imports `ray`
itself: the driver wraps these classes with `ray.remote` / `map_batches`."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import time
from typing import Any

from llmlabel.config import Config, Judge
from llmlabel.errors import LLMLabelError
from llmlabel.io.output import line, position
from llmlabel.llm.cache import open_cache
from llmlabel.llm.ledger import COUNTERS, Ledger
from llmlabel.llm.limits import Limits
from llmlabel.pipeline.executors import LocalExecutor, RowSource
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.row_labeler import RowLabeler

# A row's state in a worker's answer (the `state` column), one output row per input row, in input order.
WRITTEN, SKIPPED, POSITIONAL, NOT_RUN = 0, 1, 2, 3  # POSITIONAL: written, its id is its position (no id column)
POLL = 0.5  # seconds between a worker's looks at the gate's pauses (a 429 seen by another worker)


class Gate:
    """One per job (a Ray actor): each judge's requests-per-minute and tokens-per-minute limits for the
    whole job, and the pauses that a 429 asks for, seen by every worker."""

    def __init__(self, limits: dict[str, tuple[int | None, int | None]]) -> None:
        from aiolimiter import AsyncLimiter

        self._rpm = {n: AsyncLimiter(r, 60) for n, (r, _) in limits.items() if r}
        self._tpm = {n: AsyncLimiter(t, 60) for n, (_, t) in limits.items() if t}
        self._until: dict[str, float] = {}

    async def acquire(self, name: str, tokens: float) -> None:
        if name in self._rpm:
            await self._rpm[name].acquire()
        if name in self._tpm:
            await self._tpm[name].acquire(tokens)

    async def throttle(self, name: str, seconds: float) -> None:
        self._until[name] = max(self._until.get(name, 0.0), time.time() + seconds)

    async def pauses(self) -> dict[str, float]:
        """Seconds each throttled judge should still rest."""
        now = time.time()
        return {n: u - now for n, u in self._until.items() if u > now}


class SharedLimits(Limits):
    """A worker's limits for one judge: its share of the concurrency (set by the driver), the job-wide rate
    limits through the gate (one call to it per request, only for judges that have a rate limit), and rest
    after a 429 seen by any worker."""

    def __init__(self, judge: Judge, gate: Any) -> None:
        super().__init__(judge)
        self._gate, self._name = gate, judge.name
        self._rated = judge.requests_per_minute is not None or judge.tokens_per_minute is not None
        self.resume_at = 0.0  # time.monotonic() before which nothing is sent

    def rest(self, seconds: float) -> None:
        self.resume_at = max(self.resume_at, time.monotonic() + seconds)

    async def pace(self, req: dict[str, Any]) -> None:
        delay = self.resume_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._rated:
            await self._gate.acquire.remote(self._name, self.tokens(req) if self._tpm else 0)

    def throttled(self, seconds: float) -> None:
        self.rest(seconds)
        self._gate.throttle.remote(self._name, seconds)


class _Batch:
    """A Sink that puts each finished row's line at its place in the batch."""

    def __init__(self, n: int) -> None:
        self.lines = [b""] * n

    def append(self, rec: dict[str, Any]) -> None:
        self.lines[rec["_i"]] = line(rec)

    def append_lines(self, lines: list[bytes]) -> None:
        for x in lines:
            self.lines[position(x)] = x


class LabelWorker:
    """A Ray Data actor: labels batches of rows with one RowLabeler (clients, cache and calibration reused across
    batches). Answers one row per input row: its part-file line (its `_i` is its place in the batch; the
    driver renumbers it), its state, and on the first row a note with the ledger counts since the last note
    and, if the job must stop, why."""

    def __init__(
        self,
        cfg: Config,
        judges: list[Judge],
        opts: RunOptions,
        done: Any,
        gate: Any,
        ledger_log: tuple[str, str, str] | None = None,
    ) -> None:
        # The actor's own cache connection, for the actor's life (Ray ends the actor with the job).
        self.labeler = RowLabeler(cfg, judges, opts, open_cache(cfg.cache_dir))
        if ledger_log is not None:  # what this actor pays goes into the driver's run log as it happens
            self.labeler.ledger.attach(ledger_log)
        for c in self.labeler.clients.values():
            c.limits = SharedLimits(c.judge, gate)
        self.done: frozenset[str] = done
        self.gate = gate
        self.id_column = cfg.task.id_column
        self._reported: dict[str, dict[str, int]] = {n: dict.fromkeys(COUNTERS, 0) for n in self.labeler.clients}
        self._rows = [0, 0, 0]  # rows_done, rows_failed, truncated, as last reported
        self._watch: asyncio.Task[None] | None = None

    async def _watch_gate(self) -> None:
        while True:
            for name, seconds in (await self.gate.pauses.remote()).items():
                limits = self.labeler.clients[name].limits
                if isinstance(limits, SharedLimits):
                    limits.rest(seconds)
            await asyncio.sleep(POLL)

    async def __call__(self, batch: Any) -> dict[str, list[Any]]:
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._watch_gate())
        rows = batch.to_pylist()
        states = [WRITTEN] * len(rows)
        todo = []
        for k, row in enumerate(rows):
            v = row.get(self.id_column)
            if v is None or v == "":
                states[k] = POSITIONAL  # labeled here; the driver, which knows its position, checks `done`
            elif str(v) in self.done:
                states[k] = SKIPPED
                continue
            todo.append((k, row))
        sink = _Batch(len(rows))
        labeler = self.labeler
        if labeler.fatal is None and todo:
            try:
                await LocalExecutor().execute(labeler, RowSource(lambda: todo, len(todo)), sink)
            except Exception as e:  # noqa: BLE001 - the job's end, told to the driver (Ray would retry it)
                labeler.fail(e)
        for k in range(len(rows)):
            if not sink.lines[k] and states[k] != SKIPPED:
                states[k] = NOT_RUN
        note = self._note()
        return {"line": sink.lines, "state": states, "note": [note] + [""] * (len(rows) - 1)}

    def _note(self) -> str:
        """The ledger counts since the last note (so the driver's sum is the job's), and a fatal error."""
        labeler, delta = self.labeler, {}
        for name, jl in labeler.ledger.judges.items():
            now = jl.counts()
            delta[name] = {f: now[f] - self._reported[name][f] for f in COUNTERS}
            self._reported[name] = now
        rows = [labeler.ledger.rows_done, labeler.ledger.rows_failed, labeler.truncated]
        note: dict[str, Any] = {"judges": delta, "rows": [a - b for a, b in zip(rows, self._rows)]}
        note["logged"] = labeler.ledger.attached_ok  # the driver logs these counts only if the actor could not
        self._rows = rows
        if labeler.fatal is not None:
            note["fatal"] = pack_error(labeler.fatal)
        return json.dumps(note)


def pack_error(exc: BaseException) -> str:
    """The error that stops the job, for the driver (a note is JSON text): the exception pickled, so the driver
    re-raises the same type with its fields (`unpack_error`). Anything but an LLMLabelError (a bug) travels as
    an LLMLabelError with its message."""
    if not isinstance(exc, LLMLabelError):
        exc = LLMLabelError(str(exc))
    try:
        data = pickle.dumps(exc)
    except Exception:  # noqa: BLE001 - a field that does not pickle: its type and message still travel
        data = pickle.dumps(LLMLabelError(str(exc)))
    return base64.b64encode(data).decode("ascii")


def unpack_error(packed: str) -> LLMLabelError:
    """`pack_error`'s exception, as the actor raised it (from this job's own actors, as Ray's own results are)."""
    exc = pickle.loads(base64.b64decode(packed))  # noqa: S301 - written by pack_error in this job's actors
    return exc if isinstance(exc, LLMLabelError) else LLMLabelError(str(exc))


def add_note(ledger: Ledger, note: dict[str, Any]) -> int:
    """Add a worker's note to the driver's ledger; returns the truncated-text count it carries."""
    for name, counts in note["judges"].items():
        ledger.judges[name].add(counts, logged=bool(note.get("logged")))
    done, failed, truncated = note["rows"]
    ledger.rows_done += done
    ledger.rows_failed += failed
    return int(truncated)
