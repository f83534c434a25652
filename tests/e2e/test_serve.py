"""`llmlabel serve`: endpoints in-process (TestClient, httpx ASGI transport), OpenAPI fuzzing, and a real uvicorn
process killed mid-job and restarted without paying again for finished rows."""

import asyncio
import base64
import csv
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
from conftest import write_config, write_corpus  # noqa: E402
from fakeserver import FakeLLM, pick  # noqa: E402
from fastapi.testclient import TestClient as _TestClient  # noqa: E402

from llmlabel.config import load_config  # noqa: E402
from llmlabel.service.app import create_app  # noqa: E402

# A loopback Host, as a local client sends it (the service refuses TestClient's 'testserver').
TestClient = functools.partial(_TestClient, base_url="http://127.0.0.1:8000")
from llmlabel.io.labelstudio import LSControl, parse_config  # noqa: E402

# servers, subprocesses, OpenAPI fuzzing: seconds each
pytestmark = pytest.mark.slow

LABELS = ["positive", "negative"]
TOKEN = "test-token-0123456789"
H = {"Authorization": f"Bearer {TOKEN}"}


def two_judges(base_url: str, concurrency: int = 8) -> list[dict]:
    return [
        {
            "name": n,
            "model": f"fake-{n}",
            "base_url": base_url,
            "concurrency": concurrency,
            "timeout": 5,
            "max_attempts": 2,
            "price_per_million": {"input": 1.0, "output": 2.0},
        }
        for n in ("a", "b")
    ]


def other(label: str) -> str:
    return LABELS[1 - LABELS.index(label)]


def audit_csv(path: Path, n: int, prefix: str = "item") -> dict[str, dict[str, str]]:
    """Rows whose given label is right for even i and wrong for odd i (the fake judges answer pick(text))."""
    rows = {}
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        w.writeheader()
        for i in range(n):
            text = f"{prefix} {i}: the service was {'fine' if i % 3 else 'slow'}"
            right = pick(text, LABELS)
            row = {"id": f"{prefix}{i}", "text": text, "label": right if i % 2 == 0 else other(right)}
            w.writerow(row)
            rows[row["id"]] = row
    return rows


@pytest.fixture
def app_factory(tmp_path, fake):
    def make(token: str | None = TOKEN, judges: list[dict] | None = None, **kw):
        cfg = load_config(write_config(tmp_path / "c.yaml", fake.base_url, judges=judges or two_judges(fake.base_url)))
        return create_app(cfg, token=token, state_dir=tmp_path / "state", **kw)

    return make


@pytest.fixture
def client(app_factory):
    with TestClient(app_factory()) as c:
        yield c


