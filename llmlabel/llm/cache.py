"""Content-addressed response cache: every paid answer is stored once and reused by every later run."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import diskcache

from llmlabel.llm.memo import Memo


class ResponseCache:
    """diskcache (SQLite in WAL mode) is safe for several processes writing at once."""

    def __init__(self, directory: str) -> None:
        # Paid answers must never be evicted: no size limit, no eviction policy, no culling.
        self._cache = diskcache.Cache(
            directory, eviction_policy="none", size_limit=2**62, cull_limit=0, statistics=False
        )
        self._writer: threading.Thread | None = None
        self._pending: list[tuple[str, str, Any, Any]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._inline_limit = self._cache.disk_min_file_size  # shorter text values are stored in the row
        self._raw_ok = _known_layout(self._cache)
        self._decoded: Memo[str, dict[str, Any]] = Memo(4096)  # get_many's stored JSON -> its shared dict

    def get(self, key: str) -> dict[str, Any] | None:
        if self._raw_ok:  # one indexed SELECT; diskcache's get adds ~50 us of Python to every cold request
            rows = self._cache._con.execute(_SELECT_ONE, (key,)).fetchall()  # noqa: SLF001
            if not rows:
                return None
            filename, value = rows[0]
            if filename is None and isinstance(value, str):
                return json.loads(value)
        raw = self._cache.get(key)
        return None if raw is None else json.loads(raw)

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The cached answers among `keys`, in one SQL query per 500 keys instead of one diskcache call each
        (a warm rerun is mostly lookups). Reads diskcache's table directly: answers are short strings, which
        diskcache keeps inline (raw key, value in the row); anything else goes through the public `get`.
        Equal stored answers (a few labels, similar token counts) are decoded once and returned as one shared
        dict: callers must not change them."""
        found: dict[str, dict[str, Any]] = {}
        elsewhere: list[str] = [] if self._raw_ok else keys  # a layout this code does not know: public `get`
        decoded = self._decoded
        for key, filename, value in self._rows(keys, "value") if self._raw_ok else ():
            if filename is None and isinstance(value, str):
                hit = decoded.get(value)
                if hit is None:
                    hit = decoded.put(value, json.loads(value))
                found[key] = hit
            else:
                elsewhere.append(key)
        for key in elsewhere:
            hit = self.get(key)
            if hit is not None:
                found[key] = hit
        return found

    def _rows(self, keys: list[str], *columns: str) -> Any:
        """(key, filename, *columns) of the stored rows among `keys`: one query per 500 keys, on diskcache's
        own connection (its pragmas and WAL apply)."""
        con, cols = self._cache._con, ", ".join(("key", "filename", *columns))  # noqa: SLF001
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            yield from con.execute(
                f"SELECT {cols} FROM Cache WHERE raw = 1 AND key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()

    def set(self, key: str, value: dict[str, Any]) -> None:
        self._cache.set(key, json.dumps(value, separators=(",", ":")))

    async def aset(self, key: str, value: dict[str, Any]) -> None:
        """Store an answer from async code. One writer thread commits whatever has queued up in a single
        transaction (one commit per batch, not per answer, and off the event loop). Awaited, so an answer is
        on disk before its row is reported done."""
        import asyncio

        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._cond:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_batches, name="llmlabel-cache", daemon=True)
                self._writer.start()
            self._pending.append((key, json.dumps(value, separators=(",", ":")), loop, fut))
            self._cond.notify()
        await fut

    def _write_batches(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                batch, self._pending = self._pending, []
                if not batch and self._closing:
                    return
            error: BaseException | None = None
            try:
                with self._cache.transact():
                    self._store([(key, raw) for key, raw, _, _ in batch])
            except BaseException as e:  # reported to every waiter; the run decides what to do
                error = e
            by_loop: dict[Any, list[Any]] = {}
            for _, _, loop, fut in batch:
                by_loop.setdefault(loop, []).append(fut)
            for loop, futs in by_loop.items():  # one wake-up of each loop per batch, not one per answer
                try:
                    loop.call_soon_threadsafe(_resolve, futs, error)
                except RuntimeError:  # that loop is closed: nobody waits any more (the answers are stored)
                    pass

    def _store(self, items: list[tuple[str, str]]) -> None:
        """Write answers inside the caller's transaction: a few statements for the whole batch, as diskcache
        would store them one by one (inline text rows: raw key, MODE_RAW, no file; an existing key is updated,
        so diskcache's count triggers stay right). Anything else goes through the public `set`."""
        inline = [(k, v) for k, v in items if len(v) < self._inline_limit]
        rest = [(k, v) for k, v in items if len(v) >= self._inline_limit]
        if inline and self._raw_ok:
            con, now = self._cache._con, time.time()  # noqa: SLF001
            present = dict(self._rows([k for k, _ in inline]))  # key -> filename
            new = {k: v for k, v in inline if k not in present}  # a repeated key in a batch: the last value
            old = {k: v for k, v in inline if present.get(k, 1) is None}
            rest += [(k, v) for k, v in inline if k in present and present[k] is not None]  # file-backed
            if new:
                con.executemany(_INSERT, [(k, now, now, v) for k, v in new.items()])
            if old:
                con.executemany(_UPDATE, [(now, now, v, k) for k, v in old.items()])
        else:
            rest = items
        for key, raw in rest:
            self._cache.set(key, raw)

    def get_meta(self, name: str) -> Any:
        return self._cache.get(f"meta:{name}")

    def set_meta(self, name: str, value: Any) -> None:
        self._cache.set(f"meta:{name}", value)

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        if self._writer is not None:
            with self._cond:
                self._closing = True
                self._cond.notify()
            self._writer.join()
            self._writer = None
        self._cache.close()


# diskcache 5's table, as its own get/set use it for a str key and a short str value (raw = 1, MODE_RAW = 1).
_COLUMNS = [
    "rowid",
    "key",
    "raw",
    "store_time",
    "expire_time",
    "access_time",
    "access_count",
    "tag",
    "size",
    "mode",
    "filename",
    "value",
]
_SELECT_ONE = "SELECT filename, value FROM Cache WHERE key = ? AND raw = 1"
_INSERT = (
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, "
    "filename, value) VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, 1, NULL, ?)"
)
_UPDATE = (
    "UPDATE Cache SET store_time = ?, expire_time = NULL, access_time = ?, access_count = 0, tag = NULL, "
    "size = 0, mode = 1, filename = NULL, value = ? WHERE key = ? AND raw = 1"
)


def _known_layout(cache: diskcache.Cache) -> bool:
    """Whether the Cache table is the one the statements above were written for (else: the public API)."""
    try:
        cols = [r[1] for r in cache._con.execute("PRAGMA table_info(Cache)").fetchall()]  # noqa: SLF001
        return cols == _COLUMNS and diskcache.core.MODE_RAW == 1
    except Exception:  # noqa: BLE001
        return False


def _resolve(futs: list[Any], error: BaseException | None) -> None:
    for fut in futs:
        if fut.cancelled():
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
