"""Resources that fail in the middle of a run: the response cache's disk fills up or is read-only, its Redis
server stops, the output's disk fills up. Each is one line saying what to fix; the answers already paid for
are kept (in the part file, when the cache cannot take them) and a rerun pays for none of them again."""

from __future__ import annotations

import os
import sqlite3

import pytest
from conftest import (
    NearlyFull,
    disk_full,
    label_main,
    one_line_error,
    part_file_on_a_full_disk,
    read_jsonl,
    run_cli,
    start_redis,
    write_config,
    write_corpus,
)
from fakeserver import FakeLLM

pytestmark = pytest.mark.usefixtures("quiet_fake_server")


def _ids(path):
    return [r["id"] for r in read_jsonl(path)]


@pytest.fixture
def small_cache_disk(monkeypatch):
    """The cache's SQLite file may grow to a few pages only: SQLite's own "database or disk is full"
    (SQLITE_FULL), as on a full disk. Undo it with monkeypatch.undo()."""
    from llmlabel.llm import cache

    real = cache._connect

    def connect(path):
        con = real(path)
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        con.execute(f"PRAGMA max_page_count={max(pages, 3) + 3}")
        return con

    monkeypatch.setattr(cache, "_connect", connect)


@pytest.mark.slow
def test_cache_disk_full_keeps_the_paid_answers_in_the_rows(tmp_path, fake, capsys, monkeypatch, small_cache_disk):
    n = 400
    inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    write_corpus(inp, n)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    one_line_error(rc, err, f"cannot write the response cache {tmp_path / 'cache'}", "database or disk is full",
                   "kept in o.jsonl.part", "rerun the same command")  # fmt: skip
    paid = fake.requests
    assert 0 < paid < n, paid  # it stopped starting rows once the cache failed...
    kept = _ids(tmp_path / "o.jsonl.part")
    assert len(kept) == len(set(kept)) == paid  # ...and every answer received is in a row
    monkeypatch.undo()  # space freed
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    assert sorted(_ids(out)) == sorted(f"r{i}" for i in range(n))
    assert fake.requests == n  # no answer paid twice


@pytest.mark.slow
def test_cache_disk_full_with_several_judges_and_retries(tmp_path, capsys, monkeypatch, small_cache_disk):
    """Two judges, faults (re-asks, retries): rows in flight when the cache fails finish with both answers."""
    fake = FakeLLM(faults=0.2, fault_kinds=("500", "garbage")).start()
    try:
        n = 60
        inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
        write_corpus(inp, n)
        judges = [
            {"name": name, "model": f"fake-{name}", "base_url": fake.base_url, "concurrency": 4, "timeout": 5}
            for name in ("a", "b")
        ]
        cfg = write_config(tmp_path / "c.yaml", None, judges=judges)
        rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
        one_line_error(rc, err, "cannot write the response cache", "o.jsonl.part")
        rows = read_jsonl(tmp_path / "o.jsonl.part")
        assert rows and all(set(r["judges"]) == {"a", "b"} for r in rows)
        monkeypatch.undo()
        answered = fake.completions
        rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
        assert rc == 0 and len(read_jsonl(out)) == n, err
        # The rerun asked only for the rows not in the part file: 2 answers a row (faults aside).
        assert fake.completions - answered <= 2 * (n - len(rows)) + 30
    finally:
        fake.stop()


@pytest.mark.parametrize("message", ["attempt to write a readonly database", "unable to open database file"])
def test_read_only_cache_is_one_line_with_its_path(tmp_path, fake, capsys, monkeypatch, message):
    from llmlabel.llm import cache

    def readonly(path):
        raise sqlite3.OperationalError(message)

    monkeypatch.setattr(cache, "_connect", readonly)
    write_corpus(tmp_path / "in.csv", 5)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    one_line_error(rc, err, f"the response cache {tmp_path / 'cache' / 'responses.sqlite3'}", message, "writable")
    assert fake.requests == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_cache_directory(tmp_path, fake, capsys):
    write_corpus(tmp_path / "in.csv", 5)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache").chmod(0o555)
    try:
        rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    finally:
        (tmp_path / "cache").chmod(0o755)
    one_line_error(rc, err, str(tmp_path / "cache"))
    assert fake.requests == 0


def test_cache_writer_that_cannot_connect_fails_every_waiter(tmp_path):
    """The writer thread's own connection fails (the file became unreadable): every answer waiting on it gets
    the error (none waits forever) and the thread prints no traceback."""
    import asyncio

    from llmlabel.errors import CacheError
    from llmlabel.llm import cache

    c = cache.ResponseCache(str(tmp_path / "c"))

    def broken() -> None:
        raise c.failed("write", sqlite3.OperationalError("disk I/O error"))

    c._writer._connect = broken

    async def store() -> list[object]:
        return await asyncio.wait_for(
            asyncio.gather(*(c.aset(f"k{i}", {"content": "x"}) for i in range(5)), return_exceptions=True), 10
        )

    got = asyncio.run(store())
    assert all(isinstance(e, CacheError) and "disk I/O error" in str(e) for e in got), got
    c.close()


