"""The judge check's quick answer from vote counts (ensemble.votes) against the full numpy rule
(ensemble.judges.uninformative): whenever the quick path says no judge is left out, the rule agrees."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from llmlabel.ensemble.judges import uninformative
from llmlabel.ensemble.votes import Votes, none_uninformative


def _votes(m: np.ndarray) -> Votes:
    v = Votes(m.shape[1])
    for row in m.tolist():
        v.add(tuple(row))
    return v


def _judge(rng: np.random.Generator, y: np.ndarray, K: int, acc: float, miss: float, skew: float) -> np.ndarray:
    """Right with probability `acc`, else a random label, "label 0" with probability `skew`, -1 with `miss`."""
    out = np.where(rng.random(len(y)) < acc, y, rng.integers(0, K, len(y)))
    out = np.where(rng.random(len(y)) < skew, 0, out)
    return np.where(rng.random(len(y)) < miss, -1, out)


CASES = [(seed, K, J) for seed in range(40) for K, J in ((2, 2), (2, 3), (6, 3), (6, 4), (3, 5))]


@pytest.mark.parametrize("seed,K,J", CASES)
def test_quick_answer_matches_the_full_rule(seed: int, K: int, J: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.choice([10, 19, 20, 25, 60, 300]))
    y = rng.integers(0, K, n)
    m = np.stack(
        [
            _judge(rng, y, K, rng.choice([0.0, 0.1, 0.5, 0.9, 1.0]), rng.choice([0.0, 0.2]), rng.choice([0.0, 0.5]))
            for _ in range(J)
        ],
        axis=1,
    )
    votes = _votes(m)
    assert np.array_equal(votes.matrix(), m)
    if none_uninformative(votes, K):
        assert not uninformative(m, K).any()


def test_quick_answer_covers_good_judges_and_declines_bad_ones() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 500)
    good = np.stack([_judge(rng, y, 6, acc, 0.05, 0.0) for acc in (0.9, 0.8, 0.7)], axis=1)
    assert none_uninformative(_votes(good), 6) and not uninformative(good, 6).any()
    constant = good.copy()
    constant[:, 2] = 3
    assert not none_uninformative(_votes(constant), 6) and uninformative(constant, 6).any()
    assert none_uninformative(_votes(constant[:19]), 6)  # too few rows to judge a judge, as the rule says
    # Near-constant pairs (chance agreement near 1) and too many combinations go to the full computation.
    same = np.zeros((10_000, 2), np.int64)
    same[0] = 1
    assert not none_uninformative(_votes(same), 2)
    assert not none_uninformative(_votes(good), 6, max_work=10)


def test_a_warm_majority_job_with_informative_judges_does_not_import_numpy() -> None:
    code = """
import sys
from llmlabel.ensemble.combine import refit
from llmlabel.io.records import from_record, report_record
labels = ["a", "b", "c"]
recs = [{"id": str(i), "judges": {n: {"label": labels[(i + (i % 7 == 0) * k) % 3]} for k, n in enumerate("xyz")}}
        for i in range(300)]
update, report = refit(lambda: map(from_record, recs), list("xyz"), labels, "majority", "label")
assert update is None and report_record(report) == {"method": "majority", "gold_rows": 0}, report
assert "numpy" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True)
