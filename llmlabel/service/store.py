"""The job table: a SQLite database in the state dir, shared by the server's threads."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlabel.errors import LLMLabelError
from llmlabel.io.lock import FileLock, Locked

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, mode TEXT NOT NULL, label_column TEXT, filename TEXT, input TEXT NOT NULL,
    state TEXT NOT NULL, rows_total INTEGER NOT NULL, rows_done INTEGER NOT NULL DEFAULT 0, error TEXT,
    runs TEXT NOT NULL DEFAULT '[]', current TEXT, quality TEXT,
    created REAL NOT NULL, started REAL, finished REAL, output_rows INTEGER)
"""


class StateLock:
    """One server per state dir: io.lock.FileLock on `serve.lock` in it, held while the server runs. Two
    servers on one dir would run every job twice."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / "serve.lock"
        self._lock = FileLock(self.path)

    def acquire(self) -> None:
        try:
            self._lock.acquire()
        except Locked as e:
            raise LLMLabelError(
                f"the state dir {self.dir} is in use by another `llmlabel serve` (pid {e.holder}); stop that one, "
                "or give this one another --state-dir"
            ) from None

    def release(self) -> None:
        self._lock.release()


@dataclass
class JobRecord:
    id: str
    mode: str
    label_column: str | None
    filename: str | None
    input: str
    state: str
    rows_total: int
    rows_done: int
    error: str | None
    runs: list[dict[str, Any]]
    current: dict[str, Any] | None
    quality: dict[str, Any] | None
    created: float
    started: float | None
    finished: float | None
    output_rows: int | None

    @property
    def dir(self) -> Path:
        return Path(self.input).parent

    @property
    def output(self) -> Path:
        return self.dir / "output.jsonl"


class JobStore:
    """The job table. One connection shared by the server and worker threads, serialised by a lock."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        (self.dir / "jobs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.dir / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _rec(row: sqlite3.Row) -> JobRecord:
        d = dict(row)
        d["runs"] = json.loads(d["runs"] or "[]")
        d["current"] = json.loads(d["current"]) if d["current"] else None
        d["quality"] = json.loads(d["quality"]) if d["quality"] else None
        return JobRecord(**d)

    def new_dir(self) -> tuple[str, Path]:
        jid = uuid.uuid4().hex  # unguessable: ids are not a listing of other users' jobs
        d = self.dir / "jobs" / jid
        d.mkdir(parents=True)
        return jid, d

    def add(
        self, jid: str, mode: str, label_column: str | None, filename: str | None, input_path: Path, rows_total: int
    ) -> JobRecord:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, mode, label_column, filename, input, state, rows_total, created) "
                "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
                (jid, mode, label_column, filename, str(input_path), rows_total, time.time()),
            )
        rec = self.get(jid)
        assert rec is not None
        return rec

    def get(self, jid: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (jid,)).fetchone()
        return self._rec(row) if row else None

    def recent(self, limit: int = 100) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [self._rec(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {s: 0 for s in STATES} | {r[0]: r[1] for r in rows}

    def update(self, jid: str, **fields: Any) -> None:
        for k in ("runs", "current", "quality"):
            if k in fields and fields[k] is not None:
                fields[k] = json.dumps(fields[k])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), jid))

    def set_state_if(self, jid: str, new: str, allowed: tuple[str, ...]) -> bool:
        marks = ",".join("?" * len(allowed))
        with self._lock:
            cur = self._db.execute(
                f"UPDATE jobs SET state = ? WHERE id = ? AND state IN ({marks})", (new, jid, *allowed)
            )
        return cur.rowcount == 1

    def claim_next(self) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE jobs SET state = 'running', started = ?, error = NULL WHERE id = ?", (time.time(), row[0])
            )
        return self.get(row[0])

    def requeue_interrupted(self) -> list[str]:
        """Jobs left 'running' by a server that died: back to the queue, the dead run's ledger kept as a run."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()
        ids = []
        for row in rows:
            rec = self._rec(row)
            runs = rec.runs + ([{**rec.current, "interrupted": True}] if rec.current else [])
            self.update(rec.id, state="queued", runs=runs, current=None)
            ids.append(rec.id)
        return ids

    def delete(self, jid: str) -> None:
        rec = self.get(jid)
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (jid,))
        if rec is not None:
            shutil.rmtree(rec.dir, ignore_errors=True)
