"""The one memo helper of the hot path: a small bounded map, owned by the object whose work it saves.

A memo lives on an instance (a client, an encoder, a cache), never at module level, so it is dropped with
its owner and two jobs never share entries. Values must be treated as read-only by whoever gets them.

It is a dict, so a lookup is `dict.get` in C: the memos sit on paths run once per answer, where a Python-level
method (or an LRU's reordering on every hit) would cost more than some of them save. When full, the oldest
entry goes first (insertion order); the working sets here (a few prompt frames, a handful of distinct
answers) are far below the bounds, so the eviction order rarely matters."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING = object()


class Memo(dict[K, V]):
    """At most `size` entries; read with `get` (or `in`, `[]`), write only with `put`."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: K, value: V) -> V:
        """Remember `value` for `key` (dropping the oldest entries beyond `size`) and return it."""
        self[key] = value
        while len(self) > self.size:
            del self[next(iter(self))]
        return value

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value for `key`, made (and remembered) on a miss."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            return self.put(key, make())
        return value  # type: ignore[return-value]