def wait_job(c, jid: str, states=("done", "failed", "cancelled"), timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = c.get(f"/v1/jobs/{jid}", headers=H).json()
        if info["state"] in states:
            return info
        time.sleep(0.05)
    raise AssertionError(f"job {jid} still {info['state']}")


# -- synchronous endpoints -----------------------------------------------------------------------------
def test_label_gives_valid_labels_probs_and_judges(client, fake):
    texts = [f"question {i} about the product" for i in range(20)]
    r = client.post(
        "/v1/label",
        json={"items": [{"id": f"q{i}", "text": t} for i, t in enumerate(texts)] + [{"text": "   "}]},
        headers=H,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"].startswith("llmlabel-")
    items = body["items"]
    assert [it["id"] for it in items] == [f"q{i}" for i in range(20)] + [20]  # absent id: the position
    for t, it in zip(texts, items):
        assert it["label"] == pick(t, LABELS) and it["error"] is None
        assert it["confidence"] == 1.0 and it["probs"][it["label"]] == 1.0 and it["candidates"] == [it["label"]]
        assert it["judges"] == {"a": {"label": it["label"]}, "b": {"label": it["label"]}}
    assert items[-1]["label"] is None and "empty text" in items[-1]["error"]
    assert fake.requests == 40
    # The same texts again are answered from the shared cache: nothing more is paid.
    assert client.post("/v1/label", json={"items": [{"text": t} for t in texts]}, headers=H).status_code == 200
    assert fake.requests == 40


def test_verify_scores_and_flags_given_labels(client):
    right = pick("a fine day", LABELS)
    r = client.post(
        "/v1/verify",
        json={
            "items": [
                {"id": 1, "text": "a fine day", "label": right},
                {"id": 2, "text": "a fine day", "label": other(right)},
                {"id": 3, "text": "a fine day", "label": "not-a-label"},
            ]
        },
        headers=H,
    )
    assert r.status_code == 200, r.text
    a, b, c = r.json()["items"]
    assert (a["given_label"], a["given_label_prob"], a["label"], a["disputed"]) == (right, 1.0, right, False)
    assert (b["given_label_prob"], b["label"], b["disputed"]) == (0.0, right, True)
    assert (c["given_label_prob"], c["disputed"]) == (0.0, True)
    assert r.json()["threshold"] == 0.5
    assert not {"score", "flagged", "suggested_label"} & set(a)  # audit words: computed over a whole file


def test_verify_split_judges_score_below_threshold(tmp_path):
    # Judge a says positive, b says negative: each label has posterior 0.5.
    fa, fb = FakeLLM(answers={"split": "positive"}).start(), FakeLLM(answers={"split": "negative"}).start()
    try:
        judges = [
            {"name": "a", "model": "m", "base_url": fa.base_url},
            {"name": "b", "model": "m", "base_url": fb.base_url},
        ]
        cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=judges))
        with TestClient(create_app(cfg, token=TOKEN, state_dir=tmp_path / "s", dispute_threshold=0.6)) as c:
            it = c.post("/v1/verify", json={"items": [{"text": "split", "label": "negative"}]}, headers=H).json()[
                "items"
            ][0]
        assert it["given_label_prob"] == 0.5 and it["label"] == "positive" and it["disputed"] is True
    finally:
        fa.stop()
        fb.stop()


