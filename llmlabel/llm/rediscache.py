"""The response cache on a Redis server (`cache_dir: redis://host:6379/0`), shared by processes on many
machines: a local run, the shards of a job and a cluster's workers reuse each other's paid answers.

Same keys (`llm.encoding.cache_key`) and values (compact JSON) as the SQLite cache, under `llmlabel:answer:`;
endpoint metadata in the hash `llmlabel:meta`. Reads are one round trip (MGET per 500 keys for a chunk of rows);
writes go through the same batching writer thread as the SQLite cache (one pipeline per batch).

Identical requests in flight in two processes are paid once: before asking, a process takes a short lease on
the key (SET NX PX, renewed while its request runs); another process that finds the lease waits for the answer,
or for the lease to end (its holder failed or died), then takes it itself. Storing the answer ends the lease."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from llmlabel.errors import CacheError, ConfigError
from llmlabel.llm.cachewriter import BatchWriter
from llmlabel.llm.memo import Memo

ANSWER, LEASE, META = "llmlabel:answer:", "llmlabel:lease:", "llmlabel:meta"
LEASE_MS = 10_000  # a lease's life without renewal: how long others wait for a holder that died
_CHUNK = 500
# Delete or extend a lease only while it is still ours (it may have expired and been taken by another process).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisCache:
    shared = True

    def __init__(self, url: str, lease_ms: int = LEASE_MS) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigError(
                f"cache_dir {shown(url)} is a Redis server: install the client with pip install 'llmlabel[redis]'"
            ) from None
        try:
            self._r = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10)
            self._r.ping()
        except (redis.RedisError, ValueError) as e:
            raise ConfigError(
                f"cannot reach the Redis cache {shown(url)}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                "; start the server or fix cache_dir"
            ) from None
        self.url, self.lease_ms = url, lease_ms
        self._redis_error = redis.RedisError
        self._release = self._r.register_script(_RELEASE)
        self._renew = self._r.register_script(_RENEW)
        self._writer = BatchWriter("llmlabel-redis-cache", self._writer_connection)
        self._decoded: Memo[bytes | str, dict[str, Any]] = Memo(4096)

    @contextlib.contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        """A Redis error (the server stopped, the network gone) as one line: no traceback from the writer."""
        try:
            yield
        except self._redis_error as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CacheError(
                f"the Redis cache {shown(self.url)} failed while {what} ({why}); start the server again "
                "(or fix cache_dir)"
            ) from None

    # -- reads ---------------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        with self._failing("reading answers"):
            raw = self._r.get(ANSWER + key)
        return None if raw is None else json.loads(raw)

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The cached answers among `keys` (equal answers decoded once and shared: callers must not change them)."""
        found: dict[str, dict[str, Any]] = {}
        decoded = self._decoded
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            with self._failing("reading answers"):
                got = self._r.mget([ANSWER + k for k in chunk])
            for key, raw in zip(chunk, got):
                if raw is None:
                    continue
                hit = decoded.get(raw)
                if hit is None:
                    hit = decoded.put(raw, json.loads(raw))
                found[key] = hit
        return found

    # -- writes --------------------------------------------------------------------------------
    def _store(self, batch: list[tuple[str, str]]) -> None:
        pipe = self._r.pipeline(transaction=False)
        for key, raw in batch:
            pipe.set(ANSWER + key, raw)
            pipe.delete(LEASE + key)  # the answer is there: whoever waits on the lease reads it
        with self._failing("storing answers"):
            pipe.execute()

    def _writer_connection(self) -> tuple[Callable[[list[tuple[str, str]]], None], Callable[[], None]]:
        return self._store, lambda: None

    def set(self, key: str, value: dict[str, Any]) -> None:
        self._store([(key, _dumps(value))])

    async def aset(self, key: str, value: dict[str, Any]) -> None:
        await self._writer.put(key, _dumps(value))

    # -- one call per key across processes -----------------------------------------------------
    async def leased(self, key: str, call: Callable[[], Awaitable[dict[str, Any]]]) -> tuple[dict[str, Any], bool]:
        """The answer of `call` under a lease on `key`, or, when another process holds the lease, the answer
        it stores. Returns (answer, whether another process paid for it)."""
        lease, token = LEASE + key, uuid.uuid4().hex
        while True:
            # The answer is read with the lease taken: it may have been stored since the caller's cache miss.
            pipe = self._r.pipeline(transaction=False)
            pipe.set(lease, token, nx=True, px=self.lease_ms)
            pipe.get(ANSWER + key)
            with self._failing("taking a lease"):
                got, raw = pipe.execute()
            if raw is not None:
                if got:
                    self._quietly(self._release, lease, token)
                return json.loads(raw), True
            if got:
                renewing = asyncio.ensure_future(self._keep(lease, token))
                try:
                    return await call(), False  # the lease ends when the answer is stored (`_store`)
                except BaseException:
                    self._quietly(self._release, lease, token)  # no answer: a waiting process asks now
                    raise
                finally:
                    renewing.cancel()
            delay = 0.005
            while True:  # another process is asking: its answer, or its lease's end
                await asyncio.sleep(delay)
                delay = min(2 * delay, 0.2)
                pipe = self._r.pipeline(transaction=False)
                pipe.get(ANSWER + key)
                pipe.exists(lease)
                with self._failing("waiting for another process's answer"):
                    raw, held = pipe.execute()
                if raw is not None:
                    return json.loads(raw), True
                if not held:
                    break

    def _quietly(self, script: Any, lease: str, token: str, *args: Any) -> Any:
        """A lease script whose failure (the server gone) must not hide the answer or the error at hand: the
        lease then simply expires."""
        try:
            return script(keys=[lease], args=[token, *args])
        except self._redis_error:
            return 0

    async def _keep(self, lease: str, token: str) -> None:
        """Renew a lease while its request runs (retries and backoff may outlast one lease)."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            if not self._quietly(self._renew, lease, token, self.lease_ms):
                return

    # -- metadata ------------------------------------------------------------------------------
    def get_meta(self, name: str) -> Any:
        with self._failing("reading metadata"):
            raw = self._r.hget(META, name)
        return None if raw is None else json.loads(raw)

    def set_meta(self, name: str, value: Any) -> None:
        with self._failing("storing metadata"):
            self._r.hset(META, name, _dumps(value))

    def __len__(self) -> int:
        """Answers stored (a scan of the keys: for tests and tools, not the hot path)."""
        return sum(1 for _ in self._r.scan_iter(match=ANSWER + "*", count=1000))

    def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(self._redis_error):
            self._r.close()
