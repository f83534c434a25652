"""Content-addressed response cache: every paid answer is stored once and reused by every later run."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import diskcache


def cache_key(endpoint: str, request: dict[str, Any]) -> str:
    """sha256 of canonical JSON of everything that changes the answer. The API key is never part of it."""
    blob = json.dumps({"endpoint": endpoint, "request": request}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """diskcache (SQLite in WAL mode) is safe for several processes writing at once."""

    def __init__(self, directory: str) -> None:
        # Paid answers must never be evicted: no size limit, no eviction policy.
        self._cache = diskcache.Cache(directory, eviction_policy="none", size_limit=2**62, statistics=False)

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self._cache.get(key)
        return None if raw is None else json.loads(raw)

    def set(self, key: str, value: dict[str, Any]) -> None:
        self._cache.set(key, json.dumps(value, separators=(",", ":")))

    def get_meta(self, name: str) -> Any:
        return self._cache.get(f"meta:{name}")

    def set_meta(self, name: str, value: Any) -> None:
        self._cache.set(f"meta:{name}", value)

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()
