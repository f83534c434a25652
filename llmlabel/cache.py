"""Content-addressed response cache: every paid answer is stored once and reused by every later run."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import diskcache


def canonical(request: dict[str, Any]) -> bytes:
    """The request as canonical JSON: what is hashed for the cache key, and also the bytes sent."""
    return json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def cache_key(endpoint: str, request: dict[str, Any] | bytes) -> str:
    """sha256 of the endpoint and the canonical request: everything that changes the answer (model, messages,
    response format, temperature, seed, max_tokens, logprob options). The API key is never part of it."""
    body = request if isinstance(request, bytes) else canonical(request)
    return hashlib.sha256(endpoint.encode("utf-8") + b"\n" + body).hexdigest()


class ResponseCache:
    """diskcache (SQLite in WAL mode) is safe for several processes writing at once."""

    def __init__(self, directory: str) -> None:
        # Paid answers must never be evicted: no size limit, no eviction policy, no culling.
        self._cache = diskcache.Cache(directory, eviction_policy="none", size_limit=2**62, cull_limit=0,
                                      statistics=False)
        self._writer: threading.Thread | None = None
        self._pending: list[tuple[str, str, Any, Any]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._decoded: dict[str, dict[str, Any]] = {}  # get_many's stored JSON -> its (shared, read-only) dict

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self._cache.get(key)
        return None if raw is None else json.loads(raw)

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The cached answers among `keys`, in one SQL query per 500 keys instead of one diskcache call each
        (a warm rerun is mostly lookups). Reads diskcache's table directly: answers are short strings, which
        diskcache keeps inline (raw key, value in the row); anything else goes through the public `get`.
        Equal stored answers (a few labels, similar token counts) are decoded once and returned as one shared
        dict: callers must not change them."""
        found: dict[str, dict[str, Any]] = {}
        elsewhere: list[str] = []
        decoded = self._decoded
        try:
            con = self._cache._con  # noqa: SLF001 (diskcache's own connection, so its pragmas and WAL apply)
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                rows = con.execute(f"SELECT key, filename, value FROM Cache WHERE raw = 1 AND key IN "
                                   f"({','.join('?' * len(chunk))})", chunk).fetchall()
                for key, filename, value in rows:
                    if filename is None and isinstance(value, str):
                        hit = decoded.get(value)
                        if hit is None:
                            if len(decoded) >= 4096:
                                decoded.clear()
                            hit = decoded[value] = json.loads(value)
                        found[key] = hit
                    else:
                        elsewhere.append(key)
        except Exception:  # noqa: BLE001 (a diskcache layout this code does not know: the slow, public path)
            found, elsewhere = {}, keys
        for key in elsewhere:
            hit = self.get(key)
            if hit is not None:
                found[key] = hit
        return found

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
                    for key, raw, _, _ in batch:
                        self._cache.set(key, raw)
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


def _resolve(futs: list[Any], error: BaseException | None) -> None:
    for fut in futs:
        if fut.cancelled():
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
