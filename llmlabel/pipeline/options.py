"""What a caller of the labeling pipeline can set (RunOptions) and gets back (RunResult, Progress)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlabel.config import Judge
from llmlabel.errors import InputError
from llmlabel.io.shard_spec import Shard
from llmlabel.llm.ledger import Ledger


@dataclass(frozen=True)
class Progress:
    """A snapshot of a running job, handed to `RunOptions.on_progress` every `progress_every` seconds."""

    done: int  # rows finished, this run and earlier runs of the same output
    total: int  # rows in the input (after --limit)
    rate: float  # rows a second this run
    cost: float  # dollars spent this run
    eta: float | None  # seconds left at the current rate (None before the first row)
    ledger: Ledger  # the live ledger of this run (read only)

    def line(self) -> str:
        """One log line: `llmlabel: 1,200/10,000 rows (12%), 35.2 rows/s, $0.0140, ETA 4m10s`."""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = "" if self.eta is None or self.done >= self.total else f", ETA {_duration(self.eta)}"
        return f"llmlabel: {self.done:,}/{self.total:,} rows{pct}, {self.rate:.1f} rows/s, ${self.cost:.4f}{eta}"


def _duration(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class RunOptions:
    """Options of one labeling run (`run_job`, the service's batch jobs, the Python API's Labeler).

    progress: show progress on stderr: a tqdm bar on a terminal, else a `Progress.line()` every
        `progress_every` seconds (the LLMLABEL_PROGRESS_EVERY environment variable overrides it).
    on_progress: called with a `Progress` every `progress_every` seconds while rows are labeled (and once at
        the end), on the run's event-loop thread: keep it quick (e.g. store the numbers, or hand them to a
        thread). Works with progress=False.
    cancel: set it (from any thread) to stop the run the way a budget does: requests in flight finish and
        are kept, nothing new is sent, the run returns with stopped_by="cancelled" (a file run keeps its
        part file and resumes on the next call).
    echo: where progress lines go (default: print to stderr); warnings are returned in RunResult.warnings.
    judges: the judges to ask (default: the config's, else OPENAI_* variables, else the embedded models).
    restart: an unfinished run of the same output whose input or answer settings differ is refused; restart
        discards its rows and starts over (its paid answers stay cached).
    """

    limit: int | None = None
    max_cost: float | None = None
    max_requests: int | None = None
    progress: bool = True
    progress_every: float = 10.0
    on_progress: Callable[[Progress], None] | None = None
    cancel: threading.Event | None = None
    echo: Callable[[str], None] | None = None
    kind: str | None = None  # prompt kind; defaults to the config's mode
    given_label_column: str | None = None  # for the verify prompt (audits)
    transport: Any = None  # an httpx transport: tests inject respx / ASGI transports here (SDK path)
    judges: list[Judge] | None = None
    restart: bool = False  # discard an unfinished run's rows (never the cache) instead of continuing it
    retry_errors: bool = False  # ask again the rows whose judges failed in the last finished run
    shard: Shard | None = None  # label only this shard's rows (io.shard_spec); `llmlabel merge` joins the shards

    def __post_init__(self) -> None:
        # `not >= 0` holds for NaN too: a budget that no spend compares above would never stop the run
        if self.max_cost is not None and not self.max_cost >= 0:
            raise InputError(f"--max-cost {self.max_cost} is not an amount of dollars; give a number >= 0")
        if self.max_requests is not None and self.max_requests < 0:
            raise InputError(f"--max-requests {self.max_requests} is negative; give a number >= 0")


@dataclass
class RunResult:
    output: Path
    rows: int
    complete: bool
    ledger: Ledger
    quality: dict[str, Any] = field(default_factory=dict)
    stopped_by: str | None = None
    warnings: list[str] = field(default_factory=list)
