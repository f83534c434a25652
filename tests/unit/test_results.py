"""The typed data model (llmlabel.results): results built by the pipeline's RowLabeler, records only through io.records,
the vote matrix aggregation reads, and a refit that returns new results."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from llmlabel.config import parse_config
from llmlabel.ensemble.combine import PosteriorRevote, refit
from llmlabel.ensemble.votes import VoteMatrix
from llmlabel.io.output import PartFile, line, write_output
from llmlabel.io.records import from_record, report_record, to_record, to_records
from llmlabel.llm.cache import open_cache
from llmlabel.pipeline.lifecycle import Output
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.row_labeler import RowLabeler
from llmlabel.results import AggregationReport, JudgeAnswer, JudgeFit, OneLabel, RowResult

LABELS = ["pos", "neg", "mixed"]
TREE = {"animal": ["cat", "dog"], "plant": ["tree", "flower"]}


def _labeler(tmp_path: Any, **task: Any) -> RowLabeler:
    judges = [{"name": n, "model": n, "base_url": "http://127.0.0.1:9/v1"} for n in ("a", "b", "c")]
    given = task if "taxonomy" in task else {"labels": LABELS, **task}
    cfg = parse_config({"task": {"name": "t", **given}, "judges": judges, "cache_dir": str(tmp_path / "cache")})
    return RowLabeler(cfg, cfg.judges, RunOptions(), open_cache(cfg.cache_dir))


def _round_trip(rec: dict[str, Any], kind: str | None = None) -> RowResult:
    """from_record then to_record gives the same record, in the same order, as the same bytes."""
    res = from_record(json.loads(line(rec)), kind)
    back = to_record(res)
    assert list(back) == list(rec) and line(back) == line(rec)
    return res


def test_a_single_label_row_is_built_typed_and_round_trips(tmp_path):
    labeler = _labeler(tmp_path)
    start, text, _ = labeler.start(4, {"id": "r1", "text": "great", "label": "old", "meta": {"k": [1, 2]}})
    assert (
        text == "great"
        and start.position == 4
        and dict(start.inputs) == {"id": "r1", "text": "great", "label_input": "old", "meta": {"k": [1, 2]}}
    )
    answers = {
        "a": JudgeAnswer(label="pos", probs={"pos": 0.9, "neg": 0.05, "mixed": 0.05}),
        "b": JudgeAnswer(label="pos"),
        "c": JudgeAnswer(error="invalid answer: 'x'"),
    }
    res = labeler.result(start, answers)
    assert (res.label, res.error, res.kind) == ("pos", None, "label") and res.judges["c"].error
    assert res.label_set == frozenset({"pos"}) and res.depth is None
    rec = to_record(res)
    assert list(rec) == [
        "_i",
        "id",
        "text",
        "label_input",
        "meta",
        "label",
        "confidence",
        "probs",
        "candidates",
        "error",
        "judges",
    ]
    assert rec["judges"] == {
        "a": answers["a"].model_dump(exclude_none=True),
        "b": {"label": "pos"},
        "c": {"error": "invalid answer: 'x'"},
    }
    assert _round_trip(rec) == res


def test_a_row_with_nothing_to_label_and_an_id_column_named_id(tmp_path):
    labeler = _labeler(tmp_path)
    start, text, _ = labeler.start(0, {"text": "  ", "id": 7, "x": 1})
    assert text is None and not start.asked and start.error.startswith("empty text")
    rec = to_record(labeler.finish(start, None))
    assert list(rec) == ["_i", "text", "id", "x", "label", "confidence", "probs", "candidates", "judges", "error"]
    assert rec["id"] == "7"
    back = _round_trip(rec, "multilabel")  # a blank row of any kind has the same layout
    assert not back.asked and back.kind == "multilabel"


def test_candidate_sets_round_trip(tmp_path):
    labeler = _labeler(tmp_path)
    start, _, _ = labeler.start(1, {"id": "r2", "text": "meh"})
    answers = {n: JudgeAnswer(label="mixed", candidates=["mixed", "neg"]) for n in "abc"}
    res = dataclasses.replace(labeler.result(start, answers), kind="candidates")
    assert _round_trip(to_record(res)).candidates == res.candidates


def test_a_multi_label_row_carries_its_set_and_per_label_probs(tmp_path):
    labeler = _labeler(tmp_path, multi_label=True)
    start, _, _ = labeler.start(2, {"id": "r3", "text": "happy and sad"})
    answers = {"a": JudgeAnswer(labels=["pos", "neg"]), "b": JudgeAnswer(labels=["pos"]), "c": JudgeAnswer(labels=[])}
    res = labeler.result(start, answers)
    assert res.kind == "multilabel" and res.labels == ("pos",) and res.label == "pos"
    assert res.probs == {"pos": pytest.approx(2 / 3, abs=1e-4), "neg": pytest.approx(1 / 3, abs=1e-4), "mixed": 0.0}
    rec = to_record(res)
    assert list(rec)[3:5] == ["label", "labels"] and rec["labels"] == ["pos"]
    assert _round_trip(rec) == res
    failed = labeler.result(start, {n: JudgeAnswer(error="timeout") for n in "abc"})
    assert failed.labels is None and to_record(failed)["labels"] is None
    assert _round_trip(to_record(failed), "multilabel").error == failed.error


def test_a_taxonomy_row_carries_its_path_depth_and_level_confidences(tmp_path):
    labeler = _labeler(tmp_path, taxonomy=TREE, taxonomy_threshold=0.6)
    start, _, _ = labeler.start(3, {"id": "r4", "text": "a small cat"})
    levels = [JudgeAnswer(label="animal"), JudgeAnswer(label="cat")]
    answers = {
        "a": JudgeAnswer(label="cat", levels=levels),
        "b": JudgeAnswer(label="cat", levels=levels),
        "c": JudgeAnswer(label="dog", levels=[JudgeAnswer(label="animal"), JudgeAnswer(label="dog")]),
    }
    res = labeler.result(start, answers)
    assert res.path == ("animal", "cat") and res.depth == 2 and res.label == "cat"
    assert res.level_confidence == (1.0, pytest.approx(0.6667, abs=1e-4))
    rec = to_record(res)
    assert list(rec)[-4:] == ["error", "path", "depth", "level_confidence"]
    assert rec["judges"]["c"] == {"label": "dog", "path": ["animal", "dog"]}
    back = _round_trip(rec)
    assert back.path == res.path and [x.label for x in back.judges["c"].levels or []] == ["animal", "dog"]


def test_fields_a_later_tool_adds_are_kept_in_order():
    rec = {"id": "r", "label": "pos", "confidence": 1.0, "probs": None, "candidates": ["pos"], "error": None,
           "judges": {}, "model_label": "neg", "human_label": "pos"}  # fmt: skip
    res = _round_trip(rec)
    assert dict(res.extra) == {"model_label": "neg", "human_label": "pos"}


def test_a_hand_edited_record_reads_without_a_traceback():
    res = from_record({"id": 3, "label": 5, "confidence": "0.5", "judges": {"a": "oops", "b": {"label": 1}}})
    assert (res.id, res.label, res.confidence) == ("3", "5", 0.5)
    assert res.judges["a"].label is None and res.judges["b"].label is None


def _answers(codes: list[int | None], cands: list[list[int]] | None = None) -> dict[str, JudgeAnswer]:
    out = {}
    for j, k in enumerate(codes):
        if k is None:
            continue
        cs = [LABELS[c] for c in cands[j]] if cands else None
        out["abc"[j]] = JudgeAnswer(label=LABELS[k], candidates=cs)
    return out


def test_the_vote_matrix_holds_codes_candidate_sets_label_sets_and_levels():
    rows = [
        RowResult("r0", judges=_answers([0, 1, None], [[0, 2], [1], [0]])),
        RowResult("r1", judges=_answers([2, 2, 2], [[2], [2, 1], [2]])),
    ]
    vm = VoteMatrix.from_results(rows, list("abc"), LABELS, "candidates", gold={"r1": "mixed", "x": "pos"})
    assert vm.codes.tolist() == [[0, 1, -1], [2, 2, 2]] and vm.gold == {1: 2}
    assert vm.candidates.shape == (2, 3, 3) and vm.candidates.dtype == bool
    assert vm.candidates[0].tolist() == [[True, False, True], [False, True, False], [False, False, False]]

    sets = [RowResult("m0", judges={"a": JudgeAnswer(labels=["pos", "neg"]), "b": JudgeAnswer(error="x")})]
    vm = VoteMatrix.from_results(sets, list("abc"), LABELS, "multilabel", gold={"m0": "pos|mixed"})
    assert vm.sets[0].tolist() == [[1, 1, 0], [-1, -1, -1], [-1, -1, -1]] and vm.gold_sets == {0: {"pos", "mixed"}}

    tax = ["animal", "plant", "cat", "dog"]
    walk = [JudgeAnswer(label="animal"), JudgeAnswer(label="dog")]
    vm = VoteMatrix.from_results(
        [
            RowResult(
                "t0",
                judges={"a": JudgeAnswer(label="dog", levels=walk), "b": JudgeAnswer(label="plant", levels=walk[:1])},
            )
        ],
        ["a", "b"],
        tax,
        "taxonomy",
    )
    assert [m.tolist() for m in vm.levels] == [[[0, 0]], [[3, -1]]]


def test_refit_returns_new_results_and_a_typed_report():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 60)
    rows = []
    for i, t in enumerate(truth):
        codes = [int(t) if rng.random() < p else int((t + 1) % 3) for p in (0.9, 0.8, 0.7)]
        rows.append(RowResult(str(i), label=LABELS[codes[0]], confidence=1.0, judges=_answers(codes)))
    before = [dataclasses.replace(r) for r in rows]
    update, report = refit(lambda: iter(rows), list("abc"), LABELS, "dawid_skene", "label")
    assert update is not None and isinstance(report, AggregationReport) and report.method == "dawid_skene"
    assert report.judges is not None and report.judges["a"].accuracy is not None and report.priors is not None
    new = [update(i, r) for i, r in enumerate(rows)]
    assert rows == before  # the results passed in are not changed
    assert all(n is not r for n, r in zip(new, rows) if n.label is not None)
    assert all(set(n.probs or {}) == set(LABELS) for n in new)


@pytest.mark.parametrize("method", ["weighted", "dawid_skene"])
def test_the_refit_output_splices_the_posterior_as_the_typed_round_trip_would(tmp_path, method):
    """Output.write puts a weighted / Dawid-Skene refit's fields into the stored records (no typed round trip):
    the same bytes as to_record(update(pos, from_record(rec))), for every kind of row a part file holds."""
    rng = np.random.default_rng(2)
    lines = []
    for i in range(80):
        t = int(rng.integers(0, 3))
        codes: list[int | None] = [t if rng.random() < p else (t + 1) % 3 for p in (0.9, 0.8, 0.7)]
        if i % 17 == 3:
            codes = [None, None, None]  # no judge answered: no vote
        r = RowResult.make(f"r{i}", inputs={"text": f"t{i}", "n": i}, judges=_answers(codes), position=i)
        if i % 11 == 5:
            r = r.evolve(error="timeout")  # a failed row: no label
        elif i % 17 != 3:
            r = r.evolve(label=LABELS[codes[0] or 0], confidence=0.5, candidates=("pos",))
        lines.append(line(to_record(r)))
    lines.reverse()  # a part file holds rows in the order they finished
    part_path = tmp_path / "o.jsonl.part.jsonl"
    part_path.write_bytes(b"".join(lines))
    part = PartFile(part_path)
    part.load()
    out = tmp_path / "o.jsonl"
    Output(out).write(part, list("abc"), LABELS, method, "label", None)
    update, _ = refit(part.judges_only, list("abc"), LABELS, method, "label")
    assert isinstance(update, PosteriorRevote)  # the spliced path was taken
    typed = tmp_path / "typed.jsonl"
    write_output(typed, to_records(update(pos, r) for pos, r in enumerate(part.results("label"))))
    assert out.read_bytes() == typed.read_bytes()
    assert sum(json.loads(x)["label"] is None for x in out.read_text().splitlines()) == 5 + 6


def test_the_report_as_a_record_keeps_the_ledgers_field_order():
    report = AggregationReport(
        "weighted",
        gold_rows=0,
        left_out=("c",),
        rows_only_left_out=2,
        judges={"a": JudgeFit(weight=0.9), "c": JudgeFit(weight=0.0)},
        one_label=OneLabel("c", "pos", 0.9, 60),
        confidence_calibrated_on=20,
    )
    rec = report_record(report)
    assert list(rec) == [
        "method",
        "gold_rows",
        "left_out",
        "rows_only_left_out",
        "judges",
        "one_label",
        "confidence_calibrated_on",
    ]
    assert rec["judges"]["a"] == {"weight": 0.9} and rec["left_out"] == ["c"]
    assert report_record(AggregationReport()) == {}


def test_make_and_evolve_copy_every_field_and_refuse_a_name_that_is_no_field():
    r = RowResult.make("r1", kind="multilabel", position=3, inputs={"text": "t"})
    e = r.evolve(error="x", labels=("a",))
    assert e == dataclasses.replace(r, error="x", labels=("a",)) and r.error is None and e.inputs is r.inputs
    assert list(vars(e)) == [f.name for f in dataclasses.fields(RowResult)]  # (the field order of the dataclass)
    with pytest.raises(TypeError, match="no field 'lable'"):
        r.evolve(lable="a")
    with pytest.raises(TypeError, match="no field 'lable'"):
        RowResult.make("r2", lable="a")
