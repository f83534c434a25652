"""Shards of a corpus: `--shard I/N` labels only the rows whose id hashes to I of N.

The hash is the first 8 bytes of the id's SHA-256 (not Python's `hash`, which changes from process to
process), so every machine and every rerun puts a row in the same shard, whatever the input's row order."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from llmlabel.errors import InputError

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def shard_of(row_id: str, count: int) -> int:
    """The shard (0-based) of a row id among `count` shards."""
    return int.from_bytes(hashlib.sha256(row_id.encode("utf-8", "surrogatepass")).digest()[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """`I/N` with 0 <= I < N, as `--shard` takes it."""
        m = _SPEC.fullmatch(spec)
        if not m:
            raise InputError(f"--shard {spec!r}: give it as I/N, e.g. --shard 0/4 for the first of 4 shards")
        index, count = int(m[1]), int(m[2])
        if count < 1 or index >= count:
            raise InputError(
                f"--shard {spec}: the shard number must be from 0 to N-1 and N at least 1 (e.g. 0/4 ... 3/4)"
            )
        return cls(index, count)

    def has(self, row_id: str) -> bool:
        return self.count == 1 or shard_of(row_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
