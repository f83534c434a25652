"""`label --batch` writes its rows itself (issue 24): once the batches are collected, the batch executor appends the
rows to the run's part file from the answers it bought, inside the same `Run` (one lock, one part file, one
finish), with no second, cache-only local run. Only the rows no batch answered go to the local executor."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import read_jsonl, write_corpus
from fakebatch import FakeBatch
from fakeserver import FakeLLM

from llmlabel.config import load_config
from llmlabel.pipeline import executors, lifecycle
from llmlabel.pipeline.batch import BatchOptions, run_batch
from llmlabel.pipeline.executors import LocalExecutor, RowSource
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.run import run_job

INTENTS = {
    f"{v}_{n}": f"the user wants to {v} a {n}" for v, n in itertools.product(["book", "pay"], ["flight", "card"])
}
TREE = {"animals": {"mammals": ["dog", "cat"], "birds": ["eagle"]}, "vehicles": ["car", "bike"]}
BATCHES = {"label": 1, "shortlist": 2, "taxonomy": 3, "cascade": 3}  # one per judge and stage (round, level)
PATHS = [["animals", "mammals", "dog"], ["animals", "birds", "eagle"], ["vehicles", "bike"]]


def _case(tmp_path: Path, kind: str) -> tuple[FakeBatch, Any]:
    """A fake Batch API server, and a function from a cache folder's name to the config of the kind's task."""
    rows = write_corpus(tmp_path / "in.jsonl", 24, fmt="jsonl")
    texts = [r["text"] for r in rows]
    task: dict[str, Any] = {"name": "sentiment", "labels": {"positive": "happy", "negative": "unhappy"}}
    extra: dict[str, Any] = {}
    names = ["a"]
    if kind == "shortlist":  # the last rows' label is found only after "none of these" (a second batch round)
        task = {"name": "intents", "labels": INTENTS, "shortlist": 2, "shortlist_rounds": 2}
        llm = FakeLLM(
            answers={t: list(INTENTS)[3 if n > 20 else n % 2] for n, t in enumerate(texts)}, labels=[*INTENTS]
        )
    elif kind == "taxonomy":  # two or three levels: a batch round per level
        task = {"name": "things", "taxonomy": TREE}
        llm = FakeLLM(paths={t: PATHS[n % 3] for n, t in enumerate(texts)})
    else:
        llm = FakeLLM()
        if kind == "cascade":  # three judges, the third never asked once the first two agree (rows hold two)
            names, extra = ["a", "b", "c"], {"cascade": {"enabled": True, "threshold": 0.5, "probe_rows": 0}}
    fb = FakeBatch(llm).start()

    def config(cache: str) -> Any:
        judges = [
            {"name": n, "model": f"m-{n}", "base_url": fb.base_url, "concurrency": 4, "timeout": 5} for n in names
        ]
        cfg = {"task": task, "judges": judges, "cache_dir": str(tmp_path / cache), **extra}
        (tmp_path / f"{cache}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        return load_config(tmp_path / f"{cache}.yaml")

    return fb, config


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["label", "shortlist", "taxonomy", "cascade"])
def test_batch_run_writes_its_rows_in_one_run_without_a_local_pass(tmp_path, monkeypatch, kind):
    fb, config = _case(tmp_path, kind)
    try:
        assert run_job(config("c-online"), tmp_path / "in.jsonl", tmp_path / "online.jsonl", RunOptions()).complete
        online = fb.online

        async def no_local_run(self, labeler, source, sink):
            raise AssertionError("the local executor ran during a --batch run whose every answer a batch gave")

        entered = []
        real_enter = lifecycle.Run.__enter__
        monkeypatch.setattr(executors.LocalExecutor, "execute", no_local_run)
        monkeypatch.setattr(lifecycle.Run, "__enter__", lambda self: entered.append(self) or real_enter(self))
        out = tmp_path / "batch.jsonl"
        res = run_batch(
            config("c-batch"), tmp_path / "in.jsonl", out, RunOptions(progress=False), BatchOptions(poll=0.01)
        )
        assert res.run is not None and res.run.complete and res.run.rows == 24
        assert len(entered) == 1  # one lifecycle: one lock, one part file, one finish
        assert fb.online == online  # nothing asked online
        assert res.submitted == BATCHES[kind]
        assert read_jsonl(out) == read_jsonl(tmp_path / "online.jsonl")  # every field of every record
        if kind == "cascade":
            assert all(len(r["judges"]) == 2 for r in read_jsonl(out))  # (the rows' own path, not the bulk pass)
        assert not Path(f"{out}.part").exists()
        ledger = json.loads(Path(f"{out}.ledger.json").read_text())
        assert [r.get("kind") for r in ledger["runs"]] == ["batch", None]  # the purchase, then the rows
        assert [r["state"] for r in ledger["runs"]] == ["finished", "finished"]
        assert ledger["runs"][1]["rows_done"] == 24 and ledger["runs"][1]["requests"] == 0
    finally:
        fb.stop()


@pytest.mark.slow
def test_only_the_rows_no_batch_answered_are_asked_online(tmp_path, monkeypatch):
    """30% of the batch expires and the fallback is online: the local executor gets those rows, not every row."""
    fb, config = _case(tmp_path, "label")
    fb.expire_fraction = 0.3
    try:
        seen: list[int] = []
        real = LocalExecutor.execute

        async def spy(self, labeler, source, sink):
            rows = list(source.read())
            seen.extend(i for i, _ in rows)
            return await real(self, labeler, RowSource(lambda: iter(rows), source.total, source.done_before), sink)

        monkeypatch.setattr(executors.LocalExecutor, "execute", spy)
        out = tmp_path / "batch.jsonl"
        said: list[str] = []
        opts = RunOptions(progress=True, echo=said.append)
        res = run_batch(config("c"), tmp_path / "in.jsonl", out, opts, BatchOptions(poll=0.01, fallback="online"))
        assert res.run is not None and res.run.complete and res.collected == 16
        assert len(seen) == fb.online == 24 - 16  # the expired lines' rows, asked online once each
        assert any("8 rows have answers no batch gave: asking them online" in s for s in said)
        got = read_jsonl(out)
        assert len(got) == 24 and all(r["error"] is None for r in got)
        assert len(fb.answered) == len(set(fb.answered))
    finally:
        fb.stop()


def test_no_wait_adds_no_ledger_run_and_the_rerun_writes_the_rows_once(tmp_path):
    """A call that only submits leaves the part file (no row) and no run in the ledger; the rerun that collects
    writes every row once, and its ledger holds the purchase and the run that wrote the rows."""
    fb, config = _case(tmp_path, "label")
    try:
        out = tmp_path / "batch.jsonl"
        opts = RunOptions(progress=False)
        res = run_batch(config("c"), tmp_path / "in.jsonl", out, opts, BatchOptions(poll=0.01, wait=False))
        assert res.pending == 1 and res.run is None and not out.exists()
        assert not Path(f"{out}.ledger.json").exists() and not Path(f"{out}.ledger.jsonl").exists()
        res = run_batch(config("c"), tmp_path / "in.jsonl", out, opts, BatchOptions(poll=0.01))
        assert res.submitted == 0 and res.collected == 24 and res.run is not None and res.run.complete
        assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(24)]
        runs = json.loads(Path(f"{out}.ledger.json").read_text())["runs"]
        assert [(r.get("kind"), r["state"], r["rows_done"]) for r in runs] == [
            ("batch", "finished", 0),
            (None, "finished", 24),
        ]
        assert len(fb.batches) == 1 and fb.online == 0
    finally:
        fb.stop()


@pytest.mark.slow
def test_rows_the_part_file_keeps_are_not_bought(tmp_path):
    """A rerun with --batch of a finished job whose two rows failed: those rows are kept as they are (only
    --retry-errors asks again), so no batch buys their requests; the other rows are written from the cache."""
    fb, config = _case(tmp_path, "label")
    rows = read_jsonl(tmp_path / "in.jsonl")
    fb.llm.answers = {rows[3]["text"]: "maybe", rows[7]["text"]: "maybe"}  # not a label, re-ask or not
    try:
        out = tmp_path / "out.jsonl"
        first = run_job(config("c"), tmp_path / "in.jsonl", out, RunOptions(progress=False))
        assert first.complete and [r["id"] for r in read_jsonl(out) if r["error"]] == ["r3", "r7"]
        asked = fb.online
        res = run_batch(config("c"), tmp_path / "in.jsonl", out, RunOptions(progress=False), BatchOptions(poll=0.01))
        assert res.submitted == 0 and not fb.batches and fb.online == asked
        assert res.run is not None and res.run.complete and res.run.ledger.rows_skipped == 2
        assert [r["id"] for r in read_jsonl(out) if r["error"]] == ["r3", "r7"] and len(read_jsonl(out)) == 24
    finally:
        fb.stop()
