"""Atomic file writes: written next to the target, then renamed into place, so a reader (or a rerun after a
kill) sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; renamed over `path` when the block succeeds, deleted
    when it fails. The name is the writer's own (process and thread), so concurrent writers of one path (two
    processes assembling the same model file) never write into each other's file: the last rename wins."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not e.filename:
            e.filename = str(path)  # a full disk fails a write(), which names no file: say which one
        raise


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Replace `path`'s content with `data` (text is written as UTF-8) atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
