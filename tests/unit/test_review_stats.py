"""The review loop's statistics: the Wilson interval with the finite-population correction, the dataset-accuracy
interval built on it, and its coverage over seeded repetitions (no clock, no files)."""

from __future__ import annotations

import numpy as np
import pytest

from llmlabel.review.stats import Part, accept_threshold, dataset_accuracy, proportion, stratified_accuracy


def test_proportion_edges() -> None:
    assert proportion(0, 0).estimate is None and (proportion(0, 0).low, proportion(0, 0).high) == (0.0, 1.0)
    full = proportion(30, 40, population=40)  # the whole population: no uncertainty left
    assert full.low == full.high == 0.75
    assert proportion(10, 10).high == 1.0 and proportion(0, 10).low == 0.0
    wide, narrow = proportion(45, 50), proportion(45, 50, population=60)
    assert narrow.low > wide.low and narrow.high <= wide.high
    with pytest.raises(ValueError):
        proportion(5, 4)


def test_no_validation_row_states_only_what_is_certain() -> None:
    acc = dataset_accuracy(Part(human=10, unreviewed=90, frame=90, sample=0, sample_correct=0))
    assert acc.estimate is None and acc.low == pytest.approx(0.1) and acc.high == pytest.approx(1.0)


def test_known_counts_shift_the_interval() -> None:
    # 100 frame rows, 20 sampled (18 right); 10 more reviewed in the frame (all 10 wrong: fixed by the human).
    p = Part(human=30, unreviewed=70, frame=100, sample=20, sample_correct=18, other_correct=0)
    acc = dataset_accuracy(p)
    # estimate: 0.9 x 100 = 90 right in the frame, 18 of them sampled: 72 right among the 70 unreviewed -> capped.
    assert acc.estimate == pytest.approx(1.0)
    p2 = Part(human=30, unreviewed=70, frame=100, sample=20, sample_correct=14, other_correct=0)
    assert dataset_accuracy(p2).estimate == pytest.approx((30 + 70 - 14) / 100)


def _coverage(reps: int, n_frame: int, n_val: int, acc: float, targeted: int, seed: int) -> float:
    """Share of repetitions whose interval covers the final dataset's true accuracy. Each repetition: a fixed
    population of model labels (right with prob. acc, less on the hardest rows); the `targeted` least confident
    rows go to a human first; a simple random sample of the rest is checked."""
    rng = np.random.default_rng(seed)
    covered = 0
    N = n_frame + targeted
    for _ in range(reps):
        conf = rng.random(N)
        right = rng.random(N) < np.clip(acc + 0.3 * (conf - 0.5), 0, 1)
        order = np.argsort(conf)
        t1 = order[:targeted]
        frame = order[targeted:]
        val = rng.choice(frame, size=n_val, replace=False)
        human = np.zeros(N, dtype=bool)
        human[t1] = True
        human[val] = True
        truth = (human.sum() + right[~human].sum()) / N
        p = Part(
            human=int(human.sum()),
            unreviewed=int((~human).sum()),
            frame=len(frame),
            sample=n_val,
            sample_correct=int(right[val].sum()),
        )
        iv = dataset_accuracy(p, 0.95)
        covered += iv.low <= truth <= iv.high
    return covered / reps


@pytest.mark.parametrize("acc,n_val", [(0.9, 100), (0.8, 60), (0.95, 200)])
def test_interval_covers_at_its_nominal_rate(acc: float, n_val: int) -> None:
    cov = _coverage(reps=1000, n_frame=2000, n_val=n_val, acc=acc, targeted=100, seed=7)
    # 1,000 repetitions: a 95% interval's coverage is within about +-1.4 points of its true rate.
    assert 0.925 <= cov <= 0.99, cov


def test_threshold_is_tested_from_the_top() -> None:
    # Frame rows at confidence 0.9 are all right, at 0.5 half: only the top threshold meets 0.95.
    def part_at(t: float) -> Part:
        if t >= 0.9:
            return Part(human=0, unreviewed=400, frame=500, sample=100, sample_correct=100)
        return Part(human=0, unreviewed=800, frame=1000, sample=200, sample_correct=150)

    th = accept_threshold([0.9, 0.5, 0.9], part_at, 0.95)
    assert th is not None and th.confidence == 0.9 and th.accepted_rows == 400 and th.accuracy.low >= 0.95
    assert accept_threshold([0.5], part_at, 0.95) is None


def _stratified_run(rng: np.random.Generator, n_val: int, later: int) -> tuple[float, float, float, float, float]:
    """One review of a fixed population: confident rows nearly all right, unsure rows often wrong. Two strata,
    cut at the frame's median confidence, as the loop cuts them. Round 1 sends
    the 100 least confident rows to a human and draws the validation rows from the rest (the frame); a later
    round reviews the `later` least confident frame rows left. Returns the truth, the stratified interval and
    the one-stratum interval."""
    N = 3000
    conf = rng.random(N)
    right = rng.random(N) < 0.55 + 0.45 * conf**0.5
    order = np.argsort(conf)
    t1, frame = order[:100], order[100:]
    val = rng.choice(frame, size=n_val, replace=False)
    human = np.zeros(N, dtype=bool)
    human[t1] = human[val] = True
    rest = frame[~human[frame]][:later]
    human[rest] = True
    truth = (human.sum() + right[~human].sum()) / N
    in_frame = np.zeros(N, dtype=bool)
    in_frame[frame] = True
    is_val = np.zeros(N, dtype=bool)
    is_val[val] = True
    other = human & in_frame & ~is_val
    edges = np.quantile(conf[frame], [0.5])
    group = np.searchsorted(edges, conf)

    def part(mask: np.ndarray) -> Part:
        return Part(
            human=0,
            unreviewed=int((~human & mask).sum()),
            frame=int((in_frame & mask).sum()),
            sample=int((is_val & mask).sum()),
            sample_correct=int((is_val & mask & right).sum()),
            other_correct=int((other & mask & right).sum()),
        )

    strat = stratified_accuracy(int(human.sum()), [part(in_frame & (group == g)) for g in range(2)])
    one = dataset_accuracy(
        Part(
            int(human.sum()),
            *[getattr(part(in_frame), f) for f in ("unreviewed", "frame", "sample", "sample_correct", "other_correct")],
        )
    )
    return truth, strat.low, strat.high, one.low, one.high


@pytest.mark.parametrize("n_val,later", [(100, 0), (100, 400), (200, 800)])
def test_stratified_interval_covers_and_is_narrower(n_val: int, later: int) -> None:
    rng = np.random.default_rng(11)
    runs = [_stratified_run(rng, n_val, later) for _ in range(600)]
    cover = np.mean([lo <= t <= hi for t, lo, hi, _, _ in runs])
    width = np.mean([hi - lo for _, lo, hi, _, _ in runs])
    width_one = np.mean([hi - lo for _, _, _, lo, hi in runs])
    # 600 repetitions: a 95% interval's coverage is within about +-1.8 points of its true rate.
    assert 0.93 <= cover <= 0.99, cover
    assert width < width_one, (width, width_one)
