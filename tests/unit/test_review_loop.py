"""The review loop on a synthetic output (review_synth): rounds, state, learning, honesty, and targeted vs random."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from review_synth import LABELS, synth_output

from llmlabel.errors import InputError
from llmlabel.review.dataset import load_output, model_view
from llmlabel.review.loop import (
    ReviewState,
    Settings,
    add_answers,
    merge_answers,
    new_state,
    plan_round,
    simulate,
)
from llmlabel.review.records import HumanAnswer


@pytest.fixture
def synth(tmp_path: Path):
    out = tmp_path / "out.jsonl"
    gold = synth_output(out, n=400, seed=1)
    return load_output(out, LABELS, "majority", "label"), gold


def true_accuracy(records: list[dict], gold: dict[str, str]) -> float:
    return float(np.mean([r["label"] == gold[r["id"]] for r in records]))


def test_a_round_draws_once_and_never_reasks(synth) -> None:
    ds, gold = synth
    st = new_state(ds, Settings.make(budget=120, validation=60, round_size=20, seed=3, target=0.99))
    first = plan_round(ds, st)
    assert len(first) == 80 and sum(it.pick == "validation" for it in first) == 60
    assert all(it.why for it in first)
    again = plan_round(ds, ReviewState.from_json(st.to_json(), "state"))  # nothing answered: the same rows
    assert [it.id for it in again] == [it.id for it in first]
    assert [(it.label, it.why) for it in again] == [(it.label, it.why) for it in first]
    # The same seed draws the same sample in a fresh review.
    st2 = new_state(ds, st.settings)
    assert [it.id for it in plan_round(ds, st2)] == [it.id for it in first]
    add_answers(ds, st, [HumanAnswer(it.id, gold[it.id]) for it in first], "sheet")
    second = plan_round(ds, st)
    assert len(second) == 20 and not {it.id for it in second} & {it.id for it in first}
    assert all(it.pick == "targeted" for it in second)
    assert st.validation_ids == [it.id for it in first if it.pick == "validation"]


def test_human_labels_are_never_overwritten(synth) -> None:
    ds, gold = synth
    st = new_state(ds, Settings.make(budget=60, validation=40, seed=0))
    items = plan_round(ds, st)
    # The human answers against every judge on these rows: the final dataset still carries the human's label.
    contrary = {it.id: next(lab for lab in LABELS if lab != it.label) for it in items}
    add_answers(ds, st, [HumanAnswer(k, v) for k, v in contrary.items()], "sheet")
    res = merge_answers(ds, st)
    by_id = {r["id"]: r for r in res.records}
    for k, v in contrary.items():
        assert by_id[k]["label"] == v and by_id[k]["label_source"] == "human"
    assert sum(r["label_source"] == "model" for r in res.records) == len(ds) - len(contrary)
    with pytest.raises(InputError, match="never replaced"):
        k = next(iter(contrary))
        add_answers(ds, st, [HumanAnswer(k, next(lab for lab in LABELS if lab != contrary[k]))], "round2.csv")
    assert by_id[k]["label"] == contrary[k]


def test_bad_answers_are_refused(synth) -> None:
    ds, _ = synth
    st = new_state(ds, Settings.make(budget=10))
    with pytest.raises(InputError, match="not a row of"):
        add_answers(ds, st, [HumanAnswer("nope", "a")], "sheet.csv")
    with pytest.raises(InputError, match="not one of task.labels"):
        add_answers(ds, st, [HumanAnswer("r1", "zebra")], "sheet.csv")
    assert not st.answers


def test_learning_from_answers_helps_and_calibrates(synth) -> None:
    ds, gold = synth
    before = model_view(ds)
    acc0 = np.mean([before.label[i] == gold[r] for i, r in enumerate(ds.ids)])
    some = {r: gold[r] for r in ds.ids[:100]}
    after = model_view(ds, some)
    rest = range(100, len(ds))
    acc1 = np.mean([after.label[i] == gold[ds.ids[i]] for i in rest])
    assert acc1 >= np.mean([before.label[i] == gold[ds.ids[i]] for i in rest]) - 0.01
    assert after.quality.get("confidence_calibrated_on") == 100
    # Calibrated: the mean confidence on unseen rows is near their accuracy.
    conf1 = np.mean([after.confidence[i] for i in rest])
    assert abs(conf1 - acc1) < 0.06, (conf1, acc1, acc0)


@pytest.mark.slow
def test_targeted_beats_random_at_the_same_budget(tmp_path: Path) -> None:
    wins = 0
    for seed in range(3):
        out = tmp_path / f"o{seed}.jsonl"
        gold = synth_output(out, n=400, seed=10 + seed)
        ds = load_output(out, LABELS)
        finals = {}
        for strategy in ("targeted", "random"):
            rep = simulate(
                ds, Settings.make(budget=100, validation=40, strategy=strategy, seed=seed), lambda it: gold[it.id]
            )
            finals[strategy] = true_accuracy(rep[-1].result.records, gold)
        wins += finals["targeted"] > finals["random"]
    assert wins == 3


@pytest.mark.slow
def test_interval_covers_through_the_whole_loop(tmp_path: Path) -> None:
    """The loop's own interval (cross-fitted labels, refit on the answers, two rounds) over 40 seeded reviews."""
    out = tmp_path / "o.jsonl"
    gold = synth_output(out, n=200, seed=5)
    ds = load_output(out, LABELS)
    covered = 0
    reps = 40
    for seed in range(reps):
        s = Settings.make(budget=120, validation=60, round_size=30, seed=seed, target=0.999)
        res = simulate(ds, s, lambda it: gold[it.id])[-1].result
        truth = true_accuracy(res.records, gold)
        covered += res.accuracy.low <= truth <= res.accuracy.high
    assert covered / reps >= 0.88, covered
