"""Batch Calibration through `llmlabel label` (judge option `batch_calibration`): a logprob judge that
over-predicts one label, on a 127.0.0.1 server, gets its rows relabeled at the job's end; the ledger says so;
local, `--shard` + `merge` and `--batch` give the same labels; too few rows leave the answers as they are."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import label_main, read_jsonl, write_config
from fakebatch import FakeBatch
from fakeserver import TEXT, FakeLLM

from llmlabel.config import load_config
from llmlabel.io.paths import ledger_path
from llmlabel.io.shard_spec import Shard
from llmlabel.pipeline.batch import BatchOptions, run_batch
from llmlabel.pipeline.merge import merge_shards
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.run import run_job

LABELS = {"positive": "happy", "negative": "unhappy", "neutral": "neither"}
# The judge's logprobs: a negative review is positive 0.5 / negative 0.4, a positive one positive 0.8, and a
# content-free input ("N/A", "", "[MASK]") uniform (so content-free calibration leaves the bias in place).
NEG = {"positive": 0.5, "negative": 0.4, "neutral": 0.1}
POS = {"positive": 0.8, "negative": 0.1, "neutral": 0.1}


class BiasedLLM(FakeLLM):
    """A logprob judge whose distribution for a text is `dists[text]` (uniform for any other text)."""

    def __init__(self, dists: dict[str, dict[str, float]], other: dict[str, float] | None = None) -> None:
        super().__init__(answers={t: max(p, key=p.__getitem__) for t, p in dists.items()}, labels=list(LABELS))
        self.dists, self.other = dists, other or dict.fromkeys(LABELS, 1 / 3)

    def handle(self, req: dict[str, Any], headers: dict[str, str]) -> tuple[int | None, Any, dict[str, str]]:
        status, payload, out_headers = super().handle(req, headers)
        if status == 200 and req.get("logprobs"):
            m = TEXT.search(req["messages"][-1]["content"])
            p = self.dists.get(m.group(1) if m else "", self.other)
            step = payload["choices"][0]["logprobs"]["content"][0]
            step["top_logprobs"] = [{"token": lab, "logprob": math.log(v)} for lab, v in p.items()]
        return status, payload, out_headers


def _corpus(path: Path, n: int) -> tuple[dict[str, dict[str, float]], list[str]]:
    rows = [{"id": f"r{i}", "text": f"review number {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {r["text"]: NEG if i % 2 else POS for i, r in enumerate(rows)}, [
        "negative" if i % 2 else "positive" for i in range(n)
    ]


def _config(
    tmp_path: Path, base_url: str, batch: bool, name: str = "c.yaml", cache: str = "cache", **more: Any
) -> Path:
    judge = {"name": "a", "model": "m", "base_url": base_url, "logprobs": True, "concurrency": 4, "timeout": 5}
    judge.update(more)
    if batch:
        judge["batch_calibration"] = True
    task = {"name": "sentiment", "instructions": "How does the review feel?", "labels": LABELS}
    return write_config(tmp_path / name, None, judges=[judge], task=task, cache_dir=str(tmp_path / cache))


def _quality(out: Path) -> dict[str, Any]:
    return json.loads(ledger_path(out).read_text())["runs"][-1]["quality"]


@pytest.mark.slow
def test_labels_change_and_the_ledger_says_so(tmp_path, capsys):
    dists, truth = _corpus(tmp_path / "in.jsonl", 40)
    server = BiasedLLM(dists).start()
    try:
        plain, calibrated = tmp_path / "plain.jsonl", tmp_path / "bc.jsonl"
        rc, err = label_main(
            capsys, str(tmp_path / "in.jsonl"), "-c", str(_config(tmp_path, server.base_url, False)), "-o", str(plain)
        )
        assert rc == 0, err
        cfg = _config(tmp_path, server.base_url, True, "bc.yaml")
        rc, err = label_main(capsys, str(tmp_path / "in.jsonl"), "-c", str(cfg), "-o", str(calibrated))
        assert rc == 0, err
        first = calibrated.read_bytes()
        rc, err = label_main(capsys, str(tmp_path / "in.jsonl"), "-c", str(cfg), "-o", str(calibrated))  # again
        assert rc == 0, err
    finally:
        server.stop()
    assert [r["label"] for r in read_jsonl(plain)] == ["positive"] * 40  # the bias, content-free calibrated
    assert "batch_calibration" not in _quality(plain)
    got = read_jsonl(calibrated)
    assert [r["label"] for r in got] == truth
    assert got[1]["probs"] == {"positive": 0.2283, "negative": 0.4749, "neutral": 0.2968}
    assert all(r["judges"]["a"]["label"] == "positive" for r in got)  # the judge's answer as it was asked
    assert _quality(calibrated)["batch_calibration"] == {
        "judges": ["a"],
        "too_few_rows": {},
        "content_free": {"a": pytest.approx(dict.fromkeys(LABELS, 1 / 3))},  # the "N/A" answers' (uniform)
        "content_free_undone": [],
    }
    assert calibrated.read_bytes() == first  # a rerun (from the cache) calibrates once, the same way


@pytest.mark.slow
def test_too_few_rows_are_left_as_asked_and_the_run_says_so(tmp_path, capsys):
    dists, _ = _corpus(tmp_path / "in.jsonl", 8)
    server = BiasedLLM(dists).start()
    try:
        out = tmp_path / "o.jsonl"
        cfg = _config(tmp_path, server.base_url, True)
        rc, err = label_main(capsys, str(tmp_path / "in.jsonl"), "-c", str(cfg), "-o", str(out))
    finally:
        server.stop()
    assert rc == 0, err
    assert [r["label"] for r in read_jsonl(out)] == ["positive"] * 8
    assert _quality(out)["batch_calibration"] == {"judges": [], "too_few_rows": {"a": 8}}
    assert "batch calibration was not applied to a (8 rows with a distribution): it needs 20 rows" in err
    assert "(20, and 1 a label)" in err


@pytest.mark.slow
def test_an_embedded_judges_small_job_is_left_as_asked_without_a_warning(tmp_path, capsys):
    """The embedded judges calibrate by default (pipeline.lifecycle.local_judges): a job under 20 rows, like
    the README's 12 reviews, keeps its answers, says so in the ledger, and prints no warning about it."""
    from llmlabel.pipeline.lifecycle import EMBEDDED, local_judges

    local = [{"name": "qwen", "model": "q", "base_url": "http://127.0.0.1:9/v1"}]
    assert local_judges(local)[0].batch_calibration and local_judges(local, 3)[0].batch_calibration
    # ...on 3+ labels only: on two it never helped the 1.5B (it assumes balanced labels; SMS is 17% spam)
    assert not local_judges(local, 2)[0].batch_calibration
    dists, _ = _corpus(tmp_path / "in.jsonl", 8)
    server = BiasedLLM(dists).start()
    try:
        out = tmp_path / "o.jsonl"
        cfg = _config(tmp_path, server.base_url, True, cache_as=f"{EMBEDDED}m")
        rc, err = label_main(capsys, str(tmp_path / "in.jsonl"), "-c", str(cfg), "-o", str(out))
    finally:
        server.stop()
    assert rc == 0, err
    assert _quality(out)["batch_calibration"] == {"judges": [], "too_few_rows": {"a": 8}}
    assert "batch calibration" not in err


