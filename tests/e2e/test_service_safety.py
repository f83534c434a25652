"""`llmlabel serve` against hostile callers: web pages (foreign Origin, DNS rebinding), secrets echoed by a
judge, memory that only grows, and two servers on one state dir."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
from conftest import write_config  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from llmlabel.config import load_config  # noqa: E402
from llmlabel.service.app import create_app  # noqa: E402

TOKEN = "test-token-0123456789"
H = {"Authorization": f"Bearer {TOKEN}"}
ITEMS = {"items": [{"text": "a fine day"}]}


def judges(base_url: str, **kw) -> list[dict]:
    return [{"name": "a", "model": "fake-a", "base_url": base_url, "timeout": 5, "max_attempts": 1, **kw}]


def make_app(tmp_path: Path, base_url: str, token: str | None = TOKEN, judge_kw: dict | None = None, **kw):
    cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=judges(base_url, **(judge_kw or {}))))
    return create_app(cfg, token=token, state_dir=tmp_path / "state", **kw)


def serve_env(token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_") and k != "LLMLABEL_SERVE_TOKEN"}
    if token:
        env["LLMLABEL_SERVE_TOKEN"] = token
    return env | extra


class Server:
    """`llmlabel serve` as a real process on a free loopback port."""

    def __init__(self, cfg: Path, state: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmlabel", "serve", "-c", str(cfg), "--port", "0", "--state-dir", str(state)]
            + list(args),
            stdout=subprocess.DEVNULL,
            stderr=open(log, "w"),
            env=env or serve_env(),
            cwd=cfg.parent,
        )
        deadline = time.time() + 60
        while not (m := re.search(r"serving on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert self.proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.05)
        self.url = m.group(1)
        self.http = httpx.Client(base_url=self.url, timeout=30)
        while self.http.get("/health").status_code != 200:
            time.sleep(0.05)

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(30)


# -- item 11: web pages may not drive the service ------------------------------------------------------------
@pytest.mark.parametrize("token", [None, TOKEN])
def test_foreign_origin_and_host_are_refused(tmp_path, fake, token):
    auth = H if token else {}
    with TestClient(make_app(tmp_path, fake.base_url, token=token), base_url="http://127.0.0.1:8000") as c:
        assert c.post("/v1/label", json=ITEMS, headers=auth).status_code == 200  # no Origin: not a browser
        own = c.post("/v1/label", json=ITEMS, headers={**auth, "Origin": "http://127.0.0.1:8000"})
        assert own.status_code == 200, own.text
        paid = fake.requests
        # A cross-site form POST (no preflight) from any web page, and DNS rebinding (Host: the page's name).
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Origin": "http://127.0.0.1:9999"},
            {"Origin": "http://localhost:8000"},  # another origin, even if it is the same machine
            {"Host": "attacker.example:8000"},
            {"Host": "attacker.example:8000", "Origin": "http://attacker.example:8000"},
            {"Host": "127.0.0.1.attacker.example"},
            {"Host": ""},
        ):
            for method, path in (("POST", "/v1/label"), ("POST", "/v1/jobs"), ("GET", "/metrics")):
                r = c.request(
                    method,
                    path,
                    json=ITEMS,
                    headers={**auth, "Content-Type": "text/plain", **headers},
                )
                assert r.status_code == 403, (headers, path, r.text)
                detail = r.json()["detail"]
                assert ("cross-origin" in detail) if "Origin" in headers and "Host" not in headers else "Host" in detail
                assert "\n" not in detail
        assert fake.requests == paid  # nothing was paid for a refused request
        for host in ("localhost:8000", "[::1]:8000", "127.0.0.1", "LOCALHOST"):
            assert c.post("/v1/label", json=ITEMS, headers={**auth, "Host": host}).status_code == 200, host
        assert (
            c.post(
                "/v1/label", json=ITEMS, headers={**auth, "Host": "localhost:8000", "Origin": "http://localhost:8000"}
            ).status_code
            == 200
        )


def test_configured_hosts_and_origins_are_accepted(tmp_path, fake):
    app = make_app(
        tmp_path,
        fake.base_url,
        token=None,
        allowed_hosts=["labels.internal"],
        allowed_origins=["https://labelstudio.example"],
    )
    with TestClient(app, base_url="http://labels.internal:8000") as c:
        assert c.post("/v1/label", json=ITEMS).status_code == 200
        assert c.post("/v1/label", json=ITEMS, headers={"Origin": "http://labels.internal:8000"}).status_code == 200
        r = c.post("/v1/label", json=ITEMS, headers={"Origin": "https://labelstudio.example"})
        assert r.status_code == 200
        r = c.post("/v1/label", json=ITEMS, headers={"Origin": "https://labelstudio.example:8443"})
        assert r.status_code == 403
        r = c.post("/v1/label", json=ITEMS, headers={"Host": "other.internal"})
        assert r.status_code == 403 and "--allowed-host other.internal" in r.json()["detail"]


def test_serve_command_allowed_host_option(tmp_path, fake):
    cfg = write_config(tmp_path / "c.yaml", None, judges=judges(fake.base_url))
    r = subprocess.run(
        [sys.executable, "-m", "llmlabel", "serve", "-c", str(cfg), "--no-auth", "--allowed-host", "http://x:1"],
        capture_output=True,
        text=True,
        env=serve_env(None),
        timeout=60,
    )
    assert r.returncode == 2 and "--allowed-host 'http://x:1' is not a host name" in r.stderr, r.stderr
    server = Server(
        cfg,
        tmp_path / "state",
        tmp_path / "serve.log",
        "--no-auth",
        "--allowed-host",
        "labels.internal",
        env=serve_env(None),
    )
    try:
        c = server.http
        assert c.post("/v1/label", json=ITEMS, headers={"Host": "labels.internal"}).status_code == 200
        r = c.post("/v1/label", json=ITEMS, headers={"Host": "attacker.example"})
        assert r.status_code == 403 and r.json()["detail"].startswith("Host 'attacker.example'")
        r = c.post("/v1/label", data={"items": "x"}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
    finally:
        server.stop()
