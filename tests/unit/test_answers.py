import math

import pytest

from llmlabel.llm.answers import InvalidAnswer, parse_answer, probs_from_logprobs

L = ["ABBR", "DESC", "HUM"]


def test_json_label():
    assert parse_answer('{"label": "DESC"}', "stop", "label", L).label == "DESC"


def test_fenced_and_case_insensitive():
    assert parse_answer('```json\n{"label": "desc"}\n```', "stop", "label", L).label == "DESC"


def test_plain_text_label():
    assert parse_answer("HUM", "stop", "label", L).label == "HUM"


def test_label_outside_the_set_is_never_accepted():
    with pytest.raises(InvalidAnswer) as e:
        parse_answer('{"label": "SPAM"}', "stop", "label", L)
    assert not e.value.transient


def test_truncated_and_broken_are_transient():
    with pytest.raises(InvalidAnswer) as e:
        parse_answer('{"label": "DESC"}', "length", "label", L)
    assert e.value.transient
    with pytest.raises(InvalidAnswer) as e:
        parse_answer('{"label": "DE', "stop", "label", L)
    assert e.value.transient


def test_candidates():
    a = parse_answer('{"candidates": ["HUM", "DESC", "HUM"], "label": "DESC"}', "stop", "candidates", L)
    assert a.candidates == ["HUM", "DESC"] and a.label == "DESC"
    a = parse_answer('{"candidates": ["HUM"]}', "stop", "candidates", L)
    assert a.label == "HUM"
    with pytest.raises(InvalidAnswer):
        parse_answer('{"candidates": ["HUM", "X"], "label": "HUM"}', "stop", "candidates", L)
    with pytest.raises(InvalidAnswer):
        parse_answer('{"candidates": [], "label": "HUM"}', "stop", "candidates", L)


def test_codes():
    codes = {"ABBR": "A", "DESC": "B", "HUM": "C"}
    assert parse_answer("B", "stop", "label", L, codes).label == "DESC"
    with pytest.raises(InvalidAnswer):
        parse_answer("Z", "stop", "label", L, codes)


def test_probs_from_logprobs():
    top = [["B", math.log(0.6)], [" A", math.log(0.3)], ["x", math.log(0.1)]]
    p = probs_from_logprobs(top, L, {"ABBR": "A", "DESC": "B", "HUM": "C"})
    assert p["DESC"] == pytest.approx(2 / 3) and p["ABBR"] == pytest.approx(1 / 3) and p["HUM"] == 0
    assert probs_from_logprobs([["zzz", 0.0]], L, None) is None


def test_a_code_answer_stopped_by_max_tokens_is_complete():
    codes = {"ABBR": "A", "DESC": "B", "HUM": "C"}
    assert parse_answer("C", "length", "label", L, codes).label == "HUM"
    with pytest.raises(InvalidAnswer) as e:
        parse_answer('{"label": "HUM"', "length", "label", L)  # a JSON answer cut off is still cut off
    assert e.value.transient
