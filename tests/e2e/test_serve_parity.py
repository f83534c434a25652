"""The service computes what the CLI computes: the same row outcome for /v1/label as `llmlabel label`, and the
same audit scores and flags for an audit job as `llmlabel audit`, on the same input and the same answers."""

import json

import pytest

pytest.importorskip("fastapi")
from conftest import write_config  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from llmlabel.config import load_config  # noqa: E402
from llmlabel.pipeline.runner import OUTCOME, RunOptions, run_job  # noqa: E402
from llmlabel.service.app import create_app  # noqa: E402

TOKEN = "test-token-0123456789"
H = {"Authorization": f"Bearer {TOKEN}"}


def judges(base_url: str) -> list[dict]:
    return [{"name": n, "model": f"fake-{n}", "base_url": base_url, "timeout": 5} for n in ("a", "b")]


def test_sync_label_rows_equal_the_cli_rows(tmp_path, fake):
    cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=judges(fake.base_url)))
    texts = [f"item {i}: {'great' if i % 3 else 'awful'} value" for i in range(8)] + ["   "]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    run_job(cfg, tmp_path / "in.jsonl", tmp_path / "out.jsonl", RunOptions(progress=False))
    cli = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    with TestClient(create_app(cfg, token=TOKEN, state_dir=tmp_path / "s")) as c:
        r = c.post("/v1/label", json={"items": [{"text": t} for t in texts]}, headers=H)
    assert r.status_code == 200, r.text
    served = r.json()["items"]
    assert served[-1]["error"] == cli[-1]["error"] and cli[-1]["error"].startswith("empty text")
    for row, item in zip(cli, served, strict=True):
        assert {k: item[k] for k in OUTCOME} == {k: row[k] for k in OUTCOME}
