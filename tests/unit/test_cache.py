"""The response cache writes and reads diskcache's table directly on its fast paths: what it stores must be
exactly what diskcache itself would have stored, and the public API must be used whenever it cannot be."""

from __future__ import annotations

import asyncio
import json

import diskcache
import pytest

from llmlabel.llm.cache import ResponseCache


def _fill(cache: ResponseCache) -> None:
    async def go() -> None:
        await asyncio.gather(*(cache.aset(f"k{i}", {"content": f"v{i}"}) for i in range(300)))
        await cache.aset("k5", {"content": "replaced"})  # an existing key is updated, not duplicated
        await cache.aset("big", {"content": "x" * 40000})  # over diskcache's inline limit: a file
        await cache.aset("big", {"content": "y" * 40000})
        await cache.aset("was-big", {"content": "z" * 40000})
        await cache.aset("was-big", {"content": "short now"})

    asyncio.run(go())


@pytest.mark.parametrize("raw", [True, False], ids=["direct-sql", "public-api"])
def test_stored_answers_read_back_the_same_through_diskcache(tmp_path, raw):
    cache = ResponseCache(str(tmp_path / "c"))
    assert cache._raw_ok  # this diskcache's layout is the one the direct statements were written for
    cache._raw_ok = raw
    _fill(cache)
    assert cache.get("k5") == {"content": "replaced"} and cache.get("k299") == {"content": "v299"}
    assert cache.get("missing") is None
    assert cache.get("big") == {"content": "y" * 40000} and cache.get("was-big") == {"content": "short now"}
    assert cache.get_many(["k1", "missing", "big"]) == {"k1": {"content": "v1"}, "big": {"content": "y" * 40000}}
    cache.close()
    dc = diskcache.Cache(str(tmp_path / "c"))
    assert len(dc) == 302  # diskcache's own count (kept by its triggers) agrees
    assert json.loads(dc.get("k5")) == {"content": "replaced"} and json.loads(dc.get("was-big")) == {
        "content": "short now"
    }
    assert json.loads(dc.get("k1")) == {"content": "v1"}
    assert dc.check() == []  # no orphan or missing value files
    ref = diskcache.Cache(str(tmp_path / "ref"))  # the same answers stored by diskcache itself
    ref.set("k1", json.dumps({"content": "v1"}, separators=(",", ":")))
    ref.set("k5", json.dumps({"content": "v5"}, separators=(",", ":")))
    ref.set("k5", json.dumps({"content": "replaced"}, separators=(",", ":")))
    row = "SELECT key, raw, expire_time, access_count, tag, size, mode, filename, value FROM Cache WHERE key = ?"
    for key in ("k1", "k5"):
        assert dc._con.execute(row, (key,)).fetchall() == ref._con.execute(row, (key,)).fetchall()
    ref.close()
    files = [p for p in (tmp_path / "c").rglob("*.val")]
    assert len(files) == 1  # "big"'s file; "was-big"'s old file was removed
    dc.close()


def test_an_unknown_table_layout_uses_the_public_api(tmp_path):
    d = tmp_path / "c"
    dc = diskcache.Cache(str(d))
    dc._con.execute("ALTER TABLE Cache ADD COLUMN extra TEXT")
    dc.close()
    cache = ResponseCache(str(d))
    assert not cache._raw_ok
    _fill(cache)
    assert cache.get("k5") == {"content": "replaced"} and len(cache) == 302
    cache.close()
