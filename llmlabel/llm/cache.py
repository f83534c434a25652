"""Content-addressed response cache: every paid answer is stored once and reused by every later run.

Answers live in an SQLite table this module owns: `responses.sqlite3` in the cache directory, in WAL mode, so
several processes can read and write one cache at once. Keys are `llmlabel.llm.encoding.cache_key`s, values
the answer payload as compact JSON. Caches written before this table existed kept their answers in
diskcache (`cache.db` in the same directory): those are still read, through diskcache's public API, for keys
the table lacks, and each one found is copied into the table (one read from diskcache, then never again).

Why a table of our own: a warm rerun is mostly lookups and a cold run one write per answer, and diskcache's
public API costs ~4.7 us a `get` and ~12 us a `set` (in a transaction) against ~1 and ~1.7 us for one query
per 500 keys and one `executemany` per batch here (measured on 15,000 answers).

A cache directory may also be a Redis URL (`cache_dir: redis://host:6379/0`, llm/rediscache.py): the same keys
and values on a server that processes on several machines share. `open_cache` picks the backend; both have
the `CacheBackend` interface, and `BatchWriter` (llm/cachewriter.py) is the one write path (a thread that commits in
batches)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from llmlabel.errors import CacheError, LLMLabelError
from llmlabel.llm.cachewriter import BatchWriter
from llmlabel.llm.memo import Memo

FILENAME = "responses.sqlite3"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)
_PUT = "INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)"
_CHUNK = 500  # keys per query: under SQLite's default limit of bound parameters


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit (explicit transactions only); waits up to a minute for another process's write to finish.
    con = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    # Two processes switching a new file to WAL at once: SQLite answers one of them "database is locked" at
    # once instead of waiting (both hold a shared lock, so waiting could deadlock), which failed a run in CI.
    # Retry until the other has switched; once set, WAL is the file's own mode.
    deadline = time.monotonic() + 60
    while True:
        try:
            con.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    con.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash; WAL keeps the file consistent
    # Reads through a memory map instead of a read() per page: a warm 5,000-row x 3-judge rerun's lookups
    # 0.035 -> 0.026 s of CPU. (Writes still go through the WAL.)
    con.execute("PRAGMA mmap_size=1073741824")
    return con


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


REMOTE = ("redis://", "rediss://", "unix://")  # cache_dir values that name a Redis server


class CacheBackend(Protocol):
    """What the pipeline and the judges use of a response cache."""

    shared: bool  # whether other processes ask through the same cache (then `leased` dedups across them)

    def get(self, key: str) -> dict[str, Any] | None: ...
    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]: ...
    def set(self, key: str, value: dict[str, Any]) -> None: ...
    async def aset(self, key: str, value: dict[str, Any]) -> None: ...
    async def leased(self, key: str, call: Callable[[], Awaitable[dict[str, Any]]]) -> tuple[dict[str, Any], bool]: ...
    def get_meta(self, name: str) -> Any: ...
    def set_meta(self, name: str, value: Any) -> None: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


def open_cache(location: str) -> CacheBackend:
    """The cache at `location`: a directory (SQLite, the default) or a Redis URL."""
    if location.startswith(REMOTE):
        from llmlabel.llm.rediscache import RedisCache

        return RedisCache(location)
    return ResponseCache(location)


class ResponseCache:
    shared = False  # one machine's file: processes on it reuse answers, in-flight calls are not shared

    def __init__(self, directory: str) -> None:
        path = Path(directory)
        self._path = path / FILENAME
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self.failed("create", e) from None
        # The callers' reads and direct writes (a Labeler reads on its loop's thread, writes meta on the
        # caller's: one at a time); the writer thread has a connection of its own.
        self._lock = threading.Lock()
        try:
            self._con = _connect(self._path)
            self._write(lambda con: [con.execute(s) for s in _SCHEMA])
            self._con.execute("SELECT key, value FROM responses LIMIT 1").fetchall()
        except sqlite3.DatabaseError as e:
            if type(e) is not sqlite3.DatabaseError:  # locked, unwritable, a full disk: not a damaged file
                raise self.failed("open", e) from None
            raise self.corrupt(e) from None
        self._legacy = _legacy_cache(path)
        self._writer = BatchWriter("llmlabel-cache", self._writer_connection)
        self._decoded: Memo[str, dict[str, Any]] = Memo(4096)  # get_many's stored JSON -> its shared dict

    @staticmethod
    def _transaction(con: sqlite3.Connection, work: Any) -> None:
        con.execute("BEGIN IMMEDIATE")
        try:
            work(con)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # (SQLite may have rolled back already: disk full)
                con.execute("ROLLBACK")
            raise

    def corrupt(self, e: sqlite3.DatabaseError) -> LLMLabelError:
        """The one line for a cache database that cannot be read (corrupt, truncated, not a cache)."""
        return LLMLabelError(
            f"the cache database {self._path} cannot be read ({e}); move it away (or delete it: its answers "
            "would be paid for again), then rerun"
        )

    def failed(self, what: str, e: BaseException) -> CacheError:
        """The one line for a cache that cannot be opened, read or written (full disk, read-only directory)."""
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return CacheError(
            f"cannot {what} the response cache {self._path}: {why}; free space on its disk or make its directory "
            "writable (or set cache_dir to another directory)"
        )

    def _query(self, sql: str, params: Any) -> list[Any]:
        with self._lock:
            try:
                return self._con.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as e:
                if type(e) is not sqlite3.DatabaseError:
                    raise self.failed("read", e) from None
                raise self.corrupt(e) from None

    def _write(self, work: Any) -> None:
        with self._lock:
            try:
                self._transaction(self._con, work)
            except sqlite3.Error as e:
                raise self.failed("write", e) from None

    # -- reads ---------------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        rows = self._query("SELECT value FROM responses WHERE key = ?", (key,))
        if rows:
            return json.loads(rows[0][0])
        return self._from_legacy([key]).get(key) if self._legacy is not None else None

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The cached answers among `keys`, one query per 500 keys (a warm rerun is mostly lookups). Equal
        stored answers (a few labels, similar token counts) are decoded once and returned as one shared dict:
        callers must not change them."""
        found: dict[str, dict[str, Any]] = {}
        decoded = self._decoded
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            rows = self._query(f"SELECT key, value FROM responses WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            for key, value in rows:
                hit = decoded.get(value)
                if hit is None:
                    hit = decoded.put(value, json.loads(value))
                found[key] = hit
        if self._legacy is not None and len(found) < len(keys):
            found.update(self._from_legacy([k for k in keys if k not in found]))
        return found

    def _from_legacy(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Answers of an older cache (diskcache, public API), copied into the table as they are found."""
        assert self._legacy is not None
        raw = {k: v for k in keys if isinstance(v := self._legacy.get(k), str)}
        if raw:
            self._write(lambda con: con.executemany(_PUT, list(raw.items())))
        return {k: json.loads(v) for k, v in raw.items()}

    # -- writes --------------------------------------------------------------------------------
    def set(self, key: str, value: dict[str, Any]) -> None:
        self._write(lambda con: con.execute(_PUT, (key, _dumps(value))))

    async def aset(self, key: str, value: dict[str, Any]) -> None:
        """Store an answer from async code, in the writer thread's next transaction (`BatchWriter`)."""
        await self._writer.put(key, _dumps(value))

    def _writer_connection(self) -> tuple[Callable[[list[tuple[str, str]]], None], Callable[[], None]]:
        try:
            con = _connect(self._path)
        except sqlite3.Error as e:
            raise self.failed("write", e) from None

        def commit(batch: list[tuple[str, str]]) -> None:
            try:
                self._transaction(con, lambda c: c.executemany(_PUT, batch))
            except sqlite3.Error as e:
                raise self.failed("write", e) from None

        return commit, con.close

    async def leased(self, key: str, call: Callable[[], Awaitable[dict[str, Any]]]) -> tuple[dict[str, Any], bool]:
        """No lease on a local file: the answer of `call`, not paid elsewhere."""
        return await call(), False

    # -- metadata (e.g. an endpoint's working response format) ---------------------------------
    def get_meta(self, name: str) -> Any:
        rows = self._query("SELECT value FROM meta WHERE name = ?", (name,))
        if rows:
            return json.loads(rows[0][0])
        return self._legacy.get(f"meta:{name}") if self._legacy is not None else None

    def set_meta(self, name: str, value: Any) -> None:
        sql = "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)"
        self._write(lambda con: con.execute(sql, (name, _dumps(value))))

    def __len__(self) -> int:
        """Answers in the table (an older cache's answers count once they have been read)."""
        return int(self._query("SELECT COUNT(*) FROM responses", ())[0][0])

    def close(self) -> None:
        self._writer.close()
        with self._lock:
            self._con.close()
        if self._legacy is not None:
            self._legacy.close()


def _legacy_cache(directory: Path) -> Any:
    """The diskcache of an older llmlabel in `directory`, or None (diskcache is imported only for one)."""
    if not (directory / "cache.db").exists():
        return None
    import diskcache

    # Opened as it was written: nothing may ever be evicted.
    return diskcache.Cache(str(directory), eviction_policy="none", size_limit=2**62, cull_limit=0, statistics=False)
