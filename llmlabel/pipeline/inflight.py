"""Requests bought in Batch API batches that have not come back yet, known beside the response cache, so that no
other run pays for them again while they are in flight.

`label --batch` records each batch here (CACHE_DIR/inflight/<local>.json: its output, batch id and request keys)
before it creates it, and removes the record once the batch is collected (or was never created). An online run,
and a later batch run of any output, leaves the rows whose requests are in flight to their batch: it says which
batch of which output holds them, labels the rest, and ends unfinished, so that a rerun once the batch is
collected gets those rows free from the cache. (A Redis cache has no directory beside it: there only the
output's own journal, OUTPUT.batch.json, is consulted.)"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlabel.io.files import atomic_write
from llmlabel.io.lock import FileLock
from llmlabel.llm.cache import REMOTE
from llmlabel.pipeline.batch_journal import load_journal
from llmlabel.pipeline.row_labeler import RowLabeler


def registry_dir(cache_dir: str) -> Path | None:
    return None if cache_dir.startswith(REMOTE) else Path(cache_dir) / "inflight"


@contextlib.contextmanager
def registry_lock(cache_dir: str) -> Iterator[None]:
    """Held by a batch run from reading what is in flight until it has recorded what it submits: two runs of
    different outputs with the same requests then never both buy them (the second waits, then sees them)."""
    d = registry_dir(cache_dir)
    if d is None:
        yield
        return
    lock = FileLock(d / ".lock", wait=True)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def record(cache_dir: str, local: str, output: Path, judge: str, keys: list[str]) -> None:
    """A batch about to be created: its keys are in flight until `forget`."""
    d = registry_dir(cache_dir)
    if d is None:
        return
    d.mkdir(parents=True, exist_ok=True)
    entry = {"output": str(output.resolve()), "judge": judge, "batch_id": None, "keys": keys}
    atomic_write(d / f"{local}.json", json.dumps(entry))


def created(cache_dir: str, local: str, batch_id: str) -> None:
    d = registry_dir(cache_dir)
    p = d / f"{local}.json" if d is not None else None
    if p is None or not p.is_file():
        return
    entry = json.loads(p.read_text())
    entry["batch_id"] = batch_id
    atomic_write(p, json.dumps(entry))


def forget(cache_dir: str, local: str) -> None:
    d = registry_dir(cache_dir)
    if d is not None:
        with contextlib.suppress(OSError):
            os.unlink(d / f"{local}.json")


@dataclass
class Holder:
    """Who holds a request in flight: an output's batch."""

    output: str
    batch_id: str | None
    record: str  # the registry file (or the output's journal) that says so


@dataclass
class InFlight:
    keys: dict[str, Holder] = field(default_factory=dict)
    held_rows: int = 0  # rows left to a batch by this run
    holders: dict[str, Holder] = field(default_factory=dict)  # batch (or record) -> holder, of those rows

    def __bool__(self) -> bool:
        return bool(self.keys)

    def stop_reason(self, output: Path) -> str | None:
        """Why a run that left rows to batches ends unfinished (None: it left none)."""
        if not self.held_rows:
            return None
        return (
            f"{self.held_rows} rows were left to Batch API batches in flight ({self.describe(output)}), not paid "
            "twice; once they are collected (rerun `llmlabel label --batch` on their output) they are free from the "
            "cache (to pay for another output's rows again online instead, delete its batch's record named above)"
        )

    def describe(self, output: Path) -> str:
        mine = str(output.resolve())
        parts = []
        for h in self.holders.values():
            whose = "this output's" if h.output == mine else f"{h.output}'s"
            parts.append(f"{whose} batch {h.batch_id or '(being created)'} ({h.record})")
        return ", ".join(parts)


def in_flight(cache_dir: str, output: Path, skip: Iterable[str] = ()) -> InFlight:
    """Every request key in an uncollected batch: those of the registry beside the cache and of the output's
    own journal. `skip`: the registry records of the caller's own batches."""
    out = InFlight()
    skip = set(skip)
    d = registry_dir(cache_dir)
    if d is not None and d.is_dir():
        for p in sorted(d.glob("*.json")):
            if p.stem in skip:
                continue
            try:
                e = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            h = Holder(str(e.get("output")), e.get("batch_id"), str(p))
            out.keys.update(dict.fromkeys(e.get("keys") or (), h))
    journal = load_journal(output)
    for e in journal["batches"]:
        if not e.get("collected") and e.get("local") not in skip:
            h = Holder(str(output.resolve()), e.get("batch_id"), str(output.name) + ".batch.json")
            for k in e.get("keys") or ():
                out.keys.setdefault(k, h)
    return out


def leave_to_batches(
    labeler: RowLabeler, rows: Iterable[tuple[int, dict[str, Any]]], flight: InFlight
) -> Iterable[tuple[int, dict[str, Any]]]:
    """The rows none of whose requests is in flight; the others are counted (and said once) and left out."""
    return (
        _leave(labeler, rows, flight, labeler.opts.echo or (_stderr if labeler.opts.progress else _quiet))
        if flight
        else rows
    )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _quiet(line: str) -> None:
    pass


def _leave(
    labeler: RowLabeler, rows: Iterable[tuple[int, dict[str, Any]]], flight: InFlight, echo: Any
) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, row in rows:
        # (the row's next requests, those not answered in the cache: a taxonomy's next level, say)
        held = [r.key for r in labeler.plan.pending([(i, row)]) if r.key in flight.keys]
        if not held:
            yield i, row
            continue
        holder = flight.keys[held[0]]
        if not flight.held_rows:
            echo(
                f"llmlabel: warning: requests of this run are in a Batch API batch in flight ({holder.output}'s "
                f"batch {holder.batch_id or '(being created)'}); their rows are left to it, not paid twice"
            )
        flight.held_rows += 1
        flight.holders.setdefault(holder.record, holder)


def first_held(labeler: RowLabeler, rows: Iterable[tuple[int, dict[str, Any]]], flight: InFlight) -> Holder | None:
    """The holder of the first request of `rows` in flight, if any (for an engine that cannot leave rows out)."""
    for i, row in rows:
        held = [r.key for r in labeler.plan.pending([(i, row)]) if r.key in flight.keys]
        if held:
            return flight.keys[held[0]]
    return None
