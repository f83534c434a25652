"""The service computes what the CLI computes: the same row outcome for /v1/label as `llmlabel label`, and the
same audit scores and flags for an audit job as `llmlabel audit`, on the same input and the same answers."""

import csv
import functools
import json
import time

import pytest

pytest.importorskip("fastapi")
from conftest import write_config  # noqa: E402
from fakeserver import FakeLLM, pick  # noqa: E402
from fastapi.testclient import TestClient as _TestClient  # noqa: E402

from llmlabel.auditing.audit import AuditOptions, run_audit  # noqa: E402
from llmlabel.config import load_config  # noqa: E402
from llmlabel.pipeline.options import RunOptions  # noqa: E402
from llmlabel.pipeline.row_labeler import OUTCOME  # noqa: E402
from llmlabel.pipeline.run import run_job  # noqa: E402
from llmlabel.service.app import create_app  # noqa: E402

# A loopback Host, as a local client sends it (the service refuses TestClient's 'testserver').
TestClient = functools.partial(_TestClient, base_url="http://127.0.0.1:8000")

TOKEN = "test-token-0123456789"
H = {"Authorization": f"Bearer {TOKEN}"}
LABELS = ["positive", "negative"]


def other(label: str) -> str:
    return LABELS[1 - LABELS.index(label)]


def wait_job(c, jid: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = c.get(f"/v1/jobs/{jid}", headers=H).json()
        if info["state"] in ("done", "failed", "cancelled"):
            return info
        time.sleep(0.05)
    raise AssertionError(f"job {jid} still {info['state']}")


def judges(base_url: str) -> list[dict]:
    return [{"name": n, "model": f"fake-{n}", "base_url": base_url, "timeout": 5} for n in ("a", "b")]


def _cli_and_served(tmp_path, cfg, texts: list[str]) -> tuple[list[dict], list[dict]]:
    """The rows `llmlabel label` writes for `texts`, and the items /v1/label answers for them."""
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    run_job(cfg, tmp_path / "in.jsonl", tmp_path / "out.jsonl", RunOptions(progress=False))
    cli = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    with TestClient(create_app(cfg, token=TOKEN, state_dir=tmp_path / "s")) as c:
        r = c.post("/v1/label", json={"items": [{"text": t} for t in texts]}, headers=H)
    assert r.status_code == 200, r.text
    return cli, r.json()["items"]


@pytest.mark.slow
def test_sync_label_rows_equal_the_cli_rows(tmp_path, fake):
    cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=judges(fake.base_url)))
    texts = [f"item {i}: {'great' if i % 3 else 'awful'} value" for i in range(8)] + ["   "]
    cli, served = _cli_and_served(tmp_path, cfg, texts)
    assert served[-1]["error"] == cli[-1]["error"] and cli[-1]["error"].startswith("empty text")
    for row, item in zip(cli, served, strict=True):
        assert {k: item[k] for k in OUTCOME} == {k: row[k] for k in OUTCOME}


@pytest.mark.slow
def test_sync_label_aggregates_over_the_request_as_a_file_run_does(tmp_path):
    """Dawid-Skene over a request's items (and a judge that answers one label to everything left out), as over a
    file's rows: per-item votes would give other probabilities and keep the stuck judge's vote."""
    texts = [f"note {i}: the service was {'slow' if i % 4 else 'fine'} today" for i in range(30)]
    noisy = {t: other(pick(t, LABELS)) for t in texts[::3]}
    servers = [
        FakeLLM().start(),
        FakeLLM(answers=noisy).start(),
        FakeLLM(answers=dict.fromkeys(texts, "positive")).start(),
    ]
    try:
        js = [{"name": n, "model": f"fake-{n}", "base_url": s.base_url, "timeout": 5} for n, s in zip("abc", servers)]
        cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=js, aggregate="dawid_skene"))
        cli, served = _cli_and_served(tmp_path, cfg, texts)
        for row, item in zip(cli, served, strict=True):
            assert {k: item[k] for k in OUTCOME} == {k: row[k] for k in OUTCOME}
    finally:
        for s in servers:
            s.stop()


@pytest.mark.slow
def test_audit_job_scores_and_flags_equal_the_cli_audit(tmp_path, fake):
    # Judge b disagrees with judge a on every fifth text; a third of the given labels are wrong: Dawid-Skene
    # and the classifier both have something to weigh.
    rows = []
    for i in range(60):
        text = f"row {i}: the delivery was {'quick' if i % 4 else 'late'} and the box {'intact' if i % 3 else 'torn'}"
        right = pick(text, LABELS)
        rows.append({"id": f"r{i}", "text": text, "label": right if i % 3 else other(right)})
    with open(tmp_path / "in.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        w.writeheader()
        w.writerows(rows)
    b = FakeLLM(answers={r["text"]: other(pick(r["text"], LABELS)) for r in rows[::5]}).start()
    try:
        js = [
            {"name": "a", "model": "fake-a", "base_url": fake.base_url},
            {"name": "b", "model": "fake-b", "base_url": b.base_url},
        ]
        cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=js))
        cli = run_audit(cfg, tmp_path / "in.csv", tmp_path / "audit.jsonl", AuditOptions(progress=False))
        assert cli.complete and 0 < cli.summary["flagged"] < len(rows)
        with TestClient(create_app(cfg, token=TOKEN, state_dir=tmp_path / "s")) as c:
            jid = c.post(
                "/v1/jobs",
                files={"file": ("in.csv", (tmp_path / "in.csv").read_bytes())},
                data={"mode": "audit"},
                headers=H,
            ).json()["id"]
            info = wait_job(c, jid)
            assert info["state"] == "done", info
            served = [json.loads(x) for x in c.get(info["results"], headers=H).text.splitlines()]
    finally:
        b.stop()
    expected = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(o["id"], o["score"], o["flagged"]) for o in served] == [
        (o["id"], o["score"], o["flagged"]) for o in expected
    ]
    assert served == expected  # every field: judge_score, cleanlab_score, suggested_label, probs, ...
    assert info["quality"] == {k: v for k, v in cli.summary.items() if k != "input"}
