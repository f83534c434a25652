import math

import numpy as np
import pytest

from llmlabel.ensemble.calibration import (
    average_content_free,
    contextual_calibrate,
    label_codes,
    probs_from_top_logprobs,
)


def test_calibration_fixes_known_bias():
    rng = np.random.default_rng(0)
    n, K = 3000, 3
    y = rng.integers(0, K, n)
    logits = rng.normal(0, 1, (n, K))
    logits[np.arange(n), y] += 1.5
    clean = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # Model over-predicts class 0 by a factor 4.
    bias = np.array([4.0, 1.0, 1.0])
    biased = clean * bias
    biased /= biased.sum(axis=1, keepdims=True)
    p_cf = bias / bias.sum()  # what content-free inputs would reveal
    cal = contextual_calibrate(biased, p_cf)
    np.testing.assert_allclose(cal.sum(axis=1), 1)
    np.testing.assert_allclose(cal, clean)
    acc_before = (biased.argmax(axis=1) == y).mean()
    acc_after = (cal.argmax(axis=1) == y).mean()
    assert acc_after > acc_before + 0.05


def test_calibrate_1d_and_zero_cf_mass():
    out = contextual_calibrate(np.array([0.5, 0.5]), np.array([1.0, 0.0]))
    assert out.shape == (2,) and np.isfinite(out).all()
    assert out.sum() == pytest.approx(1.0)
    assert out[1] > out[0]
    with pytest.raises(ValueError):
        contextual_calibrate(np.ones((2, 3)) / 3, np.ones(2) / 2)


def test_average_content_free():
    avg = average_content_free([np.array([0.6, 0.4]), np.array([2.0, 2.0]), np.array([0.7, 0.3])])
    np.testing.assert_allclose(avg, [0.6, 0.4])
    with pytest.raises(ValueError):
        average_content_free([])


def test_label_codes():
    assert label_codes(["x", "y", "z"]) == ["A", "B", "C"]
    codes = label_codes([str(i) for i in range(30)])
    assert codes[25] == "Z" and codes[26:30] == ["AA", "AB", "AC", "AD"]
    assert len(set(label_codes([str(i) for i in range(800)]))) == 800


def lp(p: float) -> float:
    return math.log(p)


def test_probs_from_top_logprobs_names_and_prefixes():
    labels = ["positive", "negative", "neutral"]
    top = [(" Positive", lp(0.5)), ("positive", lp(0.1)), ("neg", lp(0.2)), ("ne", lp(0.1)), ("foo", lp(0.1))]
    p = probs_from_top_logprobs(top, labels)
    # "ne" is a prefix of two labels -> ignored; "foo" matches nothing
    np.testing.assert_allclose(p, [0.6 / 0.8, 0.2 / 0.8, 0.0])


def test_probs_from_top_logprobs_codes():
    labels = ["apple", "banana", "cherry"]
    codes = label_codes(labels)
    top = [("A", lp(0.4)), (" b", lp(0.3)), ("Cherry", lp(0.1)), ("ban", lp(0.1)), ("", lp(0.1))]
    p = probs_from_top_logprobs(top, labels, codes)
    np.testing.assert_allclose(p, [0.4 / 0.9, 0.4 / 0.9, 0.1 / 0.9])
    # Code wins over a name prefix: "a" is code A, not a prefix of "apple" only by luck.
    p2 = probs_from_top_logprobs([("b", lp(0.9))], ["bee", "ant"], ["A", "B"])
    np.testing.assert_allclose(p2, [0.0, 1.0])


def test_probs_from_top_logprobs_no_match():
    assert probs_from_top_logprobs([("zzz", -0.1), ("  ", -0.2)], ["yes", "no"]) is None
    assert probs_from_top_logprobs([], ["yes", "no"]) is None
