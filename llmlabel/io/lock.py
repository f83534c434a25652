"""One process at a time: an OS lock (fcntl.flock) on a lock file holding its holder's pid.

Used for one writer per output (OUTPUT.lock, held while a run writes the output and its part file: two runs
would pay every row twice and interleave their part files) and one server per state dir. The OS releases a
flock when its holder dies (even by kill -9), so a stale lock file never blocks anyone."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from llmlabel.errors import InputError
from llmlabel.io.paths import lock_path


class Locked(Exception):
    """Another process holds the lock; `holder` is its pid as written in the file, or "unknown"."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return str(int(os.pread(fd, 32, 0).split()[0]))
    return "unknown"


class FileLock:
    """An exclusive lock on `path` for this process. With `remove`, the file is deleted on release (while still
    locked), so a lock file left behind always means a live holder."""

    def __init__(self, path: str | Path, remove: bool = False, wait: bool = False) -> None:
        self.path, self.remove, self.wait = Path(path), remove, wait
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise Locked (with `wait`: wait for it); a no-op without fcntl (not POSIX)."""
        try:
            import fcntl
        except ImportError:
            return
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except BlockingIOError:
                who = _holder(fd)
                os.close(fd)
                raise Locked(who) from None
            # A holder before us that removes the file when done: make sure we locked the file at the path.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        if self.remove:
            self.path.unlink(missing_ok=True)  # while still locked: a newcomer then creates and locks a fresh file
        os.close(self._fd)  # closing the file releases the lock
        self._fd = None


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[None]:
    """Hold the output's lock for the block, or raise one line naming the output and the process holding it."""
    lock = FileLock(lock_path(output), remove=True)
    try:
        lock.acquire()
    except Locked as e:
        raise InputError(
            f"{output} is being written by another llmlabel run (pid {e.holder}); wait for it to finish or stop "
            "it, or choose another -o path"
        ) from None
    try:
        yield
    finally:
        lock.release()
