import math

import numpy as np
import pytest

from llmlabel.evaluation.metrics import (
    accuracy,
    candidate_beta,
    candidate_coverage,
    candidate_f1,
    candidate_metrics,
    cost_per_correct,
    expected_calibration_error,
    fleiss_kappa,
    krippendorff_alpha_nominal,
    macro_f1,
    mean_set_size,
)


def test_accuracy_and_macro_f1():
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    assert accuracy(y, p) == pytest.approx(0.6)
    # per-class F1: c0 = 0.5, c1 = 0.8, c2 = 0
    assert macro_f1(y, p) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert math.isnan(accuracy(np.array([]), np.array([])))


def test_fleiss_kappa_textbook():
    # Fleiss (1971) / Wikipedia example: 10 items, 14 raters, 5 categories, kappa = 0.210.
    table = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    votes = np.array([np.repeat(np.arange(5), row) for row in table])
    assert fleiss_kappa(votes, 5) == pytest.approx(0.20993, abs=1e-5)


def test_fleiss_kappa_missing_votes():
    votes = np.array([[0, 0, -1], [1, 1, 1], [0, -1, -1], [2, 2, -1]])
    # Row 2 has one rating and is skipped; the rest agree perfectly.
    assert fleiss_kappa(votes, 3) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa(np.array([[0, -1]]), 2))
    # Agreement exactly at chance level.
    assert fleiss_kappa(np.array([[0, 1], [1, 0], [0, 0], [1, 1]]), 2) == pytest.approx(0.0)


def test_krippendorff_alpha_textbook():
    # Krippendorff (2011), "Computing Krippendorff's alpha": 4 coders, 12 units, nominal alpha = 0.743.
    m = -1
    coders = np.array(
        [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, m, m, m],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, m, 3],
            [m, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, m],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, m],
        ]
    )
    votes = np.where(coders > 0, coders - 1, -1).T
    assert krippendorff_alpha_nominal(votes, 5) == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha_nominal(np.array([[0, 0], [1, 1]]), 2) == pytest.approx(1.0)


def test_ece_toy():
    # Two bins: conf 0.9 with acc 0.5, conf 0.6 with acc 1.0 -> 0.5*0.4 + 0.5*0.4.
    assert expected_calibration_error([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1], n_bins=10) == pytest.approx(0.4)
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == pytest.approx(0.0)
    assert expected_calibration_error([0.8] * 5, [1, 1, 1, 1, 0]) == pytest.approx(0.0)


def test_candidate_metrics():
    sets = np.array(
        [
            [1, 0, 0],  # hit, size 1 -> F1 1
            [1, 1, 0],  # hit, size 2 -> F1 2/3
            [0, 1, 1],  # miss -> 0
            [1, 1, 1],  # hit, size 3 -> F1 1/2
        ],
        dtype=bool,
    )
    gold = np.array([0, 1, 0, 2])
    assert candidate_coverage(sets, gold) == pytest.approx(0.75)
    assert mean_set_size(sets) == pytest.approx(2.0)
    assert candidate_beta(sets) == pytest.approx(0.75)
    assert candidate_f1(sets, gold) == pytest.approx((1 + 2 / 3 + 0 + 0.5) / 4)
    assert candidate_metrics(sets, gold)["coverage"] == pytest.approx(0.75)


def test_cost_per_correct():
    assert cost_per_correct(3.0, 6) == pytest.approx(0.5)
    assert cost_per_correct(1.0, 0) == math.inf


def test_selective_threshold_keeps_the_most_rows_that_reach_the_target():
    from llmlabel.evaluation.metrics import selective_threshold

    conf = np.array([0.99, 0.95, 0.9, 0.9, 0.8, 0.6, 0.55])
    ok = np.array([1, 1, 1, 0, 1, 0, 1], dtype=bool)
    r = selective_threshold(conf, ok, 0.8)
    # >= 0.8 keeps 5 rows with 4 right (0.8); >= 0.6 keeps 6 with 4 right (0.67).
    assert r == {"target": 0.8, "threshold": 0.8, "coverage": 5 / 7, "accuracy": 0.8}
    assert selective_threshold(conf, ok, 1.0)["threshold"] == 0.95  # ties at 0.9 are kept or dropped together
    assert selective_threshold(conf, np.zeros(7, bool), 0.5)["threshold"] is None
    assert selective_threshold(np.array([]), np.array([], bool), 0.9)["coverage"] is None
