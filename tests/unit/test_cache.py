"""The response cache: its own SQLite table, batched writes, shared decoded answers, several writers at once,
and caches written by older versions (diskcache) still answering."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import diskcache

from llmlabel.llm.cache import FILENAME, ResponseCache


def _fill(cache: ResponseCache) -> None:
    async def go() -> None:
        await asyncio.gather(*(cache.aset(f"k{i}", {"content": f"v{i}"}) for i in range(300)))
        await cache.aset("k5", {"content": "replaced"})  # an existing key is updated, not duplicated
        await cache.aset("big", {"content": "x" * 40000})
        await cache.aset("big", {"content": "y" * 40000})

    asyncio.run(go())


def test_answers_are_stored_and_read_back(tmp_path):
    cache = ResponseCache(str(tmp_path / "c"))
    _fill(cache)
    assert cache.get("k5") == {"content": "replaced"} and cache.get("k299") == {"content": "v299"}
    assert cache.get("missing") is None and cache.get("big") == {"content": "y" * 40000}
    keys = [f"k{i}" for i in range(1200)] + ["missing", "big"]  # more than one query's worth of keys
    many = cache.get_many(keys)
    assert len(many) == 301 and many["k1"] == {"content": "v1"} and many["big"] == {"content": "y" * 40000}
    assert len(cache) == 301
    cache.close()
    again = ResponseCache(str(tmp_path / "c"))  # on disk: a new process finds them
    assert again.get("k5") == {"content": "replaced"} and len(again) == 301
    again.close()
    con = sqlite3.connect(tmp_path / "c" / FILENAME)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM responses WHERE key = 'k1'").fetchone()[0] == '{"content":"v1"}'
    con.close()


def test_equal_answers_are_decoded_once(tmp_path):
    cache = ResponseCache(str(tmp_path / "c"))
    cache.set("a", {"content": "same"})
    cache.set("b", {"content": "same"})
    many = cache.get_many(["a", "b"])
    assert many["a"] is many["b"]
    cache.close()


def test_two_caches_write_the_same_directory_at_once(tmp_path):
    caches = [ResponseCache(str(tmp_path / "c")) for _ in range(2)]

    def write(n: int) -> None:
        async def go() -> None:
            await asyncio.gather(*(caches[n].aset(f"{n}-{i}", {"i": i}) for i in range(200)))

        asyncio.run(go())

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(caches[0]) == 400 and caches[1].get("0-199") == {"i": 199}
    for c in caches:
        c.close()


def test_metadata(tmp_path):
    cache = ResponseCache(str(tmp_path / "c"))
    assert cache.get_meta("format:x") is None
    cache.set_meta("format:x", "json_object")
    assert cache.get_meta("format:x") == "json_object" and len(cache) == 0
    cache.close()


def test_a_cache_written_by_an_older_version_still_answers(tmp_path):
    """Older versions stored answers in diskcache (the same keys, compact JSON): they are read and copied."""
    d = tmp_path / "c"
    old = diskcache.Cache(str(d))
    old.set("k1", '{"content":"v1"}')
    old.set("big", '{"content":"' + "z" * 40000 + '"}')  # diskcache kept this one in a file
    old.set("meta:format:x", "text")
    old.close()
    cache = ResponseCache(str(d))
    assert cache.get_many(["k1", "nope"]) == {"k1": {"content": "v1"}}
    assert cache.get("big") == {"content": "z" * 40000} and cache.get("nope") is None
    assert cache.get_meta("format:x") == "text"
    assert len(cache) == 2  # both copied into the table
    cache.close()
