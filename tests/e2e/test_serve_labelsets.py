"""`llmlabel serve` for the label sets beyond one label a text: /v1/label returns a multi-label task's set with
each label's probability and a taxonomy task's path with its depth and per-level confidence (the fields
`llmlabel label` writes, in the response schema); /v1/verify, which checks one given label, refuses those
tasks in one clear error; batch jobs write the same fields."""

from __future__ import annotations

import functools
import json
import time

import pytest

pytest.importorskip("fastapi")
from fakeserver import FakeLLM  # noqa: E402
from fastapi.testclient import TestClient as _TestClient  # noqa: E402

from llmlabel.config import Config  # noqa: E402
from llmlabel.service.app import create_app  # noqa: E402

pytestmark = pytest.mark.slow  # each test takes over a second (conftest.py's rule)

TestClient = functools.partial(_TestClient, base_url="http://127.0.0.1:8000")
LABELS = ["joy", "anger", "fear"]
TREE = {"animals": {"mammals": ["dog", "cat"], "birds": ["owl"]}, "vehicles": ["car", "bike"]}


def _app(tmp_path, task, servers):
    judges = [{"name": n, "model": "m", "base_url": s.base_url} for n, s in zip("abc", servers)]
    cfg = Config.model_validate({"task": task, "judges": judges, "cache_dir": str(tmp_path / "cache")})
    return create_app(cfg, token=None, state_dir=tmp_path / "state")


@pytest.fixture
def multilabel_servers():
    answers = {"a sunny scary day": "joy|fear", "so angry": "anger"}
    servers = [
        FakeLLM(answers=answers, labels=LABELS).start(),
        FakeLLM(answers={**answers, "a sunny scary day": "joy"}, labels=LABELS).start(),
    ]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture
def taxonomy_servers():
    # Two judges agree down to mammals and then split dog / cat: below the 0.6 threshold, the row stops there.
    a = FakeLLM(paths={"a barking thing": ["animals", "mammals", "dog"], "two wheels": ["vehicles", "bike"]}).start()
    b = FakeLLM(paths={"a barking thing": ["animals", "mammals", "cat"], "two wheels": ["vehicles", "bike"]}).start()
    yield [a, b]
    a.stop()
    b.stop()


def test_label_returns_the_set_and_per_label_probs(tmp_path, multilabel_servers):
    task = {"name": "emo", "labels": LABELS, "multi_label": True}
    with TestClient(_app(tmp_path, task, multilabel_servers)) as c:
        r = c.post("/v1/label", json={"items": [{"id": "x", "text": "a sunny scary day"}, {"text": "so angry"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] == "multi_label"
        x, y = body["items"]
        assert x["id"] == "x" and x["labels"] == ["joy", "fear"] and x["label"] == "joy|fear"
        assert x["probs"] == {"joy": 1.0, "anger": 0.0, "fear": 0.5} and x["path"] is None
        assert y["labels"] == ["anger"] and y["probs"]["anger"] == 1.0
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        assert {"labels", "path", "depth", "level_confidence"} <= set(schema["LabelResult"]["properties"])
        assert schema["LabelResponse"]["properties"]["kind"]["enum"] == ["label", "multi_label", "taxonomy"]


def test_label_returns_the_taxonomy_path_depth_and_level_confidence(tmp_path, taxonomy_servers):
    task = {"name": "things", "taxonomy": TREE, "taxonomy_threshold": 0.6}
    with TestClient(_app(tmp_path, task, taxonomy_servers)) as c:
        r = c.post("/v1/label", json={"items": [{"text": "a barking thing"}, {"text": "two wheels"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] == "taxonomy"
        unsure, sure = body["items"]
        assert unsure["path"] == ["animals", "mammals"] and unsure["depth"] == 2 and unsure["label"] == "mammals"
        assert unsure["level_confidence"] == [1.0, 1.0, 0.5]  # the third level asked, refused
        assert sure["path"] == ["vehicles", "bike"] and sure["depth"] == 2 and sure["level_confidence"] == [1.0, 1.0]
        assert sure["labels"] is None


@pytest.mark.parametrize("kind", ["multi_label", "taxonomy"])
def test_verify_refuses_a_set_or_path_task_in_one_clear_error(tmp_path, multilabel_servers, taxonomy_servers, kind):
    if kind == "multi_label":
        app = _app(tmp_path, {"name": "emo", "labels": LABELS, "multi_label": True}, multilabel_servers)
    else:
        app = _app(tmp_path, {"name": "things", "taxonomy": TREE}, taxonomy_servers)
    asked = sum(s.requests for s in multilabel_servers + taxonomy_servers)
    with TestClient(app) as c:
        r = c.post("/v1/verify", json={"items": [{"text": "so angry", "label": "anger"}]})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "POST /v1/label" in detail
    assert ("multi-label" if kind == "multi_label" else "taxonomy") in detail
    assert sum(s.requests for s in multilabel_servers + taxonomy_servers) == asked  # nothing asked, nothing paid


def test_single_label_responses_say_their_kind(tmp_path, fake):
    with TestClient(_app(tmp_path, {"name": "s", "labels": ["positive", "negative"]}, [fake])) as c:
        body = c.post("/v1/label", json={"items": [{"text": "fine"}]}).json()
    assert body["kind"] == "label" and body["items"][0]["labels"] is None and body["items"][0]["path"] is None


def test_jobs_write_the_set_and_the_path(tmp_path, taxonomy_servers):
    """A batch job's results are `llmlabel label`'s rows: a taxonomy job's carry the path (as /v1/label's)."""
    app = _app(tmp_path, {"name": "things", "taxonomy": TREE, "taxonomy_threshold": 0.6}, taxonomy_servers)
    with TestClient(app) as c:
        r = c.post("/v1/jobs", files={"file": ("x.csv", "id,text\n1,a barking thing\n2,two wheels\n")})
        assert r.status_code == 202, r.text
        jid = r.json()["id"]
        for _ in range(600):
            if c.get(f"/v1/jobs/{jid}").json()["state"] == "done":
                break
            time.sleep(0.05)
        rows = [json.loads(x) for x in c.get(f"/v1/jobs/{jid}/results").text.splitlines()]
        synced = c.post("/v1/label", json={"items": [{"text": "a barking thing"}]}).json()["items"][0]
    assert rows[0]["path"] == synced["path"] == ["animals", "mammals"] and rows[0]["depth"] == synced["depth"] == 2
    assert rows[1]["path"] == ["vehicles", "bike"]