def test_auth_required_except_health(client):
    from llmlabel.service.auth import AuthFailures

    client.app.state.llmlabel.auth_failures = AuthFailures(free=100)  # each refusal a 401 (backoff: elsewhere)
    body = {"items": [{"text": "x"}]}
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": TOKEN},
        {"Authorization": "Basic ???"},
    ):
        r = client.post("/v1/label", json=body, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "Bearer" in r.json()["detail"] and TOKEN not in r.text
    for path in ("/metrics", "/v1/jobs", "/v1/jobs/x"):
        assert client.get(path).status_code == 401
    assert client.post("/predict", json={"tasks": []}).status_code == 401
    # /health is Label Studio's check of its credentials; /livez is liveness without auth.
    assert client.get("/health").status_code == 401
    assert client.get("/health", headers=H).json()["status"] == "UP"
    assert client.get("/livez").json()["status"] == "UP"
    assert client.get("/openapi.json").status_code == 200
    # Label Studio's ML backend settings send HTTP Basic: the token is the password.
    basic = base64.b64encode(f"labelstudio:{TOKEN}".encode()).decode()
    assert client.get("/metrics", headers={"Authorization": f"Basic {basic}"}).status_code == 200


def test_no_auth_app(app_factory):
    with TestClient(app_factory(token=None)) as c:
        assert c.post("/v1/label", json={"items": [{"text": "x"}]}).status_code == 200


def test_limits_and_validation_errors(app_factory):
    with TestClient(app_factory(max_items=5, max_body_bytes=2000)) as c:
        r = c.post("/v1/label", json={"items": [{"text": "x"}] * 6}, headers=H)
        assert r.status_code == 413 and "at most 5" in r.json()["detail"]
        r = c.post("/v1/label", json={"items": [{"text": "x" * 3000}]}, headers=H)
        assert r.status_code == 413 and "over the limit of 2000 bytes" in r.json()["detail"]

        def chunks():
            yield b'{"items": [{"text": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}]}'

        r = c.post("/v1/label", content=chunks(), headers={**H, "Content-Type": "application/json"})
        assert r.status_code == 413, r.text  # no Content-Length: counted while read
        cases = [
            ({"items": []}, "items: List should have at least 1 item"),
            ({"items": [{"id": 1}]}, "items.0.text: Field required"),
            ({"items": [{"text": 5}]}, "items.0.text: Input should be a valid string"),
            ({"itemz": []}, "items: Field required"),
        ]
        for body, msg in cases:
            r = c.post("/v1/label", json=body, headers=H)
            assert r.status_code == 422 and r.json()["detail"].startswith(msg), r.text
        r = c.post("/v1/label", content=b"{not json", headers={**H, "Content-Type": "application/json"})
        assert r.status_code == 422 and "JSON" in r.json()["detail"]
        r = c.post("/v1/verify", json={"items": [{"text": "x"}]}, headers=H)
        assert r.status_code == 422 and "items.0.label: Field required" in r.json()["detail"]


def test_lone_surrogates_do_not_crash(client):
    r = client.post(
        "/v1/label",
        content=b'{"items": [{"text": "bad \\ud800 text"}]}',
        headers={**H, "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and "items.0.text" in r.json()["detail"]
    r = client.post(
        "/predict",
        content=b'{"tasks": [{"data": {"text": "bad \\ud800 text"}}]}',
        headers={**H, "Content-Type": "application/json"},
    )
    assert r.status_code == 200 and r.json()["results"][0]["result"][0]["value"]["choices"][0] in LABELS


def test_judge_failure_is_502_without_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-very-secret-judge-key")
    bad = FakeLLM(status=400).start()  # echoes the key it was sent in its error message
    try:
        judges = [
            {"name": "a", "model": "m", "base_url": bad.base_url, "api_key_env": "MY_JUDGE_KEY", "max_attempts": 1}
        ]
        cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=judges))
        with TestClient(create_app(cfg, token=TOKEN, state_dir=tmp_path / "s")) as c:
            r = c.post("/v1/label", json={"items": [{"text": "x"}]}, headers=H)
        assert r.status_code == 502 and "judge 'a'" in r.json()["detail"]
        assert "sk-very-secret-judge-key" not in r.text and "***" in r.text
    finally:
        bad.stop()


# -- batch jobs ------------------------------------------------------------------------------------------
def test_job_with_a_dead_judge_fails_with_one_line_and_keeps_its_ledger(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-very-secret-judge-key")
    bad = FakeLLM(status=400).start()  # echoes the key it was sent in its error message
    try:
        judges = [
            {"name": "a", "model": "m", "base_url": bad.base_url, "api_key_env": "MY_JUDGE_KEY", "max_attempts": 1}
        ]
        cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=judges))
        write_corpus(tmp_path / "in.csv", 5)
        with TestClient(create_app(cfg, token=TOKEN, state_dir=tmp_path / "s")) as c:
            r = c.post("/v1/jobs", files={"file": ("in.csv", (tmp_path / "in.csv").read_bytes())}, headers=H)
            info = wait_job(c, r.json()["id"])
        assert info["state"] == "failed" and "judge 'a'" in info["error"], info
        assert info["error"].endswith(f"POST /v1/jobs/{info['id']}/resume to continue")
        assert "rerun the same command" not in info["error"] and "sk-very-secret-judge-key" not in str(info)
        assert len(info["ledger"]["runs"]) == 1 and info["ledger"]["total"]["requests"] >= 1
    finally:
        bad.stop()


def test_audit_job_to_completion(client, tmp_path, fake):
    rows = audit_csv(tmp_path / "audit.csv", 50)
    r = client.post(
        "/v1/jobs",
        files={"file": ("audit.csv", (tmp_path / "audit.csv").read_bytes(), "text/csv")},
        data={"mode": "audit"},
        headers=H,
    )
    assert r.status_code == 202, r.text
    jid = r.json()["id"]
    assert r.headers["location"] == f"/v1/jobs/{jid}" and r.json()["progress"]["rows_total"] == 50
    info = wait_job(client, jid)
    assert info["state"] == "done", info
    assert info["progress"] == {"rows_total": 50, "rows_done": 50, "fraction": 1.0}
    assert info["ledger"]["total"]["requests"] == 100 and info["ledger"]["total"]["cost"] > 0
    out = [json.loads(line) for line in client.get(info["results"], headers=H).text.splitlines()]
    # `llmlabel audit`'s records: most suspicious first (its exact figures: test_serve_parity.py).
    assert sorted(o["id"] for o in out) == sorted(rows)
    assert [o["score"] for o in out] == sorted(o["score"] for o in out)
    for o in out:
        row = rows[o["id"]]
        right = pick(row["text"], LABELS)
        assert o["given_label"] == row["label"] and o["suggested_label"] == right
        assert o["flagged"] is (row["label"] != right) and (o["score"] < 0.5) is (row["label"] != right)
    assert info["quality"]["flagged"] == 25 and info["quality"]["rows"] == 50
    assert 'llmlabel_jobs{state="done"} 1' in client.get("/metrics", headers=H).text
    listing = client.get("/v1/jobs", headers=H).json()["jobs"]
    assert [j["id"] for j in listing] == [jid]


