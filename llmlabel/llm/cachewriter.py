"""The response caches' one write path: a thread that commits answers in batches (llm/cache.py's SQLite table and
llm/rediscache.py's Redis server both store through it)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class BatchWriter:
    """Stores answers from async code: one thread commits whatever has queued up in a single batch (one
    commit per batch, not per answer, and off the event loop), then wakes each waiting loop once."""

    def __init__(self, name: str, connect: Callable[[], tuple[Callable[[list[tuple[str, str]]], None], Any]]) -> None:
        # connect() runs on the writer thread: (commit a batch of (key, json), close).
        self._name, self._connect = name, connect
        self._writer: threading.Thread | None = None
        self._pending: list[tuple[str, str, Any, Any]] = []
        self._cond = threading.Condition()
        self._closing = False

    async def put(self, key: str, raw: str) -> None:
        """Awaited, so an answer is stored before its row is reported done."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._cond:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_batches, name=self._name, daemon=True)
                self._writer.start()
            self._pending.append((key, raw, loop, fut))
            self._cond.notify()
        await fut

    def _write_batches(self) -> None:
        try:
            commit, close = self._connect()
        except BaseException as e:  # every answer waiting (and any later one) gets the error: none waits forever
            err = e

            def commit(batch: list[tuple[str, str]]) -> None:
                raise err

            def close() -> None:
                pass

        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    batch, self._pending = self._pending, []
                    if not batch and self._closing:
                        return
                self._commit(commit, batch)
        finally:
            close()

    @staticmethod
    def _commit(commit: Callable[[list[tuple[str, str]]], None], batch: list[tuple[str, str, Any, Any]]) -> None:
        error: BaseException | None = None
        try:
            commit([(key, raw) for key, raw, _, _ in batch])
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

    def close(self) -> None:
        if self._writer is not None:
            with self._cond:
                self._closing = True
                self._cond.notify()
            self._writer.join()
            self._writer = None


def _resolve(futs: list[Any], error: BaseException | None) -> None:
    for fut in futs:
        if fut.cancelled():
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