# -- the output's disk -----------------------------------------------------------------------------------
def test_part_file_on_a_nearly_full_disk_keeps_whole_rows(tmp_path):
    from llmlabel.errors import OutputError
    from llmlabel.io.output import PartFile, line

    part = PartFile(tmp_path / "o.jsonl.part")
    part.open({"fp": 1})
    rows = [line({"_i": i, "id": f"r{i}", "label": "x", "error": None}) for i in range(4)]
    part.append_lines(rows[:2])
    part._fh = NearlyFull(part._fh, room=len(rows[2]) // 2)  # half of the next row fits
    with pytest.raises(OutputError, match="o.jsonl.part: No space left on device; the rows finished before are safe"):
        part.append_lines([rows[2]])
    part._fh.room = 10**6  # some space again: a later row must not follow the cut one
    with pytest.raises(OutputError):
        part.append_lines([rows[3]])
    part.close()
    assert (tmp_path / "o.jsonl.part").read_bytes() == b"".join(rows[:2])  # whole rows only
    again = PartFile(tmp_path / "o.jsonl.part")
    again.load()
    assert again.done == {"r0", "r1"}


@pytest.mark.slow
def test_disk_full_on_the_part_file_and_the_ledger_keeps_the_part_file_line(tmp_path, fake, capsys, monkeypatch):
    """The same full disk fails the ledger written at the stop: the line still names the part file."""
    from llmlabel.llm.ledger import Ledger

    inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    write_corpus(inp, 30)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    part_file_on_a_full_disk(monkeypatch, room=2000)
    monkeypatch.setattr(Ledger, "save", disk_full)
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    one_line_error(rc, err, f"cannot write {tmp_path / 'o.jsonl.part'}", "No space left", "safe", "rerun")
    kept = len(read_jsonl(tmp_path / "o.jsonl.part"))
    assert kept > 0
    monkeypatch.undo()
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0 and len(read_jsonl(out)) == 30, err
    # Answers in flight at the failure were received and cached, not cancelled: none is paid twice.
    assert fake.requests == 30


def test_atomic_write_failure_names_the_file(tmp_path, monkeypatch):
    from pathlib import Path

    from llmlabel.io.files import atomic_write

    monkeypatch.setattr(Path, "write_text", disk_full)  # as write() raises it: no file name
    with pytest.raises(OSError) as e:
        atomic_write(tmp_path / "o.jsonl.part.json", "{}")
    assert e.value.filename == str(tmp_path / "o.jsonl.part.json")
    assert not list(tmp_path.iterdir())


# -- a Redis cache that stops mid-run ---------------------------------------------------------------------
@pytest.fixture
def own_redis():
    """A redis-server of this test's own (it is stopped mid-run), and how to stop it."""
    proc, port = start_redis()

    def stop() -> None:
        proc.kill()
        proc.wait(10)

    yield f"redis://127.0.0.1:{port}/0", stop
    if proc.poll() is None:
        stop()


@pytest.mark.slow
def test_redis_stopped_mid_run_is_one_line_and_keeps_the_answers(tmp_path, own_redis):
    url, stop = own_redis
    n = 80
    fake = FakeLLM().start()
    fake.on_request = lambda k: stop() if k == 20 else None  # the server goes while answers are in flight
    try:
        inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
        write_corpus(inp, n)
        cfg = write_config(tmp_path / "c.yaml", fake.base_url, cache_dir=url)
        r = run_cli("label", str(inp), "-c", str(cfg), "-o", str(out), "-q")
        one_line_error(r.returncode, r.stderr, f"the Redis cache {url} failed", "start the server again",
                       "kept in o.jsonl.part")  # fmt: skip
        assert "ConnectionError" not in r.stderr and "Exception in thread" not in r.stderr, r.stderr
        kept = _ids(tmp_path / "o.jsonl.part")
        assert len(kept) == len(set(kept)) == fake.requests  # every answer received is in a row
        # Rerun on a fresh local cache (the Redis server lost its answers): only the missing rows are paid.
        cfg = write_config(tmp_path / "c.yaml", fake.base_url)
        paid = fake.requests
        r = run_cli("label", str(inp), "-c", str(cfg), "-o", str(out), "-q")
        assert r.returncode == 0, r.stderr
        assert sorted(_ids(out)) == sorted(f"r{i}" for i in range(n))
        assert fake.requests - paid == n - len(kept)
    finally:
        fake.stop()
