"""combine_samples: a self-consistency judge's k answers for a row as its one answer (the vote)."""

from __future__ import annotations

from llmlabel.ensemble.combine import combine_row, combine_samples
from llmlabel.llm.answers import JudgeAnswer

LABELS = ["a", "b", "c"]


def _a(label: str | None = None, probs: dict[str, float] | None = None, error: str | None = None) -> JudgeAnswer:
    return JudgeAnswer(label=label, probs=probs, error=error)


def test_majority_label_with_vote_shares_as_probs_and_failed_samples_left_out():
    got = combine_samples([_a("b"), _a("a"), _a(error="invalid answer: x"), _a("b"), _a("b")], LABELS)
    assert got.label == "b" and got.error is None
    assert got.probs == {"a": 0.25, "b": 0.75, "c": 0.0}
    # Through the judges' combination, its confidence is the vote share.
    assert combine_row({"j": got}, LABELS, "label").confidence == 0.75


def test_a_tie_goes_to_the_first_samples_label():
    assert combine_samples([_a("c"), _a("a"), _a("a"), _a("c")], LABELS).label == "c"
    assert combine_samples([_a("a"), _a("c"), _a("c"), _a("a")], LABELS).label == "a"


def test_with_logprobs_probs_are_the_mean_distribution():
    got = combine_samples(
        [_a("a", {"a": 0.6, "b": 0.4, "c": 0.0}), _a("b", {"a": 0.2, "b": 0.7, "c": 0.1}), _a(error="x")], LABELS
    )
    assert got.probs == {"a": 0.4, "b": 0.55, "c": 0.05} and got.label == "b"


def test_only_when_every_sample_failed_is_the_answer_an_error():
    got = combine_samples([_a(error="request rejected: too long"), _a(error="invalid answer: y")], LABELS)
    assert got.label is None and got.probs is None
    assert got.error == "all 2 samples failed (request rejected: too long)"
    assert combine_row({"j": got}, LABELS, "label").error.startswith("no judge gave a valid answer")
