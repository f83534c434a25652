"""Batch Calibration at the whole-job refit (judge option `batch_calibration`, ensemble.combine.BatchFit): a
judge's distributions divided by their mean over the job's rows, then the rows re-aggregated as usual."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmlabel.config import parse_config
from llmlabel.ensemble.calibration import (
    BATCH_MIN_ROWS,
    batch_calibrate,
    batch_calibrate_rows,
    batch_min_rows,
    content_free_undone,
    contextual_calibrate,
)
from llmlabel.ensemble.combine import BatchFit, combine_row, refit
from llmlabel.ensemble.votes import Votes
from llmlabel.errors import ConfigError
from llmlabel.io.records import from_record, report_record, to_record
from llmlabel.results import JudgeAnswer, RowResult

LABELS = ["positive", "negative", "neutral"]
# The judge over-predicts "positive": a negative text gets positive 0.5 / negative 0.4, a positive one 0.8.
NEG = {"positive": 0.5, "negative": 0.4, "neutral": 0.1}
POS = {"positive": 0.8, "negative": 0.1, "neutral": 0.1}


def _row(i: int, judges: dict[str, dict[str, float]]) -> RowResult:
    answers = {n: JudgeAnswer(label=max(p, key=p.__getitem__), probs=p) for n, p in judges.items()}
    first = next(iter(answers.values()))
    return RowResult.make(f"r{i}", judges=answers, label=first.label, confidence=first.probs[first.label])


def _biased(n: int) -> tuple[list[RowResult], list[str]]:
    """n rows, half negative and half positive, all labeled "positive" by the one judge."""
    rows = [_row(i, {"j": NEG if i % 2 else POS}) for i in range(n)]
    return rows, ["negative" if i % 2 else "positive" for i in range(n)]


def _labels(rows: list[RowResult], update) -> list[str | None]:
    return [(update(p, r) if update else r).label for p, r in enumerate(rows)]


def test_batch_calibration_flips_the_rows_of_the_over_predicted_label():
    rows, truth = _biased(40)
    update, report = refit(lambda: iter(rows), ["j"], LABELS, "majority", "label")
    assert update is None and all(r.label == "positive" for r in rows)  # without it: every row "positive"
    update, report = refit(lambda: iter(rows), ["j"], LABELS, "majority", "label", batch=["j"])
    new = [update(p, r) for p, r in enumerate(rows)]
    assert [r.label for r in new] == truth
    # mean = positive 0.65, negative 0.25, neutral 0.1: a negative row is 0.77 / 1.6 / 1.0, renormalized
    assert new[1].probs == {"positive": 0.2283, "negative": 0.4749, "neutral": 0.2968}
    assert new[1].confidence == 0.4749 and new[1].candidates == ("negative", "neutral", "positive")
    assert all(n.judges is r.judges for n, r in zip(new, rows))  # the judges' own answers stay as asked
    assert report.batch_calibrated == ("j",) and report.batch_too_few is None
    assert report_record(report)["batch_calibration"] == {"judges": ["j"], "too_few_rows": {}}


def test_too_few_rows_leave_the_answers_as_they_are():
    need = batch_min_rows(len(LABELS))  # 20 rows, and one a label
    assert need == batch_min_rows(2) == batch_min_rows(20) == BATCH_MIN_ROWS == 20 and batch_min_rows(151) == 151
    rows, _ = _biased(need - 1)
    update, report = refit(lambda: iter(rows), ["j"], LABELS, "majority", "label", batch=["j"])
    assert update is None  # a service request of 3 items does not become a uniform distribution
    assert report.batch_calibrated == () and report.batch_too_few == {"j": need - 1}
    assert report_record(report)["batch_calibration"] == {"judges": [], "too_few_rows": {"j": need - 1}}
    # rows without a distribution from the judge (an answer without logprobs) do not count
    rows, truth = _biased(need)
    rows[0] = rows[0].evolve(judges={"j": JudgeAnswer(label="positive")})
    assert refit(lambda: iter(rows), ["j"], LABELS, "majority", "label", batch=["j"])[1].batch_too_few == {
        "j": need - 1
    }
    rows, truth = _biased(need)
    update, report = refit(lambda: iter(rows), ["j"], LABELS, "majority", "label", batch=["j"])
    assert _labels(rows, update) == truth and report.batch_calibrated == ("j",)


def test_a_many_label_task_needs_rows_for_each_label():
    # 40 labels in 20 confusable pairs (a_k, b_k); 30 rows, all a_k and answered right: one sure row of each,
    # and an unsure one with b_k close behind for ten of them. Over so few rows a label, a label's mean share is mostly its own rows,
    # so dividing by it would turn every unsure row to b_k (as on 60 rows of 151 intents, where Batch
    # Calibration lost the 1.5B 3 rows in 60). With fewer rows than labels the answers stand as asked.
    labels = [f"{ab}_{k}" for k in range(20) for ab in "ab"]

    def dist(a: float, b: float, k: int) -> dict[str, float]:
        rest = (1 - a - b) / 38
        return {lab: a if lab == f"a_{k}" else b if lab == f"b_{k}" else rest for lab in labels}

    dists = [dist(0.9, 0.05, k) for k in range(20)] + [dist(0.5, 0.4, k) for k in range(10)]
    rows = [_row(i, {"j": p}) for i, p in enumerate(dists)]
    truth = [f"a_{k}" for k in range(20)] + [f"a_{k}" for k in range(10)]
    update, report = refit(lambda: iter(rows), ["j"], labels, "majority", "label", batch=["j"])
    assert update is None and report.batch_too_few == {"j": 30} and [r.label for r in rows] == truth
    # What it would have done: every unsure row turned wrong.
    flat = batch_calibrate(np.array([[p[lab] for lab in labels] for p in dists]))
    assert [labels[k] for k in flat.argmax(axis=1)[20:]] == [f"b_{k}" for k in range(10)]


def test_only_label_mode_is_batch_calibrated():
    rows, _ = _biased(40)
    for mode in ("candidates", "multilabel", "taxonomy"):
        assert not refit(lambda: iter(rows), ["j"], LABELS, "majority", mode, batch=["j"])[1].batch_calibrated


def _random_rows(n: int, J: int, seed: int = 0) -> list[RowResult]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    out = []
    for i in range(n):
        judges = {}
        for j in range(J):
            logits = (
                rng.normal(0, 1, 3) + 1.5 * (np.arange(3) == truth[i]) + (1.0 if j == 0 else 0.0) * (np.arange(3) == 0)
            )
            p = np.round(np.exp(logits) / np.exp(logits).sum(), 4)
            judges["abc"[j]] = dict(zip(LABELS, p.tolist()))
        out.append(_row(i, judges))
    return out


def test_the_single_judge_revote_is_combine_row_on_the_calibrated_answer():
    rows = _random_rows(300, 1)
    rows[5] = rows[5].evolve(label=None, judges={}, error="no judge answered")
    bc = BatchFit.over(lambda: iter(rows), ["a"], LABELS, ["a"])
    assert bc is not None
    update, _ = refit(lambda: iter(rows), ["a"], LABELS, "majority", "label", batch=["a"])
    assert update is not None
    changed = 0
    for pos, r in enumerate(rows):
        got = update(pos, r)
        if r.label is None:
            assert got is r
            continue
        want = r.decided(combine_row(bc.answers(pos, r.judges), LABELS, "label"))
        assert got == want
        changed += got.label != r.label
    assert changed > 20


@pytest.mark.parametrize("method", ["majority", "weighted", "dawid_skene"])
def test_an_ensemble_is_re_aggregated_from_the_calibrated_answers(method):
    rows = _random_rows(200, 3, seed=1)
    bc = BatchFit.over(lambda: iter(rows), list("abc"), LABELS, ["a"])
    assert bc is not None and bc.judges == ("a",)
    calibrated = [r.evolve(judges=bc.answers(p, r.judges)) for p, r in enumerate(rows)]
    calibrated = [r.decided(combine_row(r.judges, LABELS, "label")) for r in calibrated]
    want_update, _ = refit(lambda: iter(calibrated), list("abc"), LABELS, method, "label")
    update, report = refit(lambda: iter(rows), list("abc"), LABELS, method, "label", batch=["a"])
    assert update is not None and report.batch_calibrated == ("a",)
    got = [update(p, r) for p, r in enumerate(rows)]
    want = [want_update(p, r) if want_update else r for p, r in enumerate(calibrated)]
    assert [(r.label, r.confidence, r.probs) for r in got] == [(r.label, r.confidence, r.probs) for r in want]
    assert sum(g.label != r.label for g, r in zip(got, rows)) > 0


def test_refitting_the_refit_output_does_not_calibrate_twice():
    """A merge refits the shards' outputs and a resumed run its part file: both hold the judges' stored
    answers, which the refit leaves as they were, so a second refit gives the same labels."""
    rows = _random_rows(120, 3, seed=2)
    for names in (["a"], list("abc")):
        judges = names
        data = [r.evolve(judges={n: r.judges[n] for n in judges}) for r in rows]
        data = [r.decided(combine_row(r.judges, LABELS, "label")) for r in data]
        update, _ = refit(lambda: iter(data), judges, LABELS, "majority", "label", batch=["a"])
        assert update is not None
        once = [from_record(to_record(update(p, r))) for p, r in enumerate(data)]
        update2, _ = refit(lambda: iter(once), judges, LABELS, "majority", "label", batch=["a"])
        assert update2 is not None
        twice = [update2(p, r) for p, r in enumerate(once)]
        assert [r.label for r in twice] == [r.label for r in once]
        assert [r.probs for r in twice] == [r.probs for r in once]


def test_batch_calibrate_divides_by_the_mean():
    p = np.array([[0.5, 0.4, 0.1], [0.8, 0.1, 0.1]])
    q = batch_calibrate(p)
    want = p / p.mean(axis=0)
    assert q == pytest.approx(want / want.sum(axis=1, keepdims=True))
    # a row with no mass counts as uniform (as the benchmarks' normalize has it), then is calibrated too
    q = batch_calibrate(np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]))
    assert q[0].tolist() == [0.5, 0.5, 0.0] and q[1] == pytest.approx([0.8 / 3.6, 0.8 / 3.6, 2 / 3.6])
    # a label no row shows stays at 0 (divided by a small floor, not by zero)
    assert batch_calibrate(np.array([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]]))[:, 2].tolist() == [0.0, 0.0]
    assert batch_calibrate_rows([], LABELS) == []
    assert batch_calibrate_rows([NEG, POS], LABELS)[0]["negative"] == pytest.approx(
        0.4 / 0.25 / (0.5 / 0.65 + 1.6 + 1.0)
    )


def test_votes_from_a_matrix_are_the_votes_added_row_by_row():
    rng = np.random.default_rng(3)
    codes = rng.integers(-1, 4, (500, 3))
    added = Votes(3)
    for row in codes.tolist():
        added.add(tuple(row))
    built = Votes.from_matrix(codes)
    assert built.index == added.index and built.counts == added.counts and built.rows == added.rows
    assert (built.matrix() == codes).all()
    assert len(Votes.from_matrix(np.zeros((0, 2), dtype=np.int64))) == 0


def _cfg(**judge) -> dict:
    return {"task": {"labels": LABELS}, "judges": [{"name": "a", "model": "m", **judge}]}


def test_the_config_option_needs_logprobs_and_one_label_a_text():
    assert parse_config(_cfg(logprobs=True, batch_calibration=True)).judges[0].batch_calibration
    with pytest.raises(ConfigError, match=r"judge 'a': batch_calibration .* set logprobs: true") as e:
        parse_config(_cfg(batch_calibration=True))
    assert "\n" not in str(e.value)
    for extra in ({"task": {"labels": LABELS, "multi_label": True}}, {"task": {"labels": LABELS, "shortlist": 2}}):
        with pytest.raises(ConfigError, match="batch_calibration works on one label a text"):
            parse_config({**_cfg(logprobs=True, batch_calibration=True), **extra})
    with pytest.raises(ConfigError, match="batch_calibration works in mode: label"):
        parse_config({**_cfg(logprobs=True, batch_calibration=True), "mode": "candidates"})


def test_the_review_refits_an_output_as_the_run_did(tmp_path):
    """`llmlabel review` refits the output's rows (with the reviewed rows as gold): the judges the run
    batch-calibrated, named in the output's ledger, are calibrated there too."""
    from llmlabel.io.paths import ledger_path
    from llmlabel.review.dataset import load_output, model_view

    rows, truth = _biased(40)
    update, report = refit(lambda: iter(rows), ["j"], LABELS, "majority", "label", batch=["j"])
    out = tmp_path / "o.jsonl"
    out.write_text("".join(json.dumps(to_record(update(p, r))) + "\n" for p, r in enumerate(rows)))
    gold = {f"r{i}": truth[i] for i in range(12)}  # reviewed rows: gold, so the review refits every row
    assert model_view(load_output(out, LABELS), gold).label == ["positive"] * 40  # no ledger: not known
    ledger_path(out).write_text(json.dumps({"runs": [{"quality": report_record(report)}]}))
    ds = load_output(out, LABELS)
    assert ds.batch == {"j": None} and model_view(ds, gold).label == truth


