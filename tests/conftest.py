from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from fakeserver import FakeLLM

LABELS = ["positive", "negative"]


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLMLABEL_MODEL"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def fake():
    server = FakeLLM().start()
    yield server
    server.stop()


def write_corpus(path: Path, n: int, fmt: str = "csv") -> list[dict[str, str]]:
    rows = [
        {"id": f"r{i}", "text": f"review number {i}: the product is {'great' if i % 3 else 'awful'}"} for i in range(n)
    ]
    if fmt == "csv":
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["id", "text"])
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def write_config(path: Path, base_url: str | None, judges: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "task": {
            "name": "sentiment",
            "instructions": "Is the review positive or negative?",
            "labels": {"positive": "happy", "negative": "unhappy"},
        },
        "cache_dir": str(path.parent / "cache"),
    }
    if judges is None and base_url:
        judges = [
            {
                "name": "a",
                "model": "fake-a",
                "base_url": base_url,
                "concurrency": 8,
                "timeout": 5,
                "price_per_million": {"input": 1.0, "output": 2.0},
            }
        ]
    if judges:
        cfg["judges"] = judges
    cfg.update(extra)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "llmlabel", *args], capture_output=True, text=True, env=e, timeout=timeout, cwd=cwd
    )


def start_cli(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    """`llmlabel ARGS` in the background (stderr piped, as text), for tests that act while it runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.Popen(
        [sys.executable, "-m", "llmlabel", *args], stdout=stdout, stderr=subprocess.PIPE, text=True, env=env
    )


def start_when_busy(server: Any, requests: int, *args: str) -> subprocess.Popen[str]:
    """`llmlabel ARGS` in the background (stdout not piped), returned once `server` (a fake server counting its
    `requests`) has seen `requests` requests, or once it has exited, or after 60 s."""
    p = start_cli(*args, stdout=None)
    t = time.time()
    while server.requests < requests and p.poll() is None and time.time() - t < 60:
        time.sleep(0.01)
    return p


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The llmlabel command in this process (an error path needs no subprocess): (exit code, stdout, stderr)."""
    from llmlabel.cli.main import main

    capsys.readouterr()
    try:
        rc = main(list(args))
    except SystemExit as e:  # argparse's usage errors
        rc = e.code if isinstance(e.code, int) else 2
    out = capsys.readouterr()
    return rc, out.out, out.err


def label_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`llmlabel label ARGS -q` in this process: (exit code, stderr)."""
    rc, _, err = run_main(capsys, "label", *args, "-q")
    return rc, err


def one_line_error(rc: int | None, err: str, *needles: str) -> str:
    """The run failed with one `llmlabel: error:` line holding every needle, and no traceback; returns it."""
    assert rc not in (0, None), err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("llmlabel: error: "), err
    for n in needles:
        assert n in last, last
    return last


def assert_one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    return one_line_error(r.returncode, r.stderr, *needles)


@pytest.fixture
def quiet_fake_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """For in-process CLI runs: the fake server runs in this process too, and its report of a client that hung
    up (a run stopping) would land in the captured stderr that the tests check for tracebacks."""
    import socketserver

    monkeypatch.setattr(socketserver.BaseServer, "handle_error", lambda self, request, address: None)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


# -- a full disk ----------------------------------------------------------------------------------------
def disk_full(*args: Any, **kwargs: Any) -> NoReturn:
    """A write to a full disk, failing as the OS says it (ENOSPC, no file name): set it over a writer."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class NearlyFull:
    """A file on a disk with `room` bytes left: a write takes what fits and says so (as write(2) does), the
    next one fails with ENOSPC."""

    def __init__(self, fh: Any, room: int = 0) -> None:
        self.fh, self.room = fh, room

    def write(self, data: bytes) -> int:
        if self.room <= 0:
            disk_full()
        part = bytes(data[: self.room])
        self.room -= len(part)
        return self.fh.write(part)

    def __getattr__(self, name: str) -> Any:  # tell, truncate, close: the real file's
        return getattr(self.fh, name)


def part_file_on_a_full_disk(monkeypatch: pytest.MonkeyPatch, room: int = 0) -> None:
    """Each part file opened from now on is on a disk with `room` bytes left (monkeypatch.undo() frees it)."""
    from llmlabel.io.output import PartFile

    real_open = PartFile.open

    def nearly_full_open(self: PartFile, *args: Any) -> None:
        real_open(self, *args)
        self._fh = NearlyFull(self._fh, room)

    monkeypatch.setattr(PartFile, "open", nearly_full_open)


# Slow tests are marked where they are written, by measured duration, so that the quick loop
# `python -m pytest -q -m "not slow"` stays under 2 minutes: a test taking more than ~1 s on an idle machine
# (`python -m pytest -q --durations=0 -p no:randomly`) gets `@pytest.mark.slow`, or its module
# `pytestmark = pytest.mark.slow` when all of its tests do. On a loaded machine,
# `nice -n 10 python benchmarks/quick_loop.py` estimates the idle machine's time (wall minus the time the test's
# threads and subprocesses waited for a CPU) and lists the tests over 1 s (quick loop: ~59 s estimated, Dec 2026).
# A test that pays the session's first import of a heavy library (scikit-learn, openai) only looks slow: marking
# it moves that cost to the next test.
# Tests of the embedded llama.cpp server (`@pytest.mark.llama`) are slow too.
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("llama"):
            item.add_marker(pytest.mark.slow)


# -- a real redis-server for the shared-cache tests (test_shared_cache.py, test_ray.py) -------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server of its own on a free local port, answering: (its process, its port). Skips the test where
    none can run (fails it with LLMLABEL_REQUIRE_REDIS=1)."""
    binary = shutil.which("redis-server")
    required = os.environ.get("LLMLABEL_REQUIRE_REDIS") == "1"
    if binary is None:
        if required:
            pytest.fail("LLMLABEL_REQUIRE_REDIS=1 but no redis-server on PATH (apt-get install -y redis-server)")
        pytest.skip("no redis-server on PATH: install it (apt-get install -y redis-server) to test the Redis cache")
    try:
        import redis
    except ImportError:
        if required:
            pytest.fail("LLMLABEL_REQUIRE_REDIS=1 but the redis client is not installed (pip install -e '.[redis]')")
        pytest.skip("the redis client is not installed (pip install -e '.[redis]')")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return proc, port
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    pytest.fail(f"redis-server did not start on port {port}")
                time.sleep(0.05)
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_server():
    proc, port = start_redis()
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_url(redis_server):
    """A clean database per test."""
    import redis

    client = redis.Redis(port=redis_server)
    client.flushall()
    client.close()
    return f"redis://127.0.0.1:{redis_server}/0"
