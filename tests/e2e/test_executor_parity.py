"""One request plan, several executors: the same rows and config through the local driver, the Batch API
(tests/fakebatch.py), `--shard` + `merge` and Ray give the same labels, for every label kind: one label
(Dawid-Skene over the whole job), a label set (multi-label), a shortlist with "none of these" rounds and a
taxonomy asked level by level. Three judges, each on a server of its own that answers in its own way.

A batch run asks nothing online: a shortlist's next round and a taxonomy's next level are bought in
batches of their own, one after the other."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import read_jsonl
from fakebatch import FakeBatch
from fakeserver import FakeLLM

from llmlabel.config import load_config
from llmlabel.io.shard_spec import Shard
from llmlabel.pipeline.batch import BatchOptions, run_batch
from llmlabel.pipeline.merge import merge_shards
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.run import run_job

KINDS = ["label", "multilabel", "shortlist", "taxonomy"]
EMOTIONS = ["joy", "anger", "fear", "sadness", "surprise"]
VERBS = ["book", "cancel", "change", "check", "find", "pay"]
NOUNS = ["flight", "hotel", "card", "password"]
INTENTS = {f"{v}_{n}": f"the user wants to {v} a {n}" for v, n in itertools.product(VERBS, NOUNS)}  # 24
TREE = {
    "animals": {"mammals": ["dog", "cat"], "birds": ["eagle", "sparrow"]},
    "vehicles": ["car", "bike", "boat"],
    "misc": ["other"],
}
LEAVES = [
    ["animals", "mammals", "dog"],
    ["animals", "mammals", "cat"],
    ["animals", "birds", "eagle"],
    ["animals", "birds", "sparrow"],
    ["vehicles", "car"],
    ["vehicles", "bike"],
    ["vehicles", "boat"],
    ["misc", "other"],
]
N = 30


def _case(kind: str) -> tuple[list[dict[str, str]], dict[str, Any], list[dict[str, Any]]]:
    """(rows, task, each judge's FakeLLM arguments): the judges agree on most rows, each wrong on its own."""
    r = random.Random(kind)
    rows = []
    judges: list[dict[str, Any]] = [{}, {}, {}]
    if kind == "label":
        task = {"name": "sentiment", "labels": {"positive": "happy", "negative": "unhappy", "neutral": "neither"}}
        for i in range(N):
            text = f"review {i}: it was {r.choice(['fine', 'bad', 'great'])}"
            rows.append({"id": f"r{i}", "text": text})
            truth = r.choice(list(task["labels"]))
            for n, j in enumerate(judges):
                j.setdefault("answers", {})[text] = (
                    truth if r.random() > 0.2 * (n + 1) else r.choice(["positive", "negative"])
                )
    elif kind == "multilabel":
        task = {"name": "emotions", "labels": {e: e for e in EMOTIONS}, "multi_label": True}
        for i in range(N):
            text = f"message {i} about my day"
            rows.append({"id": f"m{i}", "text": text})
            truth = r.sample(EMOTIONS, r.choice([1, 1, 2]))
            for j in judges:
                got = list(truth)
                if r.random() < 0.3:
                    got.append(r.choice([e for e in EMOTIONS if e not in got]))
                j.setdefault("answers", {})[text] = "|".join(got)
            for j in judges:
                j["labels"] = EMOTIONS
    elif kind == "shortlist":
        task = {"name": "intents", "labels": INTENTS, "shortlist": 5, "shortlist_rounds": 5}
        for i, (v, n_) in enumerate(itertools.product(VERBS, NOUNS)):
            text = f"could you {v} my {n_} please"
            rows.append({"id": f"s{i}", "text": text})
            for k, j in enumerate(judges):
                j.setdefault("answers", {})[text] = f"{v}_{n_}" if (i + k) % 5 else r.choice(list(INTENTS))
        for k, text in enumerate(["zzz qqq xxx", "nothing like the others"]):  # found only after "none of these"
            rows.append({"id": f"odd{k}", "text": text})
            for j in judges:
                j.setdefault("answers", {})[text] = "pay_card"
        for j in judges:
            j["labels"] = list(INTENTS)
    else:
        task = {"name": "things", "taxonomy": TREE}
        for i in range(N):
            text = f"thing {i} seen today"
            rows.append({"id": f"t{i}", "text": text})
            truth = r.choice(LEAVES)
            for j in judges:
                j.setdefault("paths", {})[text] = truth if r.random() > 0.3 else r.choice(LEAVES)
    return rows, task, judges


@pytest.fixture(params=KINDS)
def case(request, tmp_path):
    kind = request.param
    rows, task, fakes = _case(kind)
    servers = [FakeBatch(FakeLLM(**f)).start() for f in fakes]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))

    def config(cache: str) -> Path:
        cfg = {
            "task": task,
            "judges": [
                {"name": n, "model": f"m-{n}", "base_url": s.base_url, "concurrency": 4, "timeout": 5}
                for n, s in zip("abc", servers)
            ],
            "aggregate": "dawid_skene" if kind == "label" else "majority",
            "cache_dir": str(tmp_path / cache),
        }
        p = tmp_path / f"{cache}.yaml"
        p.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return p

    yield kind, tmp_path / "in.jsonl", config, servers
    for s in servers:
        s.stop()


def _outcome(path: Path) -> list[dict[str, Any]]:
    """What a row's answers decide (the record minus nothing: every field must agree)."""
    return read_jsonl(path)


def _opts() -> RunOptions:
    return RunOptions(progress=False)


@pytest.mark.slow
def test_local_batch_and_shards_give_the_same_labels(case):
    kind, inp, config, servers = case
    out = inp.parent
    res = run_job(load_config(config("c-local")), inp, out / "local.jsonl", _opts())
    assert res.complete, res.stopped_by
    local = _outcome(out / "local.jsonl")
    assert len(local) == len(inp.read_text().splitlines()) and all(r["error"] is None for r in local)
    online = sum(s.online for s in servers)

    # The Batch API: nothing asked online, each request bought once.
    b = run_batch(load_config(config("c-batch")), inp, out / "batch.jsonl", _opts(), BatchOptions(poll=0.01))
    assert b.run is not None and b.run.complete
    assert sum(s.online for s in servers) == online  # (the run that wrote the output found every answer cached)
    paid = [k for s in servers for k in s.answered]
    assert len(paid) == len(set(paid)) == b.collected
    assert _outcome(out / "batch.jsonl") == local
    if kind in ("shortlist", "taxonomy"):
        assert b.submitted > len(servers)  # a batch per round / level, in turn

    # Two shards merged: the same rows, the same labels (a label set, a path, Dawid-Skene refit over all).
    cfg = load_config(config("c-shards"))
    for i in range(2):
        r = run_job(cfg, inp, out / f"part{i}.jsonl", RunOptions(progress=False, shard=Shard(i, 2)))
        assert r.complete
    merge_shards([str(out / "part0.jsonl"), str(out / "part1.jsonl")], out / "merged.jsonl")
    assert _outcome(out / "merged.jsonl") == local


@pytest.mark.slow
def test_ray_gives_the_same_labels(case):
    pytest.importorskip("ray")
    from llmlabel.distributed.driver import run_job_ray

    kind, inp, config, servers = case
    out = inp.parent
    assert run_job(load_config(config("c-local")), inp, out / "local.jsonl", _opts()).complete
    res = run_job_ray(load_config(config("c-ray")), str(inp), out / "ray.jsonl", _opts(), actors=2)
    assert res.complete, res.stopped_by
    assert _outcome(out / "ray.jsonl") == _outcome(out / "local.jsonl")