@pytest.mark.parametrize(
    "task,want",
    [
        ({}, {"a": None}),  # (no content-free distribution: nothing was asked)
        ({"multi_label": True}, {}),
        ({"shortlist": 2}, {}),
        ({"taxonomy": {"x": ["p", "q"], "y": ["r", "s"]}}, {}),
    ],
)
def test_judges_given_with_the_option_are_calibrated_in_single_label_jobs_only(tmp_path, task, want):
    """Judges that do not come from the config (the embedded ones, `local_judges`) are not checked by it: a
    job of another kind leaves their option off instead of refusing to run."""
    from llmlabel.config import Judge
    from llmlabel.llm.cache import open_cache
    from llmlabel.pipeline.options import RunOptions
    from llmlabel.pipeline.row_labeler import RowLabeler

    given = task if "taxonomy" in task else {"labels": LABELS, **task}
    cfg = parse_config({"task": {"name": "t", **given}, "cache_dir": str(tmp_path / "cache")})
    judges = [
        Judge(name="a", model="m", base_url="http://127.0.0.1:9/v1", logprobs=True, batch_calibration=True),
        Judge(name="b", model="m", base_url="http://127.0.0.1:9/v1", logprobs=True),
    ]
    cache = open_cache(cfg.cache_dir)
    try:
        assert RowLabeler(cfg, judges, RunOptions(), cache).batch_calibrated() == want
    finally:
        cache.close()


