"""The request plan (pipeline/requests.py): what a run pays for next, stage by stage, given the cache. A
shortlist's next round is asked only after "none of these"; a taxonomy's next level only once the level above
is answered, and under the node its answers chose."""

from __future__ import annotations

import json
from typing import Any

from llmlabel.config import Config
from llmlabel.llm.cache import open_cache
from llmlabel.llm.prompts import shortlist_choices, taxonomy_parent
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.row_labeler import RowLabeler


def _labeler(tmp_path, task: dict[str, Any], judges: int = 2) -> RowLabeler:
    cfg = Config.model_validate(
        {
            "task": task,
            "judges": [{"name": n, "model": f"m-{n}", "base_url": "http://127.0.0.1:9/v1"} for n in "ab"[:judges]],
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    return RowLabeler(cfg, cfg.judges, RunOptions(progress=False), open_cache(cfg.cache_dir))


def _answer(labeler: RowLabeler, key: str, label: str) -> None:
    labeler.cache.set(key, {"content": json.dumps({"label": label}), "finish_reason": "stop", "usage": {}})


def test_a_plain_row_asks_every_judge_once_and_nothing_once_cached(tmp_path):
    labeler = _labeler(tmp_path, {"name": "s", "labels": {"pos": "good", "neg": "bad"}})
    rows = [(0, {"id": "r0", "text": "fine"}), (1, {"id": "r1", "text": "   "})]  # a blank row asks nothing
    first = list(labeler.plan.pending(rows))
    assert [(r.judge, r.row, r.row_id, r.stage, r.kind) for r in first] == [
        ("a", 0, "r0", 0, "label"),
        ("b", 0, "r0", 0, "label"),
    ]
    assert all(r.key and b'"model"' in r.body for r in first)
    _answer(labeler, first[0].key, "pos")
    assert [r.judge for r in labeler.plan.pending(rows)] == ["b"]
    _answer(labeler, first[1].key, "neg")
    assert list(labeler.plan.pending(rows)) == []
    labeler.cache.close()


def test_a_shortlist_asks_its_next_round_only_after_none_of_these(tmp_path):
    labels = {f"l{i}": f"label number {i}" for i in range(12)}
    labeler = _labeler(tmp_path, {"name": "s", "labels": labels, "shortlist": 4, "shortlist_rounds": 3}, judges=1)
    rows = [(0, {"id": "r0", "text": "label number 7"})]
    (r0,) = labeler.plan.pending(rows)
    first = shortlist_choices(r0.kind)
    assert r0.stage == 0 and first is not None and len(first) == 4
    _answer(labeler, r0.key, "none of these")
    (r1,) = labeler.plan.pending(rows)
    second = shortlist_choices(r1.kind)
    assert r1.stage == 1 and second is not None and not set(first) & set(second)
    _answer(labeler, r1.key, second[0])  # found: no third round
    assert list(labeler.plan.pending(rows)) == []
    labeler.cache.close()


def test_a_taxonomy_asks_the_next_level_under_the_chosen_node(tmp_path):
    tree = {"animals": {"mammals": ["dog", "cat"], "birds": ["eagle", "owl"]}, "vehicles": ["car", "bike"]}
    labeler = _labeler(tmp_path, {"name": "t", "taxonomy": tree})
    rows = [(0, {"id": "r0", "text": "a dog"})]
    top = list(labeler.plan.pending(rows))
    assert [(r.judge, r.stage, taxonomy_parent(r.kind)) for r in top] == [("a", 0, ()), ("b", 0, ())]
    _answer(labeler, top[0].key, "animals")
    assert [r.judge for r in labeler.plan.pending(rows)] == ["b"]  # the level is decided once every judge answered
    _answer(labeler, top[1].key, "animals")
    second = list(labeler.plan.pending(rows))
    assert [(r.stage, taxonomy_parent(r.kind)) for r in second] == [(1, ("animals",))] * 2
    for r in second:
        _answer(labeler, r.key, "mammals")
    third = list(labeler.plan.pending(rows))
    assert [(r.stage, taxonomy_parent(r.kind), shortlist_choices(r.kind)) for r in third] == [
        (2, ("animals", "mammals"), ["dog", "cat"])
    ] * 2
    for r in third:
        _answer(labeler, r.key, "dog")
    assert list(labeler.plan.pending(rows)) == []
    labeler.cache.close()
