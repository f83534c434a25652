"""The one calibration and logprob path: codes in the prompt, logprobs -> label distribution, contextual
calibration. These are the functions the pipeline runs (RowLabeler.calibrate / RowLabeler._calibrated, JudgeClient)."""

import math
import random

import pytest

from llmlabel.ensemble.calibration import average_content_free, calibrate_answer, contextual_calibrate
from llmlabel.llm.answers import JudgeAnswer, parse_answer, probs_from_logprobs
from llmlabel.llm.prompts import label_codes


def lp(p: float) -> float:
    return math.log(p)


def test_calibration_fixes_known_bias():
    rng = random.Random(0)
    labels, n = ["a", "b", "c"], 3000
    bias = {"a": 4.0, "b": 1.0, "c": 1.0}  # the model over-predicts "a" by a factor 4
    p_cf = {lab: v / 6.0 for lab, v in bias.items()}  # what content-free inputs would reveal
    right_before = right_after = 0
    for _ in range(n):
        y = rng.randrange(3)
        logits = [rng.gauss(0, 1) + (1.5 if k == y else 0.0) for k in range(3)]
        z = sum(math.exp(x) for x in logits)
        clean = {lab: math.exp(x) / z for lab, x in zip(labels, logits)}
        raw = {lab: clean[lab] * bias[lab] for lab in labels}
        biased = {lab: v / sum(raw.values()) for lab, v in raw.items()}
        cal = contextual_calibrate(biased, p_cf)
        assert sum(cal.values()) == pytest.approx(1.0)
        assert cal == pytest.approx(clean)
        right_before += max(labels, key=biased.get) == labels[y]
        right_after += max(labels, key=cal.get) == labels[y]
    assert right_after > right_before + 0.05 * n


def test_calibrate_zero_cf_mass_and_missing_labels():
    out = contextual_calibrate({"x": 0.5, "y": 0.5}, {"x": 1.0, "y": 0.0})
    assert all(math.isfinite(v) for v in out.values()) and sum(out.values()) == pytest.approx(1.0)
    assert out["y"] > out["x"]
    assert contextual_calibrate({"x": 1.0}, {"x": 0.5, "y": 0.5}) == {"x": 1.0, "y": 0.0}


def test_average_content_free():
    avg = average_content_free([{"p": 0.6, "n": 0.4}, {"p": 2.0, "n": 2.0}, {"p": 0.7, "n": 0.3}], ["p", "n"])
    assert avg == pytest.approx({"p": 0.6, "n": 0.4})
    with pytest.raises(ValueError):
        average_content_free([], ["p", "n"])


def test_a_label_never_shown_on_content_free_inputs_is_not_made_certain():
    # Qwen 0.5B on TREC: "H" (HUM) is never among the content-free top-6 tokens. As a 0 share it was
    # divided by 1e-6, so a question answered DESC 0.62 / ENTY 0.37 / HUM 0.01 came out HUM 0.9997.
    labels = ["DESC", "ENTY", "HUM", "NUM"]
    p_cf = average_content_free(
        [{"DESC": 0.5, "ENTY": 0.42, "NUM": 0.08}, {"DESC": 0.6, "ENTY": 0.36, "NUM": 0.04}], labels
    )
    assert p_cf["HUM"] == pytest.approx(p_cf["NUM"]) and p_cf["HUM"] > 0.05  # the least shown label's share
    out = calibrate_answer(JudgeAnswer(label="DESC", probs={"DESC": 0.62, "ENTY": 0.37, "HUM": 0.01}), p_cf)
    assert out.label == "DESC" and out.probs["HUM"] < 0.1
    # When the row's answer leans on that label, it still wins.
    assert (
        calibrate_answer(JudgeAnswer(label="DESC", probs={"DESC": 0.5, "HUM": 0.4, "ENTY": 0.1}), p_cf).label == "HUM"
    )
    # Nothing shown at all: no correction (uniform), rather than a division by zero.
    assert average_content_free([{}], ["a", "b"]) == {"a": 0.5, "b": 0.5}


def test_calibrate_answer_moves_the_label_to_the_calibrated_argmax():
    ans = JudgeAnswer(label="pos", probs={"pos": 0.6, "neg": 0.4})
    out = calibrate_answer(ans, {"pos": 0.8, "neg": 0.2})  # the judge says "pos" to anything
    assert out.label == "neg" and out.probs == {"pos": 0.2727, "neg": 0.7273}
    assert ans.label == "pos"  # answers are shared between rows: never changed in place
    assert calibrate_answer(ans, None) is ans and calibrate_answer(JudgeAnswer(label="pos"), {"pos": 1.0}).probs is None


def test_label_codes():
    assert label_codes(["x", "y", "z"]) == {"x": "A", "y": "B", "z": "C"}
    codes = list(label_codes([str(i) for i in range(30)]).values())
    assert codes[25] == "Z" and codes[26:30] == ["AA", "AB", "AC", "AD"]
    many = list(label_codes([str(i) for i in range(800)]).values())
    assert len(set(many)) == 800 and many[701] == "ZZ" and many[702] == "AAA"


def test_probs_from_logprobs_names_and_prefixes():
    labels = ["positive", "negative", "neutral"]
    top = [[" Positive", lp(0.5)], ["positive", lp(0.1)], ["neg", lp(0.2)], ["ne", lp(0.1)], ["foo", lp(0.1)]]
    p = probs_from_logprobs(top, labels, None)
    # "ne" is a prefix of two labels and no decoded label says which: split between them; "foo" matches nothing
    assert p == pytest.approx({"positive": 0.6 / 0.9, "negative": 0.25 / 0.9, "neutral": 0.05 / 0.9})
    # the decoded label takes the shared token's mass (greedy decoding went on from it to that label)
    p = probs_from_logprobs(top, labels, None, decoded="neutral")
    assert p == pytest.approx({"positive": 0.6 / 0.9, "negative": 0.2 / 0.9, "neutral": 0.1 / 0.9})


def test_probs_from_logprobs_codes():
    labels = ["apple", "banana", "cherry"]
    codes = label_codes(labels)
    top = [["A", lp(0.4)], [" b", lp(0.3)], ["Cherry", lp(0.1)], ["ban", lp(0.1)], ["", lp(0.1)]]
    p = probs_from_logprobs(top, labels, codes)
    assert p == pytest.approx({"apple": 0.4 / 0.9, "banana": 0.4 / 0.9, "cherry": 0.1 / 0.9})


def test_a_code_token_is_read_as_its_code_when_a_label_is_named_like_a_code():
    """Labels `yes, no, A`: the prompt asks for codes A, B, C, so the token "A" is the code of "yes" and
    only "C" (or the word "A" in no code position) means the label "A"."""
    labels = ["yes", "no", "A"]
    codes = label_codes(labels)
    assert codes == {"yes": "A", "no": "B", "A": "C"}
    p = probs_from_logprobs([["A", lp(0.7)], ["C", lp(0.2)], [" B", lp(0.1)]], labels, codes)
    assert p == pytest.approx({"yes": 0.7, "no": 0.1, "A": 0.2})
    assert parse_answer("A", "stop", "label", labels, codes).label == "yes"
    assert parse_answer("C", "stop", "label", labels, codes).label == "A"


def test_probs_from_logprobs_no_match():
    assert probs_from_logprobs([["zzz", -0.1], ["  ", -0.2]], ["yes", "no"], None) is None
    assert probs_from_logprobs([], ["yes", "no"], None) is None
    assert probs_from_logprobs([["yes", float("nan")], ["no", lp(0.5)]], ["yes", "no"], None) == {"yes": 0.0, "no": 1.0}