def test_a_judge_with_too_few_distributions_is_left_out_of_the_calibration_alone():
    rows = _random_rows(60, 3, seed=4)
    # judge b answered without logprobs on all but 10 rows
    rows = [
        r if i < 10 else r.evolve(judges={**r.judges, "b": JudgeAnswer(label=r.judges["b"].label)})
        for i, r in enumerate(rows)
    ]
    bc = BatchFit.over(lambda: iter(rows), list("abc"), LABELS, ["b", "a"])
    assert bc is not None and bc.judges == ("a",) and bc.too_few == {"b": 10}
    assert bc.probs.shape == (60, 1, 3) and bc.label_codes.shape == (60, 1)
    assert bc.answers(3, rows[3].judges)["b"] is rows[3].judges["b"]
    update, report = refit(lambda: iter(rows), list("abc"), LABELS, "majority", "label", batch=["a", "b"])
    assert report.batch_calibrated == ("a",) and report.batch_too_few == {"b": 10}
    assert update is not None
    want = [r.decided(combine_row(bc.answers(p, r.judges), LABELS, "label")).label for p, r in enumerate(rows)]
    assert [update(p, r).label for p, r in enumerate(rows)] == want


# Content-free answers that exaggerate the judge's lean to "positive" (it has some on the rows, not this much).
P_CF = {"positive": 0.8, "negative": 0.1, "neutral": 0.1}