def test_label_job_jsonl_and_custom_label_column(client, tmp_path):
    write_corpus(tmp_path / "in.jsonl", 12, fmt="jsonl")
    r = client.post("/v1/jobs", files={"file": ("in.jsonl", (tmp_path / "in.jsonl").read_bytes())}, headers=H)
    info = wait_job(client, r.json()["id"])
    assert info["state"] == "done" and info["mode"] == "label"
    out = [json.loads(x) for x in client.get(info["results"], headers=H).text.splitlines()]
    assert len(out) == 12 and all(o["label"] in LABELS and "flagged" not in o for o in out)
    text = "id,text,gold\nx1,hello there,positive\nx2,bye now,negative\n"
    r = client.post(
        "/v1/jobs", files={"file": ("g.csv", text)}, data={"mode": "audit", "label_column": "gold"}, headers=H
    )
    info = wait_job(client, r.json()["id"])
    out = [json.loads(x) for x in client.get(info["results"], headers=H).text.splitlines()]
    assert {o["id"]: o["given_label"] for o in out} == {"x1": "positive", "x2": "negative"}


def test_job_upload_errors_are_clear_422(client, tmp_path):
    def post(files=None, data=None, **kw):
        return client.post("/v1/jobs", files=files, data=data, headers=H, **kw)

    cases = [
        (post(files={"file": ("x.txt", "a,b\n")}), "cannot tell the file's format"),
        (post(files={"file": ("x.csv", "id,body\n1,hi\n")}), "no column 'text'"),
        (post(files={"file": ("x.csv", "id,text\n1,hi\n")}, data={"mode": "audit"}), "no label column 'label'"),
        (  # as `llmlabel audit` refuses them, naming the upload (not its path on the server)
            post(files={"file": ("x.csv", "id,text,label\n1,hi,maybe\n")}, data={"mode": "audit"}),
            "x.csv: 1 rows have a 'label' value outside task.labels: 'maybe'",
        ),
        (post(files={"file": ("x.csv", "id,text\n1,hi\n1,ho\n")}), "duplicate id '1'"),
        (
            post(files={"file": ("x.csv", "id,text\n1,hi\n")}, data={"mode": "relabel"}),
            "mode must be 'label' or 'audit'",
        ),
        (post(files={"other": ("x.csv", "id,text\n1,hi\n")}), "no file"),
        (post(files={"file": ("x.jsonl", '{"text": "a"}\n{oops\n')}), "line 2 is not valid JSON"),
        (client.post("/v1/jobs", json={"file": "x"}, headers=H), "multipart/form-data"),
        (
            client.post("/v1/jobs", content=b"junk", headers={**H, "Content-Type": "multipart/form-data"}),
            "malformed multipart",
        ),
    ]
    for r, msg in cases:
        assert r.status_code == 422 and msg in r.json()["detail"], r.text
    assert client.get("/v1/jobs", headers=H).json()["jobs"] == []
    assert list((Path(client.app.state.llmlabel.state_dir) / "jobs").iterdir()) == []  # nothing left behind
    assert client.get("/v1/jobs/nope", headers=H).status_code == 404
    assert client.get("/v1/jobs/nope/results", headers=H).status_code == 404


def test_upload_size_limit(app_factory):
    with TestClient(app_factory(max_upload_bytes=1000)) as c:
        r = c.post("/v1/jobs", files={"file": ("x.csv", "id,text\n" + "1,hi\n" * 400)}, headers=H)
        assert r.status_code == 413 and "split the file" in r.json()["detail"]