@pytest.mark.slow
def test_local_shards_and_batch_give_the_same_labels(tmp_path):
    """...with content-free inputs answered "positive" 0.9, which exaggerates the judge's lean on the reviews:
    content-free calibration turns the job's lean around, so it is undone before Batch Calibration, over
    every row in each case (the shards' manifests keep the judge's p_cf for the merge)."""
    inp = tmp_path / "in.jsonl"
    dists, truth = _corpus(inp, 30)
    server = FakeBatch(BiasedLLM(dists, {"positive": 0.9, "negative": 0.05, "neutral": 0.05})).start()
    opts = RunOptions(progress=False)
    try:
        local = tmp_path / "local.jsonl"
        assert run_job(load_config(_config(tmp_path, server.base_url, True, "l.yaml", "c1")), inp, local, opts).complete
        assert [r["label"] for r in read_jsonl(local)] == truth

        cfg = load_config(_config(tmp_path, server.base_url, True, "s.yaml", "c2"))
        for i in range(3):  # 12, 9 and 9 rows: too few for a shard alone, its output is not batch-calibrated
            assert run_job(cfg, inp, tmp_path / f"p{i}.jsonl", RunOptions(progress=False, shard=Shard(i, 3))).complete
            # (content-free calibration alone: "positive" 0.9 divided out turns every row "negative")
            assert {r["label"] for r in read_jsonl(tmp_path / f"p{i}.jsonl")} == {"negative"}
        merged = merge_shards([str(tmp_path / f"p{i}.jsonl") for i in range(3)], tmp_path / "merged.jsonl")
        assert merged.quality["batch_calibration"]["content_free_undone"] == ["a"]
        assert merged.quality["batch_calibration"] == _quality(local)["batch_calibration"]
        assert read_jsonl(tmp_path / "merged.jsonl") == read_jsonl(local)  # calibrated over every row

        cfg = load_config(_config(tmp_path, server.base_url, True, "b.yaml", "c3"))
        b = run_batch(cfg, inp, tmp_path / "batch.jsonl", opts, BatchOptions(poll=0.01))
        assert b.run is not None and b.run.complete
        assert read_jsonl(tmp_path / "batch.jsonl") == read_jsonl(local)
    finally:
        server.stop()


@pytest.mark.slow
def test_a_labeler_call_is_calibrated_over_its_rows_and_a_small_one_is_not(tmp_path):
    """The Python API (and the service, per request: the same refit) calibrates over the call's rows; a call
    of 3 texts is below the minimum, so its answers stand as asked instead of going flat."""
    import llmlabel

    dists, truth = _corpus(tmp_path / "in.jsonl", 40)
    server = BiasedLLM(dists).start()
    try:
        cfg = load_config(_config(tmp_path, server.base_url, True))
        with llmlabel.Labeler(cfg) as labeler:
            assert [r.label for r in labeler.label(list(dists))] == truth
            small = labeler.label(list(dists)[:3])
    finally:
        server.stop()
    assert [r.label for r in small] == ["positive"] * 3
    assert small[1].probs == pytest.approx(NEG, abs=1e-3)
