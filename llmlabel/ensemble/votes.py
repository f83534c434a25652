"""A job's votes as a table of distinct vote rows with counts, and the judge check's quick answer from it.

Rows repeat a few vote combinations (three judges on six labels give at most 343), so the end-of-job check
that no judge is uninformative (ensemble.judges) can be answered from the counts in plain Python. On a warm
5,000-row rerun with majority vote that check was the only use of numpy; its import alone cost ~0.1 s of a
~0.55 s job. Plain Python here: this module must not import numpy."""

from __future__ import annotations

from array import array
from typing import Any

# The thresholds of ensemble.judges.uninformative (which takes them from here).
MIN_KAPPA = 0.1
MIN_ROWS = 20
MAX_SKEW = 0.3
TOP, SPREAD = 0.7, 0.5  # judges._concentrated
ONE_LABEL = 0.5  # judges.one_label: a single judge that gives one label to half its answers (3+ labels)

# Statistics this close to a threshold are left to the full computation (plain Python sums in another order
# than numpy's, so the last bits may differ; never by this much).
_EPS = 1e-9


class Votes:
    """Each row's label codes (one per judge, -1: none), each distinct combination stored once."""

    def __init__(self, n_judges: int) -> None:
        self.n_judges = n_judges
        self.index: dict[tuple[int, ...], int] = {}
        self.counts: list[int] = []
        self.rows = array("i")  # each row's combination, as its position in `index`

    def add(self, codes: tuple[int, ...]) -> None:
        k = self.index.get(codes)
        if k is None:
            k = self.index[codes] = len(self.counts)
            self.counts.append(0)
        self.counts[k] += 1
        self.rows.append(k)

    def __len__(self) -> int:
        return len(self.rows)

    def matrix(self) -> Any:
        """(n, J) int64 numpy array of the votes."""
        import numpy as np

        table = np.array(list(self.index), dtype=np.int64).reshape(len(self.index), self.n_judges)
        return table[np.frombuffer(self.rows, dtype=np.int32)]


def none_uninformative(votes: Votes, K: int, max_work: int = 200_000) -> bool:
    """True when judges.uninformative(votes.matrix(), K) (no gold) surely flags no judge; False when it may
    flag one, or when a statistic is too close to its threshold to tell here, or when there are so many
    distinct combinations that numpy is the quicker way (the caller then runs the full computation)."""
    n, J = len(votes), votes.n_judges
    if J < 2 or n < MIN_ROWS:
        return True
    if len(votes.counts) * J * J > max_work:
        return False
    table = list(zip(votes.index, votes.counts))
    per = [[0] * K for _ in range(J)]  # each judge's label counts over its answered rows
    for codes, c in table:
        for j, lab in enumerate(codes):
            if lab >= 0:
                per[j][lab] += c
    answered = [max(sum(p), 1) for p in per]
    if K >= 3:  # judges._concentrated
        share = [max(p) / a for p, a in zip(per, answered)]
        if min(share) <= SPREAD + _EPS and max(share) >= TOP - _EPS:
            return False
    best = [-float("inf")] * J  # judges.judge_kappas: each judge's highest kappa with another
    for j in range(J):
        for k in range(j + 1, J):
            kappa = _pair_kappa(table, j, k, K)
            if kappa is None:
                return False
            best[j], best[k] = max(best[j], kappa), max(best[k], kappa)
    if min(best) < MIN_KAPPA + _EPS:
        return False
    if J >= 3:  # judges._label_skew: total variation from the other judges' mean shares
        shares = [[x / a for x in p] for p, a in zip(per, answered)]
        total = [sum(col) for col in zip(*shares)]
        for s in shares:
            if 0.5 * sum(abs(x - (t - x) / (J - 1)) for x, t in zip(s, total)) >= MAX_SKEW - _EPS:
                return False
    return True


def _pair_kappa(table: list[tuple[tuple[int, ...], int]], j: int, k: int, K: int) -> float | None:
    """Cohen's kappa of judges j and k over the rows both answered (judges._kappa), from exact integer
    counts; None when chance agreement is near 1 (two near-constant judges), where numpy's rounding is
    magnified too much to match its verdict here."""
    a, b = [0] * K, [0] * K
    agree = m = 0
    for codes, c in table:
        x, y = codes[j], codes[k]
        if x >= 0 and y >= 0:
            a[x] += c
            b[y] += c
            m += c
            if x == y:
                agree += c
    if not m:
        return 0.0
    chance = sum(p * q for p, q in zip(a, b))  # pe = chance / m**2
    if (m * m - chance) * 1000 <= m * m:
        return None
    return (agree * m - chance) / (m * m - chance)
