"""Errors a user can cause or fix. The CLI prints them as one line, with no traceback.

An error that stopped a run carries typed fields (`ledger`, `kept`): what it cost and where its finished rows
are. Each front end words its own advice from them (the CLI: rerun the command; the service: its resume
route); the library's message says only what went wrong."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class KeptRows:
    """Where a stopped run keeps the rows it finished (its part file), and how many it finished this run."""

    part: Path
    rows: int


class LLMLabelError(Exception):
    """Base class: the message is a single line that says what is wrong and how to fix it."""

    exit_code = 2
    ledger: Any = None  # llm.ledger.Ledger: what the run it stopped cost (set by the run's finish)
    kept: KeptRows | None = None  # where that run's finished rows are (None: no run, or the message says)


class ConfigError(LLMLabelError):
    pass


class InputError(LLMLabelError):
    pass


class MissingColumn(InputError):
    """A file of given labels has no such column. Fields: the file (as its reader names it), the column asked
    for, and the file's first columns; each front end adds how to name another (--label-column, a form field)."""

    def __init__(self, source: str, column: str, columns: list[str]) -> None:
        super().__init__(source, column, columns)
        self.source, self.column, self.columns = source, column, columns

    def __str__(self) -> str:
        return f"{self.source}: no label column '{self.column}' (columns: {', '.join(self.columns)})"


class JudgeError(LLMLabelError):
    """A judge cannot be used (bad key, unknown model, endpoint down): the run stops, finished rows are kept."""

    exit_code = 1


class BudgetExhausted(LLMLabelError):
    """--max-cost or --max-requests was reached; the run stops cleanly and a rerun continues."""

    exit_code = 3


class OutputError(LLMLabelError):
    """An output or its part file cannot be written (disk full, a directory in the way): rows already written stay."""

    exit_code = 1


class CacheError(LLMLabelError):
    """The response cache cannot be read or written (disk full, read-only, its Redis server gone). A run keeps
    the answers it received in its rows, starts no new row, and stops with this line; a rerun continues."""

    exit_code = 1