def test_cancel_resume_and_purge(tmp_path):
    slow = FakeLLM(latency=0.05).start()
    held = slow.hold(61)  # the job cannot finish before its cancel: its 61st request waits for it
    try:
        cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=two_judges(slow.base_url, concurrency=2)))
        rows = audit_csv(tmp_path / "a.csv", 120)
        with TestClient(create_app(cfg, token=TOKEN, state_dir=tmp_path / "s")) as c:
            jid = c.post(
                "/v1/jobs",
                files={"file": ("a.csv", (tmp_path / "a.csv").read_bytes())},
                data={"mode": "audit"},
                headers=H,
            ).json()["id"]
            wait_job(c, jid, states=("running",))
            while c.get(f"/v1/jobs/{jid}", headers=H).json()["progress"]["rows_done"] < 10:
                time.sleep(0.05)
            r = c.delete(f"/v1/jobs/{jid}", headers=H)
            held.release()  # the requests in flight are answered (the cancel keeps them); no new one is sent
            assert r.status_code == 200 and r.json()["state"] == "cancelled"
            info = wait_job(c, jid)
            assert info["state"] == "cancelled" and 10 <= info["progress"]["rows_done"] < 120
            r = c.get(f"/v1/jobs/{jid}/results", headers=H)
            assert r.status_code == 409 and "partial=true" in r.json()["detail"]
            part = c.get(f"/v1/jobs/{jid}/results?partial=true", headers=H).text.splitlines()
            assert len(part) >= 10
            paid = slow.requests
            assert c.post(f"/v1/jobs/{jid}/resume", headers=H).json()["state"] == "queued"
            info = wait_job(c, jid)
            assert info["state"] == "done" and len(info["ledger"]["runs"]) == 2
            assert slow.requests - paid <= (120 - len(part)) * 2  # finished rows were not asked again
            out = [json.loads(x) for x in c.get(info["results"], headers=H).text.splitlines()]
            assert sorted(o["id"] for o in out) == sorted(rows)
            assert c.post(f"/v1/jobs/{jid}/resume", headers=H).status_code == 409
            assert c.delete(f"/v1/jobs/{jid}", headers=H).status_code == 409
            assert c.delete(f"/v1/jobs/{jid}?purge=true", headers=H).status_code == 204
            assert c.get(f"/v1/jobs/{jid}", headers=H).status_code == 404
    finally:
        held.release()
        slow.stop()


# -- Label Studio ML backend -------------------------------------------------------------------------------
LS_CONFIG = """<View>
  <Text name="review" value="$body"/>
  <Choices name="sentiment" toName="review" choice="single">
    <Choice value="Positive"/><Choice value="Negative"/>
  </Choices>
</View>"""


def test_label_studio_backend(client):
    assert (
        client.post(
            "/setup", json={"project": "1.1700000000", "schema": LS_CONFIG, "access_token": "ls-secret"}, headers=H
        )
        .json()["model_version"]
        .startswith("llmlabel-")
    )
    tasks = [{"id": 7, "data": {"body": "great product"}}, {"id": 8, "data": {"body": "awful product"}}]
    r = client.post(
        "/predict",
        json={"tasks": tasks, "label_config": LS_CONFIG, "project": "1.1700000000", "params": {"context": None}},
        headers=H,
    )
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == 2
    for t, p in zip(tasks, res):
        (ann,) = p["result"]
        assert ann["from_name"] == "sentiment" and ann["to_name"] == "review" and ann["type"] == "choices"
        assert ann["value"]["choices"] == [pick(t["data"]["body"], LABELS).capitalize()]  # the config's spelling
        assert p["score"] == 1.0 and p["model_version"] == r.json()["model_version"]
    # No label_config: defaults, and the task's text column.
    r = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "ok"}}]}, headers=H)
    ann = r.json()["results"][0]["result"][0]
    assert (ann["from_name"], ann["to_name"], ann["value"]["choices"]) == ("label", "text", [pick("ok", LABELS)])
    r = client.post("/predict", json={"tasks": [{"data": {"n": 1}}]}, headers=H)
    (res,) = r.json()["results"]  # no `result`: Label Studio saves nothing, and asks again next time
    assert "result" not in res and "data has no 'text'" in res["error"]
    r = client.post("/predict", json={"tasks": tasks, "label_config": "<View"}, headers=H)
    assert r.status_code == 422 and "not valid XML" in r.json()["detail"]


def test_parse_label_config_defaults():
    assert parse_config(None) == LSControl("label", "text", None, ())
    assert parse_config(LS_CONFIG) == LSControl("sentiment", "review", "body", ("Positive", "Negative"))


