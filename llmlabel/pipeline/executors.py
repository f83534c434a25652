"""Executors: how a job's planned requests (pipeline.requests) are sent and answered. One base, one subclass per
backend (the shape of curator's request processors):

- `LocalExecutor` (here): the asyncio driver of pipeline.drive: a bulk cache pass, then a window of rows in
  flight, the budget, and a clean stop (halt, drain) on a budget, a dead judge, a signal or a cancel. Files
  (`run_job`), memory (`Labeler`), each Ray actor and the service's items (/v1/label, /v1/verify, Label
  Studio's /predict: `LocalExecutor(serving=True)`, each request with a RunState of its own) run it.
- `BatchExecutor` (pipeline.batch): the Batch API: each stage of the plan's pending requests (every row's
  first question, then a shortlist's next round, a taxonomy's next level) bought in batch files; the answers go
  into the response cache, and from there the executor writes the rows into the sink itself (the rows no
  batch answered are handed to the local executor, online).
- `RayExecutor` (distributed.driver): the rows spread over Ray actors, each running the local executor; their
  finished rows stream back into the sink.

Each reads the same plan (`RowLabeler.plan`: the same messages, kinds and cache keys) and the same `RowLabeler` turns
answers into records, so the same rows through any of them give the same labels
(tests/e2e/test_executor_parity.py)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from llmlabel.pipeline.drive import drive
from llmlabel.pipeline.row_labeler import RowLabeler, Sink
from llmlabel.pipeline.run_state import RunState

Rows = Iterable[tuple[int, dict[str, Any]]]


@dataclass
class RowSource:
    """A run's rows: `read()` gives them afresh on each call, as (input position, row), those still to label (an
    executor that walks them more than once, as the Batch API does stage by stage, calls it again). `spec`: the
    input as the user named it, for an executor that reads it itself (Ray Data: a folder, a glob, a URI)."""

    read: Callable[[], Rows]
    total: int = 0  # rows in the input (for progress)
    done_before: int = 0  # rows finished by an earlier run (a resumed part file)
    spec: Any = None


class Executor(ABC):
    name: ClassVar[str]

    @abstractmethod
    async def execute(self, labeler: RowLabeler, source: RowSource, sink: Sink) -> str | None:
        """Send the requests of `source`'s rows and put the finished rows into `sink`. Returns why it stopped
        early (a signal, a cancel, batches still running), or None; a budget or a dead judge leaves its error in
        the run's state (`labeler.fatal`)."""


class LocalExecutor(Executor):
    """The rows asked from this process's event loop (pipeline.drive; Ctrl-C and SIGTERM stop it cleanly when it
    runs on the main thread). `run`: the run's own state (the labeler's current run by default; the server gives
    each request its own). `serving`: driven inside a server (see pipeline.drive)."""

    name = "local"

    def __init__(self, run: RunState | None = None, serving: bool = False) -> None:
        self.run, self.serving = run, serving

    async def execute(self, labeler: RowLabeler, source: RowSource, sink: Sink) -> str | None:
        return await drive(labeler, source.read(), sink, source.total, source.done_before, self.run, self.serving)
