"""The statistics of the review loop: how right a dataset is, with an interval, from a random sample of
human-checked rows.

The design (docs/review.md says it for users): the rows a round-1 ranking sends to a human first (the targeted
rows T1) are taken out; the rest is the *frame* R, and the validation rows V are a simple random sample of R.
Every human-labeled row is taken as right. The model's labels on the frame are right on some unknown number of
rows, `correct_R`; V estimates it (a Wilson score interval with the finite-population correction, since V is
drawn without replacement from R). The rows the final dataset still takes from the model are R minus V minus
any other reviewed rows inside R (later rounds' targeted rows, answers a user added), whose model labels we
saw checked: so

    correct(final) = human rows + correct_R - correct(V) - correct(other reviewed rows in R)

and the interval for correct_R carries over, shifted by known counts. The same holds within any subset of the
frame fixed before sampling (a label, a confidence threshold), which gives per-label figures and the accept
threshold. Nothing here knows about files or judges: numbers in, intervals out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = [
    "Interval",
    "Part",
    "stratified_accuracy",
    "Threshold",
    "accept_threshold",
    "dataset_accuracy",
    "proportion",
]


@dataclass(frozen=True)
class Interval:
    """A proportion's estimate and its two-sided interval at `level` (None: nothing to estimate from)."""

    estimate: float | None
    low: float
    high: float
    level: float
    sample: int  # the rows the estimate reads (the random ones)


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), not {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def proportion(k: int, n: int, population: int | None = None, level: float = 0.95) -> Interval:
    """Wilson score interval for k successes in a simple random sample of n, drawn without replacement from
    `population` items when given (finite-population correction: the effective sample grows to n(N-1)/(N-n), and a
    sample of the whole population is exact). n == 0: the whole [0, 1]."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if population is not None and population < n:
        raise ValueError(f"a sample of {n} cannot come from {population} items")
    if n == 0:
        return Interval(None, 0.0, 1.0, level, 0)
    p = k / n
    if population is not None and n >= population:
        return Interval(p, p, p, level, n)
    m = n * (population - 1) / (population - n) if population is not None and population > 1 else float(n)
    z = _z(level)
    denom = 1 + z * z / m
    centre = (p + z * z / (2 * m)) / denom
    half = z * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / denom
    # Wilson's bounds at p = 0 or 1 are exactly 0 or 1; floating point can miss by an ulp.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(p, low, high, level, n)


@dataclass(frozen=True)
class Part:
    """What the estimate of one set of rows (the whole dataset, one label, the rows above a threshold) reads.

    human: rows with a human label (right by assumption) in the set.
    unreviewed: rows whose label is still the model's.
    frame: rows of the set inside the sampling frame (everything but round-1 targeted rows).
    sample, sample_correct: the validation rows in the set, and how many of them the model had right.
    other_correct: how many of the other reviewed rows inside the frame (and the set) the model had right."""

    human: int
    unreviewed: int
    frame: int
    sample: int
    sample_correct: int
    other_correct: int = 0

    @property
    def rows(self) -> int:
        return self.human + self.unreviewed


def dataset_accuracy(part: Part, level: float = 0.95) -> Interval:
    """The share of right labels in the set, with its interval (see the module's docstring). With no validation
    row the interval is what is certain: every unreviewed row wrong to every one right."""
    n = part.rows
    if n == 0:
        return Interval(None, 0.0, 1.0, level, 0)
    model = proportion(part.sample_correct, part.sample, part.frame, level)
    known = part.sample_correct + part.other_correct

    def final(acc_frame: float) -> float:
        correct_u = min(max(acc_frame * part.frame - known, 0.0), float(part.unreviewed))
        return (part.human + correct_u) / n

    est = None if model.estimate is None else final(model.estimate)
    return Interval(est, final(model.low), final(model.high), level, part.sample)


def stratified_accuracy(human: int, strata: Sequence[Part], level: float = 0.95) -> Interval:
    """The share of right labels over `human` human rows plus every stratum's unreviewed rows, the frame cut into
    strata fixed before the validation sample was drawn (by the round-1 confidence): each stratum's right
    model labels are estimated from its own validation rows (post-stratification), so a stratum of sure rows,
    nearly all right, adds little uncertainty however many rows it has, and a stratum the targeted rounds have
    reviewed through adds none.

    Each stratum: its count of right unreviewed rows, N_h p_h - known, and how far down and up its Wilson interval
    (finite-population corrected, as `proportion`) moves that count, clipped to what is certain ([0, unreviewed
    rows]); the strata's downward and upward spreads add in quadrature, each side on its own (Wilson's asymmetry
    near 1 is kept). A stratum without a validation row adds [0, its unreviewed] to the interval. Each Part's
    own `human` field is not read: pass the human rows as `human`."""
    _z(level)  # checks the level
    n_un = sum(p.unreviewed for p in strata)
    total = human + n_un
    if total == 0:
        return Interval(None, 0.0, 1.0, level, 0)
    point, var_lo, var_hi, unknown, sampled = 0.0, 0.0, 0.0, 0, 0
    estimable = False
    for p in strata:
        sampled += p.sample
        if p.unreviewed == 0:
            continue
        known = p.sample_correct + p.other_correct
        if p.sample == 0:
            unknown += p.unreviewed
            continue
        estimable = True
        w = proportion(p.sample_correct, p.sample, p.frame, level)

        def count(rate: float, p: Part = p, known: int = known) -> float:
            return min(max(rate * p.frame - known, 0.0), float(p.unreviewed))

        c = count(p.sample_correct / p.sample)
        point += c
        var_lo += (c - count(w.low)) ** 2
        var_hi += (count(w.high) - c) ** 2
    if not estimable and unknown:
        return Interval(None, human / total, 1.0, level, sampled)
    low = max(point - math.sqrt(var_lo), 0.0)
    high = min(point + math.sqrt(var_hi) + unknown, float(n_un))
    # The point estimate gives rows of unsampled strata the sampled rows' rate; the interval, anything.
    rate = sum(p.sample_correct for p in strata) / max(sampled, 1)
    est = (human + point + rate * unknown) / total
    return Interval(est, (human + low) / total, (human + high) / total, level, sampled)


@dataclass(frozen=True)
class Threshold:
    """The lowest confidence at which the accepted rows (human rows plus the model's rows at or above it) meet the
    target, found by fixed-sequence testing from the top (each threshold is tested only if every higher one
    passed, so the stated guarantee holds for the one returned)."""

    confidence: float
    accepted_rows: int
    accuracy: Interval


def accept_threshold(
    candidates: Sequence[float], part_at: Callable[[float], Part], target: float, level: float = 0.95
) -> Threshold | None:
    """Scan the candidate confidences high to low; keep the last whose interval's lower bound reaches `target`.
    None when even the highest fails."""
    best: Threshold | None = None
    for t in sorted(set(candidates), reverse=True):
        p = part_at(t)
        acc = dataset_accuracy(p, level)
        if acc.estimate is None or acc.low < target:
            break
        best = Threshold(t, p.rows, acc)
    return best