# -- metrics -------------------------------------------------------------------------------------------------
def test_metrics_from_the_ledger(client):
    client.post("/v1/label", json={"items": [{"text": "one"}, {"text": "two"}]}, headers=H)
    client.post("/v1/label", json={"items": [{"text": "one"}]}, headers=H)
    m = client.get("/metrics", headers=H)
    assert m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert 'llmlabel_judge_requests_total{judge="a",model="fake-a",source="sync"} 2' in text
    assert 'llmlabel_judge_cache_hits_total{judge="b",model="fake-b",source="sync"} 1' in text
    assert re.search(r'llmlabel_judge_cost_dollars_total\{judge="a",model="fake-a",source="sync"\} [0-9.e-]+', text)
    assert re.search(r'llmlabel_judge_input_tokens_total\{judge="a",[^}]*\} [1-9]', text)
    assert 'llmlabel_http_requests_total{method="POST",route="/v1/label",status="200"} 2' in text
    assert 'llmlabel_items_total{endpoint="label"} 3' in text
    for line in text.splitlines():  # every sample line parses as Prometheus text
        assert line.startswith("#") or re.fullmatch(r"[a-z_]+(\{[^}]*\})? [0-9.e+-]+", line), line


# -- transports and schema -------------------------------------------------------------------------------------
def test_through_httpx_asgi_transport(app_factory):
    app = app_factory()

    async def go() -> tuple[int, dict, int]:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
                ok = await c.post("/v1/label", json={"items": [{"text": "hello"}]}, headers=H)
                no = await c.post("/v1/label", json={"items": [{"text": "hello"}]})
                return ok.status_code, ok.json(), no.status_code

    code, body, denied = asyncio.run(go())
    assert code == 200 and body["items"][0]["label"] == pick("hello", LABELS) and denied == 401