def _stored_cc(
    lean: float = 0.1, p_cf: dict[str, float] = P_CF
) -> tuple[list[RowResult], list[str], list[dict[str, float]]]:
    """60 rows a judge answers around the true label (seeded Dirichlet draws, plus `lean` on "positive" in
    every answer), stored content-free calibrated with `p_cf` as the pipeline stores them, with the truth and
    the model's own distributions."""
    rng = np.random.default_rng(0)
    rows, truth, raw = [], [], []
    for i in range(60):
        a = np.full(3, 0.6)
        a[i % 3] = 3.0
        p = rng.dirichlet(a) + np.array([lean, 0.0, 0.0])
        own = dict(zip(LABELS, (p / p.sum()).tolist()))
        raw.append(own)
        truth.append(LABELS[i % 3])
        rows.append(_row(i, {"j": contextual_calibrate(own, p_cf)}))
    return rows, truth, raw


def _right(labels: list[str | None], truth: list[str]) -> int:
    return sum(a == b for a, b in zip(labels, truth))


def test_content_free_calibration_that_over_corrected_is_undone_before_batch_calibration():
    """The BBC news case (calibration.content_free_undone): "N/A" exaggerates the judge's lean, so cc turns the
    job's lean around (53 right -> 39); Batch Calibration after it recovers most, on the model's own
    distributions all. Given the judge's p_cf, the refit undoes cc first and says so."""
    rows, truth, raw = _stored_cc()
    assert _right([max(p, key=p.__getitem__) for p in raw], truth) == 53
    assert _right([r.label for r in rows], truth) == 39
    update, report = refit(lambda: iter(rows), ["j"], LABELS, "majority", "label", batch={"j": P_CF})
    assert report.content_free_undone == ("j",) and report.batch_content_free == {"j": P_CF}
    want = [max(p, key=p.__getitem__) for p in batch_calibrate_rows(raw, LABELS)]
    assert _labels(rows, update) == want and _right(want, truth) == 54
    # Without the judge's p_cf (a ledger or shard manifest from before): Batch Calibration of cc, as it was.
    update, report = refit(lambda: iter(rows), ["j"], LABELS, "majority", "label", batch=["j"])
    assert report.content_free_undone == () and _right(_labels(rows, update), truth) == 52
    assert report_record(report)["batch_calibration"] == {"judges": ["j"], "too_few_rows": {}}


