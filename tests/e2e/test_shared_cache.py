"""The Redis response cache (`cache_dir: redis://...`) against a real redis-server started here: the SQLite
cache's interface and keys, one paid call per answer across processes (a lease on the key), and clear errors.

Skipped when no `redis-server` binary is installed, unless LLMLABEL_REQUIRE_REDIS=1 (CI installs it)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from conftest import free_port, read_jsonl, run_cli, write_config, write_corpus
from fakeserver import FakeLLM

pytestmark = pytest.mark.slow


def test_backend_stores_reads_and_shares_decoded_answers(redis_url):
    from llmlabel.llm.cache import open_cache
    from llmlabel.llm.rediscache import RedisCache

    cache = open_cache(redis_url)
    assert isinstance(cache, RedisCache) and cache.shared

    async def fill() -> None:
        await asyncio.gather(*(cache.aset(f"k{i}", {"content": f"v{i % 3}"}) for i in range(700)))

    asyncio.run(fill())
    cache.set("one", {"content": "x"})
    assert cache.get("k5") == {"content": "v2"} and cache.get("missing") is None
    many = cache.get_many([f"k{i}" for i in range(1000)] + ["one"])  # more than one MGET's worth
    assert len(many) == 701 and many["k0"] is many["k3"]  # equal answers decoded once
    assert len(cache) == 701
    cache.set_meta("format:x", "json_schema")
    cache.close()
    again = open_cache(redis_url)  # another process finds them
    assert again.get("one") == {"content": "x"} and again.get_meta("format:x") == "json_schema"
    again.close()


def test_lease_makes_identical_calls_one(redis_url):
    """Two caches (as two processes) ask the same key at once: one call; a failed call lets the other ask."""
    from llmlabel.llm.rediscache import RedisCache

    a, b = RedisCache(redis_url), RedisCache(redis_url, lease_ms=600)
    calls = []
    started = asyncio.Event()
    renewals = []
    renew = b._renew  # counted: the call below answers once b has renewed its lease past the lease's first life

    def counted_renew(*args, **kwargs):
        renewals.append(1)
        return renew(*args, **kwargs)

    b._renew = counted_renew

    async def slow(n: int) -> dict[str, str]:
        calls.append(n)
        started.set()
        if n == 1:  # b renews every lease_ms/3: four renewals outlast the lease taken at the start
            deadline = asyncio.get_running_loop().time() + 60  # a deadlock guard, not a timing assertion
            while len(renewals) < 4:
                assert asyncio.get_running_loop().time() < deadline, "b's lease was not renewed"
                await asyncio.sleep(0.01)
        return {"content": f"from {n}"}

    async def ask(cache: RedisCache, n: int) -> tuple[dict[str, str], bool]:
        payload, elsewhere = await cache.leased("k", lambda: slow(n))
        if not elsewhere:
            await cache.aset("k", payload)
        return payload, elsewhere

    async def both() -> list[tuple[dict[str, str], bool]]:
        first = asyncio.ensure_future(ask(b, 1))
        await started.wait()  # b holds the lease and its call runs: a waits for its answer
        second = asyncio.ensure_future(ask(a, 2))
        return [await first, await second]

    (p1, e1), (p2, e2) = asyncio.run(both())
    assert calls == [1] and p1 == p2 == {"content": "from 1"} and (e1, e2) == (False, True)

    async def after_failure() -> tuple[dict[str, str], bool]:
        failing_started, fail_now = asyncio.Event(), asyncio.Event()

        async def failing() -> dict[str, str]:
            failing_started.set()
            await fail_now.wait()
            raise RuntimeError("endpoint down")

        first = asyncio.ensure_future(a.leased("f", failing))
        await failing_started.wait()  # a holds the lease for "f"
        second = asyncio.ensure_future(b.leased("f", lambda: slow(3)))  # waits, then asks once it is released
        fail_now.set()
        with pytest.raises(RuntimeError):
            await first
        return await second

    assert asyncio.run(after_failure()) == ({"content": "from 3"}, False)
    assert calls == [1, 3]
    a.close()
    b.close()


def test_two_processes_sharing_redis_pay_each_answer_once(tmp_path, redis_url):
    """Two `llmlabel label` processes on the same corpus at once (different outputs), one Redis cache: every
    answer is paid once; then a sharded run on another output pays nothing."""
    n = 80
    fake = FakeLLM(latency=0.05).start()
    try:
        write_corpus(tmp_path / "in.csv", n)
        cfg = write_config(tmp_path / "c.yaml", fake.base_url, cache_dir=redis_url)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "llmlabel", "label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o",
                 str(tmp_path / f"o{k}.jsonl"), "-q"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
            )
            for k in range(2)
        ]  # fmt: skip
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        assert fake.requests == n  # each answer paid once, by one of the two
        ledgers = [json.loads((tmp_path / f"o{k}.jsonl.ledger.json").read_text())["runs"][-1] for k in range(2)]
        assert sum(r["requests"] for r in ledgers) == n
        assert sum(r["judges"]["a"]["cache_hits"] for r in ledgers) == n
        assert read_jsonl(tmp_path / "o0.jsonl") == read_jsonl(tmp_path / "o1.jsonl")
        for i in range(2):
            r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / f"s.{i}.jsonl"),
                        "--shard", f"{i}/2", "-q")  # fmt: skip
            assert r.returncode == 0, r.stderr
        assert fake.requests == n
    finally:
        fake.stop()


def test_unreachable_redis_is_one_line(tmp_path, fake):
    write_corpus(tmp_path / "in.csv", 3)
    port = free_port()  # nothing listens there
    cfg = write_config(tmp_path / "c.yaml", fake.base_url, cache_dir=f"redis://:s3cret@127.0.0.1:{port}/0")
    r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"), "-q")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("llmlabel: error: cannot reach the Redis cache") and "s3cret" not in r.stderr, last
    assert fake.requests == 0