def test_openapi_schema_paths(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    expected = {
        "/health": {"get"},
        "/livez": {"get"},
        "/webhook": {"post"},
        "/train": {"post"},
        "/versions": {"get"},
        "/metrics": {"get"},
        "/v1/label": {"post"},
        "/v1/verify": {"post"},
        "/v1/jobs": {"get", "post"},
        "/v1/jobs/{job_id}": {"get", "delete"},
        "/v1/jobs/{job_id}/results": {"get"},
        "/v1/jobs/{job_id}/resume": {"post"},
        "/setup": {"post"},
        "/predict": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    assert "multipart/form-data" in paths["/v1/jobs"]["post"]["requestBody"]["content"]
    items = schema["components"]["schemas"]["LabelRequest"]["properties"]["items"]
    assert items["maxItems"] == 256 and items["minItems"] == 1


def test_schemathesis_fuzz(app_factory):
    schemathesis = pytest.importorskip(
        "schemathesis", reason="schemathesis is not installed (pip install schemathesis)"
    )
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    app = app_factory(max_items=4, allowed_hosts=["testserver"])  # the Host schemathesis sends
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    ran = []
    # Schemathesis starts the app's lifespan itself (once, on its own loop) and its pytest plugin ends it.
    for result in schema.get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(max_examples=5, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            case.call_and_validate(headers=H, checks=checks)

        fuzz()
        ran.append(f"{op.method.upper()} {op.path}")
    assert len(ran) >= 12, ran


# -- the command and a real server process ------------------------------------------------------------------
def serve_env(token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_") and k != "LLMLABEL_SERVE_TOKEN"}
    if token:
        env["LLMLABEL_SERVE_TOKEN"] = token
    return env


def test_serve_command_refuses_unsafe_setups(tmp_path, fake):
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    run = lambda *a, env: subprocess.run(
        [sys.executable, "-m", "llmlabel", "serve", "-c", str(cfg), *a],  # noqa: E731
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    r = run(env=serve_env(None))
    assert r.returncode == 2 and r.stderr.strip().startswith("llmlabel: error: set $LLMLABEL_SERVE_TOKEN"), r.stderr
    r = run("--no-auth", "--host", "0.0.0.0", env=serve_env(None))
    assert r.returncode == 2 and "--no-auth is only allowed on a loopback host" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = run("--port", str(s.getsockname()[1]), env=serve_env())
    assert r.returncode == 2 and "cannot listen on 127.0.0.1" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run("--max-items", "0", env=serve_env())
    assert r.returncode == 2 and "--max-items must be positive" in r.stderr


class Server:
    """`llmlabel serve` as a real process on a free loopback port."""

    def __init__(self, cfg: Path, state: Path, log: Path) -> None:
        self.log = log
        start = log.stat().st_size if log.exists() else 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmlabel", "serve", "-c", str(cfg), "--port", "0", "--state-dir", str(state)],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "a"),
            env=serve_env(),
            cwd=cfg.parent,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            m = re.search(r"serving on (http://127\.0\.0\.1:\d+)", log.read_text()[start:])
            if m:
                self.url = m.group(1)
                break
            assert self.proc.poll() is None, log.read_text()
            time.sleep(0.05)
        else:
            raise AssertionError(log.read_text())
        self.http = httpx.Client(base_url=self.url, timeout=30)
        while self.http.get("/livez").status_code != 200:
            time.sleep(0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.http.close()

    def stop(self) -> int:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def test_uvicorn_process_label_audit_and_resume_after_sigkill(tmp_path):
    fake = FakeLLM(latency=0.02).start()
    server = None
    try:
        judges = two_judges(fake.base_url, concurrency=2)
        cfg = write_config(tmp_path / "c.yaml", None, judges=judges)
        state, log = tmp_path / "state", tmp_path / "serve.log"
        server = Server(cfg, state, log)
        c = server.http
        texts = [f"what is product {i} like?" for i in range(20)]
        r = c.post("/v1/label", json={"items": [{"id": i, "text": t} for i, t in enumerate(texts)]}, headers=H)
        assert r.status_code == 200
        assert [it["label"] for it in r.json()["items"]] == [pick(t, LABELS) for t in texts]
        assert c.post("/v1/label", json={"items": [{"text": "x"}]}).status_code == 401

        # An audit of 50 rows, to completion.
        rows = audit_csv(tmp_path / "audit.csv", 50, prefix="audit")
        jid = c.post(
            "/v1/jobs",
            files={"file": ("audit.csv", (tmp_path / "audit.csv").read_bytes())},
            data={"mode": "audit"},
            headers=H,
        ).json()["id"]
        info = wait_job(c, jid)
        assert info["state"] == "done"
        out = [json.loads(x) for x in c.get(f"/v1/jobs/{jid}/results", headers=H).text.splitlines()]
        assert len(out) == 50 and sum(o["flagged"] for o in out) == 25
        assert all(o["flagged"] is (rows[o["id"]]["label"] != o["suggested_label"]) for o in out)

        # A bigger job, killed mid-way (SIGKILL: no clean shutdown), resumed by a restarted server.
        n, n_judges, in_flight = 300, 2, 2 * 2  # two judges with concurrency 2
        audit_csv(tmp_path / "big.csv", n, prefix="big")
        before = fake.requests
        jid = c.post(
            "/v1/jobs",
            files={"file": ("big.csv", (tmp_path / "big.csv").read_bytes())},
            data={"mode": "audit"},
            headers=H,
        ).json()["id"]
        deadline = time.time() + 60
        while c.get(f"/v1/jobs/{jid}", headers=H).json()["progress"]["rows_done"] < 40:
            assert time.time() < deadline
            time.sleep(0.02)
        server.kill()
        killed_at = fake.requests - before
        assert killed_at < n * n_judges  # it really was mid-job
        server = Server(cfg, state, log)
        info = wait_job(server.http, jid, timeout=120)
        assert info["state"] == "done", info
        paid = fake.requests - before
        assert paid <= n * n_judges + in_flight, (paid, killed_at)
        assert len(info["ledger"]["runs"]) == 2 and info["ledger"]["runs"][0].get("interrupted") is True
        out = [json.loads(x) for x in server.http.get(f"/v1/jobs/{jid}/results", headers=H).text.splitlines()]
        assert sorted(o["id"] for o in out) == sorted(f"big{i}" for i in range(n))
        assert sum(o["flagged"] for o in out) == n // 2
        assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a graceful shutdown
        server = None
        logged = log.read_text()
        assert logged.count("Application shutdown complete") == 1  # the SIGKILLed one never got to say it
        assert TOKEN not in logged and "Traceback" not in logged
    finally:
        if server is not None:
            server.kill()
        fake.stop()
