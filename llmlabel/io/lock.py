"""One writer per output: an OS lock on OUTPUT.lock, held while a run writes the output and its part file.

Two runs on one output would pay every row twice and interleave their part files. The lock is an fcntl.flock,
so the OS releases it when its holder dies (even by kill -9): a stale lock file never blocks a rerun."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from llmlabel.errors import InputError
from llmlabel.io.paths import lock_path


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).split()[0])
        return f"pid {pid}"
    return "pid unknown"


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[None]:
    """Hold the output's lock for the block, or raise one line naming the output and the process holding it."""
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            os.close(fd)
            raise InputError(
                f"{output} is being written by another llmlabel run ({who}); wait for it to finish or stop it, "
                "or choose another -o path"
            ) from None
        # The holder before us removes the file when it finishes: make sure we locked the file at the path.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked: a newcomer then creates and locks a fresh file
        os.close(fd)