def test_content_free_calibration_that_kept_the_lean_is_kept():
    """The judge leans to "positive" on the rows as much as "N/A" shows (43 right): cc takes part of the lean
    away without turning it (53 right), so it stays and Batch Calibration works on its distributions."""
    p_cf = {"positive": 0.5, "negative": 0.25, "neutral": 0.25}
    rows, truth, raw = _stored_cc(lean=0.5, p_cf=p_cf)
    assert _right([max(p, key=p.__getitem__) for p in raw], truth) == 43
    assert _right([r.label for r in rows], truth) == 53
    update, report = refit(lambda: iter(rows), ["j"], LABELS, "majority", "label", batch={"j": p_cf})
    assert report.content_free_undone == () and report.batch_calibrated == ("j",)
    update2, _ = refit(lambda: iter(rows), ["j"], LABELS, "majority", "label", batch=["j"])
    assert _labels(rows, update) == _labels(rows, update2)


def test_content_free_undone_recovers_the_models_distributions():
    rows, _, raw = _stored_cc()
    cc = np.array([[r.judges["j"].probs[lab] for lab in LABELS] for r in rows])
    got = content_free_undone(cc, [P_CF[lab] for lab in LABELS])
    assert got is not None and np.allclose(got, [[p[lab] for lab in LABELS] for p in raw])
    assert content_free_undone(cc, [1 / 3] * 3) is None  # a uniform p_cf changed nothing


def test_the_review_decides_as_the_run_did(tmp_path):
    """The ledger's quality block keeps each batch-calibrated judge's p_cf, so the review's refit undoes cc
    where the run did."""
    from llmlabel.io.paths import ledger_path
    from llmlabel.review.dataset import load_output, model_view

    rows, truth, _ = _stored_cc()
    update, report = refit(lambda: iter(rows), ["j"], LABELS, "majority", "label", batch={"j": P_CF})
    record = report_record(report)
    assert record["batch_calibration"]["content_free_undone"] == ["j"]
    out = tmp_path / "o.jsonl"
    out.write_text("".join(json.dumps(to_record(update(p, r))) + "\n" for p, r in enumerate(rows)))
    ledger_path(out).write_text(json.dumps({"runs": [{"quality": record}]}))
    ds = load_output(out, LABELS)
    assert ds.batch == {"j": P_CF}
    # No row reviewed: the review's refit of the run's output gives the run's labels back.
    assert model_view(ds, {}).label == _labels(rows, update)
