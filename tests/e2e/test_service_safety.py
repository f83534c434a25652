"""`llmlabel serve` against hostile callers: web pages (foreign Origin, DNS rebinding), secrets echoed by a
judge, memory that only grows, and two servers on one state dir."""

import json
import logging
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
from fakeserver import FakeLLM  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from llmlabel import redaction  # noqa: E402
from llmlabel.config import load_config  # noqa: E402
from llmlabel.errors import LLMLabelError  # noqa: E402
from llmlabel.service.app import create_app  # noqa: E402

pytestmark = pytest.mark.slow  # servers and subprocesses: seconds each

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


def wait_job(c, jid: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while (info := c.get(f"/v1/jobs/{jid}", headers=H).json())["state"] in ("queued", "running"):
        assert time.time() < deadline, info
        time.sleep(0.05)
    return info


class Server:
    """`llmlabel serve` as a real process on a free loopback port."""

    def __init__(self, cfg: Path, state: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmlabel", "serve", "-c", str(cfg), "--port", "0", "--state-dir", str(state)]
            + list(args),
            stdout=(out := open(log, "w")),  # uvicorn's access log goes to stdout
            stderr=out,
            env=env or serve_env(),
            cwd=cfg.parent,
        )
        deadline = time.time() + 60
        while not (m := re.search(r"serving on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert self.proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.05)
        self.url = m.group(1)
        self.http = httpx.Client(base_url=self.url, timeout=30)
        while self.http.get("/livez").status_code != 200:
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


# -- item 10: secrets ------------------------------------------------------------------------------------------
KEY = "sk-echo-secret-0123456789abcdef"


class EchoKey(FakeLLM):
    """A judge server that echoes the API key it was sent: inside its answer ('echo-answer' texts) and inside an
    error body ('echo-error' texts)."""

    def handle(self, req, headers):
        status, payload, h = super().handle(req, headers)
        key = (headers.get("Authorization") or headers.get("authorization") or "").removeprefix("Bearer ")
        last = "\n".join(m["content"] for m in req["messages"])
        if "echo-error" in last:
            return 400, {"error": {"message": f"invalid request for key {key}"}}, {}
        if status == 200 and "echo-answer" in last:
            payload["choices"][0]["message"]["content"] = json.dumps({"label": f"{key}"})
        return status, payload, h


def echo_csv(path: Path, texts: list[str]) -> bytes:
    path.write_text("id,text\n" + "".join(f"r{i},{t}\n" for i, t in enumerate(texts)))
    return path.read_bytes()


def test_an_echoed_key_appears_in_no_response_and_no_log(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ECHO_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    fake = EchoKey().start()
    seen: list[str] = []
    try:
        app = make_app(tmp_path, fake.base_url, judge_kw={"api_key_env": "ECHO_KEY", "max_attempts": 2})
        with TestClient(app, base_url="http://127.0.0.1:8000") as c:
            r = c.post("/v1/label", json={"items": [{"text": "echo-answer one"}, {"text": "a fine day"}]}, headers=H)
            seen.append(r.text)
            assert r.status_code == 200 and "***" in str(r.json()["items"][0]), r.text  # the answer was refused
            r = c.post("/v1/verify", json={"items": [{"text": "echo-answer two", "label": "positive"}]}, headers=H)
            seen.append(r.text)
            assert r.status_code == 200 and "***" in str(r.json()["items"][0])
            r = c.post("/predict", json={"tasks": [{"data": {"text": "echo-answer three"}}]}, headers=H)
            seen.append(r.text)
            r = c.post("/v1/label", json={"items": [{"text": "echo-error"}]}, headers=H)
            seen.append(r.text)
            assert r.status_code == 502 and "***" in r.text
            data = echo_csv(tmp_path / "a.csv", ["echo-answer four", "a good day", "echo-answer five"])
            jid = c.post("/v1/jobs", files={"file": ("a.csv", data)}, headers=H).json()["id"]
            info = wait_job(c, jid)
            assert info["state"] == "done", info
            for path in (f"/v1/jobs/{jid}", f"/v1/jobs/{jid}/results", f"/v1/jobs/{jid}/results?partial=true"):
                seen.append(c.get(path, headers=H).text)
            assert "***" in seen[-2]  # the rows' errors carry the echoed answer, redacted
            data = echo_csv(tmp_path / "b.csv", ["echo-error six", "a bad day"])
            jid = c.post("/v1/jobs", files={"file": ("b.csv", data)}, headers=H).json()["id"]
            info = wait_job(c, jid)
            seen += [json.dumps(info), c.get("/v1/jobs", headers=H).text, c.get("/metrics", headers=H).text]
            assert info["state"] == "failed" and "***" in info["error"]
        assert any(KEY in str(h) for h in fake.headers)  # the judge really was sent (and echoed) the key
        for text in [*seen, caplog.text]:
            assert KEY not in text
    finally:
        fake.stop()


def test_setup_adds_nothing_to_the_redaction_list(tmp_path, fake, monkeypatch):
    monkeypatch.setattr(redaction, "_SECRETS", {})
    with TestClient(make_app(tmp_path, fake.base_url), base_url="http://127.0.0.1:8000") as c:
        for word in ("positive", "judge", "label-studio-token"):
            assert c.post("/setup", json={"project": 1, "access_token": word}, headers=H).status_code == 200
    assert redaction.redact("positive judge label-studio-token") == "positive judge label-studio-token"
    assert redaction.redact(f"x {TOKEN} y") == "x *** y"  # the operator's token is hidden


def test_the_redaction_list_is_bounded(monkeypatch):
    monkeypatch.setattr(redaction, "_SECRETS", {})
    for i in range(redaction.MAX_SECRETS):
        redaction.register(f"configured-key-{i:04d}")
    redaction.register("configured-key-0000")  # the same key again: no growth
    with pytest.raises(LLMLabelError, match="only configured keys"):
        redaction.register("one-too-many-keys")
    assert len(redaction._SECRETS) == redaction.MAX_SECRETS


def test_access_log_and_server_log_hide_keys_and_token_queries(tmp_path, monkeypatch):
    fake = EchoKey().start()
    server = None
    try:
        cfg = write_config(tmp_path / "c.yaml", None, judges=judges(fake.base_url, api_key_env="ECHO_KEY"))
        log = tmp_path / "serve.log"
        server = Server(
            cfg, tmp_path / "state", log, "--access-log", "--log-level", "debug", env=serve_env(ECHO_KEY=KEY)
        )
        c = server.http
        assert c.post("/v1/label", json={"items": [{"text": "echo-answer one"}]}, headers=H).status_code == 200
        assert c.post("/v1/label", json={"items": [{"text": "echo-error"}]}, headers=H).status_code == 502
        assert c.get(f"/v1/jobs?token={TOKEN}&limit=5", headers=H).status_code == 200
        assert c.get("/livez?api_key=query-secret-123&x=1").status_code == 200
        server.stop()
        server = None
        text = log.read_text()
        assert "GET /v1/jobs?token=***&limit=5" in text and "/livez?api_key=***&x=1" in text, text
        for secret in (KEY, TOKEN, "query-secret-123"):
            assert secret not in text
    finally:
        if server is not None:
            server.stop()
        fake.stop()


# -- item 12: memory and the event loop ---------------------------------------------------------------------------
def test_verify_prompt_cache_is_bounded(tmp_path, fake):
    app = make_app(tmp_path, fake.base_url)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        for batch in range(3):  # 600 made-up given labels: each a prompt of its own
            items = [{"text": "a fine day", "label": f"made-up label {batch}-{i}"} for i in range(200)]
            r = c.post("/v1/verify", json={"items": items}, headers=H)
            assert r.status_code == 200 and all(it["disputed"] for it in r.json()["items"])
        labeler = app.state.llmlabel.labelers["label"]
        assert 0 < len(labeler.prompts.prefixes) <= 256, len(labeler.prompts.prefixes)
        r = c.post("/v1/verify", json={"items": [{"text": "a fine day", "label": "positive"}]}, headers=H)
        assert r.status_code == 200 and r.json()["items"][0]["given_label"] == "positive"


def test_metrics_fold_made_up_methods_and_paths(tmp_path, fake):
    from llmlabel.service.auth import AuthFailures

    app = make_app(tmp_path, fake.base_url)
    app.state.llmlabel.auth_failures = AuthFailures(free=10**6)  # every refusal a 401 (no backoff's 429s)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        before = c.get("/metrics", headers=H).text.count("\n")
        for i in range(40):  # no token: every one is refused, and must not add a series of its own
            c.request(f"MADEUP{i}", "/v1/label")
            c.get(f"/no/such/path/{i}")
            c.request(f"X{i}", f"/random/{i}")
        text = c.get("/metrics", headers=H).text
        assert text.count("\n") - before <= 12, text
        assert 'llmlabel_http_requests_total{method="other",route="other",status="401"} 80' in text
        assert 'llmlabel_http_requests_total{method="GET",route="other",status="401"} 40' in text
        assert "MADEUP" not in text and "/no/such" not in text


def test_a_huge_text_is_refused_before_it_holds_the_loop(tmp_path, fake, monkeypatch):
    import llmlabel.pipeline.requests as requests_module  # (where a text is cut to max_text_tokens)

    tokenized: list[int] = []  # the length of each text cut to a judge's max_text_tokens (seconds for megabytes)
    cut = requests_module.truncate
    monkeypatch.setattr(requests_module, "truncate", lambda text, n: (tokenized.append(len(text)), cut(text, n))[1])
    with TestClient(make_app(tmp_path, fake.base_url), base_url="http://127.0.0.1:8000") as c:
        huge = "word " * 1_800_000  # 9 MB: under the body limit, far over a judge's max_text_tokens
        for path, body in (
            ("/v1/label", {"items": [{"text": "short"}, {"text": huge}]}),
            ("/v1/verify", {"items": [{"text": huge, "label": "positive"}]}),
        ):
            r = c.post(path, json=body, headers=H)
            assert r.status_code == 413, (path, r.text[:200])
            assert "over the limit of 200000 (--max-text-chars)" in r.json()["detail"]
        assert fake.requests == 0 and max(tokenized, default=0) <= 200_000  # refused before it was tokenized
        # Label Studio's tasks are cut to --max-text-chars instead (the judges cut them further anyway).
        r = c.post("/predict", json={"tasks": [{"data": {"text": huge}}]}, headers=H)
        assert r.status_code == 200 and r.json()["results"][0]["result"][0]["value"]["choices"]
    with TestClient(make_app(tmp_path, fake.base_url, max_text_chars=50), base_url="http://127.0.0.1:8000") as c:
        r = c.post("/v1/label", json={"items": [{"text": "x" * 51}]}, headers=H)
        assert r.status_code == 413 and "item 0: text of 51 characters" in r.json()["detail"]


def _peak_rss(pid: int) -> int:
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) << 10


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's peak RSS from /proc")
def test_an_upload_streams_to_disk(tmp_path, fake):
    cfg = write_config(tmp_path / "c.yaml", None, judges=judges(fake.base_url))
    state = tmp_path / "state"
    server = Server(cfg, state, tmp_path / "serve.log")
    try:
        c = server.http
        r = c.post("/v1/jobs", files={"file": ("s.csv", b"id,body\n1,hi\n")}, headers=H)
        assert r.status_code == 422  # warm: the route, the parser and the CSV reader are loaded
        base = _peak_rss(server.proc.pid)
        big = tmp_path / "big.csv"
        line = b"," + b"a review of the product that goes on and on " * 4 + b"\n"
        with open(big, "wb") as fh:
            fh.write(b"id,body\n")
            for i in range((64 << 20) // len(line)):
                fh.write(b"%d" % i + line)
        with open(big, "rb") as fh:  # 64 MB, streamed by the client
            r = c.post("/v1/jobs", files={"file": ("big.csv", fh)}, headers=H)
        assert r.status_code == 422 and "no column 'text'" in r.json()["detail"], r.text
        grown = _peak_rss(server.proc.pid) - base
        # Held whole, the upload alone would add 64 MB (the old parser added 618 MB); streamed, ~2 MB. The margin
        # is for the tokenizer, which the server may still be loading in the background (~25 MB).
        assert grown < 48 << 20, f"peak RSS grew by {grown >> 20} MB for a 64 MB upload"
        assert list((state / "jobs").iterdir()) == []  # a refused upload leaves nothing behind
    finally:
        server.stop()


def test_an_upload_over_the_limit_while_streaming_leaves_nothing(tmp_path, fake):
    app = make_app(tmp_path, fake.base_url, max_upload_bytes=100_000)

    def body():  # chunked: no Content-Length, so the limit is found while the file streams in
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\nid,text\n'
        for i in range(8000):  # 200 kB
            yield b"%d,some text of a row\n" % i
        yield b"\r\n--b--\r\n"

    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        r = c.post("/v1/jobs", content=body(), headers={**H, "Content-Type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413, r.text
        ok = (
            b'--b\r\nContent-Disposition: form-data; name="mode"\r\n\r\nlabel\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\n'
            b"id,text\n1,hi\n2,ho\r\n--b--\r\n"
        )
        r = c.post("/v1/jobs", content=ok, headers={**H, "Content-Type": 'multipart/form-data; boundary="b"'})
        assert r.status_code == 202 and r.json()["progress"]["rows_total"] == 2, r.text
    assert [d.name for d in (tmp_path / "state" / "jobs").iterdir()] == [r.json()["id"]]


# -- item 2: one server per state dir ---------------------------------------------------------------------------
def test_a_second_server_on_one_state_dir_exits_with_one_line(tmp_path, fake):
    cfg = write_config(tmp_path / "c.yaml", None, judges=judges(fake.base_url))
    state = tmp_path / "state"
    first = Server(cfg, state, tmp_path / "first.log")
    try:
        r = subprocess.run(
            [sys.executable, "-m", "llmlabel", "serve", "-c", str(cfg), "--port", "0", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            env=serve_env(),
            timeout=60,
        )
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"the state dir {state} is in use" in r.stderr and f"(pid {first.proc.pid})" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and "serving on" not in r.stderr
        assert first.http.get("/v1/jobs", headers=H).status_code == 200  # the first one is untouched
    finally:
        first.stop()
    second = Server(cfg, state, tmp_path / "second.log")  # free again once the first has stopped
    second.stop()


def test_two_apps_on_one_state_dir(tmp_path, fake):
    app = make_app(tmp_path, fake.base_url)
    with pytest.raises(LLMLabelError, match="is in use by another `llmlabel serve`"):
        make_app(tmp_path, fake.base_url)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/livez").status_code == 200
    with TestClient(make_app(tmp_path, fake.base_url), base_url="http://127.0.0.1:8000") as c:  # released
        assert c.get("/livez").status_code == 200


# -- guessing the token ------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_repeated_wrong_tokens_are_slowed_down_per_client(tmp_path, fake):
    from llmlabel.service.auth import AuthFailures

    clock = Clock()
    app = make_app(tmp_path, fake.base_url)
    app.state.llmlabel.auth_failures = AuthFailures(clock=clock)
    bad = {"Authorization": "Bearer wrong-guess"}
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert [c.get("/v1/jobs", headers=bad).status_code for _ in range(5)] == [401] * 5  # a few typos: free
        assert c.get("/v1/jobs", headers=bad).status_code == 401  # the 6th: locked out for 1 s from now
        r = c.get("/v1/jobs", headers=H)
        assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text  # the token is not even looked at
        assert "too many wrong tokens" in r.json()["detail"]
        assert c.get("/livez").status_code == 200  # open paths stay open
        clock.now += 1.01
        assert c.get("/v1/jobs", headers=bad).status_code == 401  # the 7th: 2 s
        assert c.get("/v1/jobs", headers=bad).status_code == 429
        clock.now += 2.01
        assert c.get("/v1/jobs", headers=bad).status_code == 401  # the 8th: 4 s ...
        assert c.get("/v1/jobs", headers=H).headers.get("retry-after") == "4"
        clock.now += 4.01
        assert c.get("/v1/jobs", headers=H).status_code == 200  # the right token: the count starts over
        assert [c.get("/v1/jobs", headers=bad).status_code for _ in range(6)] == [401] * 6


def test_auth_backoff_memory_is_bounded_and_keys_ipv6_by_network():
    from llmlabel.service.auth import AuthFailures

    clock = Clock()
    f = AuthFailures(free=0, max_clients=100, clock=clock)
    for i in range(10_000):
        f.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(f) == 100
    assert f.wait("10.0.39.15") > 0 and f.wait("10.0.0.1") == 0  # the newest kept, the oldest forgotten
    f.failed("2001:db8::1")
    assert f.wait("2001:db8::ffff") > 0  # one host may hold a whole /64
    assert f.wait("::ffff:10.0.39.15") > 0  # an IPv4 client seen through an IPv6 socket
    clock.now += 10_000
    f.failed("10.0.39.15")  # long after: counted from one again
    assert f.wait("10.0.39.15") == 1.0


@pytest.mark.parametrize(
    "token, why",
    [("a", "1 long, under 16"), ("short-token", "11 long"), ("abababababababababab", "only 2 different characters")],
)
def test_a_weak_token_is_refused_off_loopback(tmp_path, fake, capsys, monkeypatch, token, why):
    from conftest import one_line_error, run_main

    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    monkeypatch.setenv("LLMLABEL_SERVE_TOKEN", token)
    rc, _, err = run_main(capsys, "serve", "-c", str(cfg), "--host", "0.0.0.0")
    line = one_line_error(rc, err, "$LLMLABEL_SERVE_TOKEN is too weak to serve on 0.0.0.0", why, "token_urlsafe")
    assert len(token) < 2 or token not in line  # the token itself is never shown
    # On loopback only local users reach it: any token is taken (the next check, --max-items, speaks).
    rc, _, err = run_main(capsys, "serve", "-c", str(cfg), "--max-items", "0")
    one_line_error(rc, err, "--max-items must be positive")
    # A strong one is taken off loopback too.
    monkeypatch.setenv("LLMLABEL_SERVE_TOKEN", "kP3x-9vQ_t2LmZ8wRj4yB6nH")
    rc, _, err = run_main(capsys, "serve", "-c", str(cfg), "--host", "0.0.0.0", "--max-items", "0")
    one_line_error(rc, err, "--max-items must be positive")


def test_an_upload_onto_a_full_disk_is_a_clear_507(tmp_path, fake, monkeypatch):
    """The state dir's disk fills up while a file streams in: a 507 that says so, nothing queued, nothing left."""
    import builtins
    import errno

    from llmlabel.service import multipart

    real_open = builtins.open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

    monkeypatch.setattr(multipart, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
    ok = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\nid,text\n1,hi\n2,ho\r\n--b--\r\n'
    with TestClient(make_app(tmp_path, fake.base_url), base_url="http://127.0.0.1:8000") as c:
        r = c.post("/v1/jobs", content=ok, headers={**H, "Content-Type": "multipart/form-data; boundary=b"})
        assert r.status_code == 507, r.text
        assert "No space left on device" in r.json()["detail"] and "--state-dir" in r.json()["detail"]
        assert c.get("/v1/jobs", headers=H).json()["jobs"] == []
    assert list((tmp_path / "state" / "jobs").iterdir()) == []


def test_a_failing_cache_still_answers_and_says_so_in_the_log(tmp_path, fake, monkeypatch, caplog):
    import threading

    from llmlabel.llm import cache

    real = cache._connect

    def full(path):  # the writer thread's connection: every commit fails with SQLite's SQLITE_FULL
        con = real(path)
        if threading.current_thread().name == "llmlabel-cache":
            con.execute(f"PRAGMA max_page_count={con.execute('PRAGMA page_count').fetchone()[0]}")
        return con

    with TestClient(make_app(tmp_path, fake.base_url), base_url="http://127.0.0.1:8000") as c:
        monkeypatch.setattr(cache, "_connect", full)
        with caplog.at_level(logging.WARNING, logger="llmlabel"):
            items = [{"text": f"new text {i}"} for i in range(100)]  # more answers than the file's pages hold
            r = c.post("/v1/label", json={"items": items}, headers=H)
        assert r.status_code == 200 and all(it["label"] for it in r.json()["items"]), r.text
    assert any("not being cached" in m and "database or disk is full" in m for m in caplog.messages), caplog.text
