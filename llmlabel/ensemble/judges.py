"""Which judges carry information: Cohen's kappa against gold or each other, and the judges an aggregation
should leave out (one label to everything, guessing, or label shares skewed far from the other judges')."""

from __future__ import annotations

import numpy as np

from llmlabel.ensemble.aggregate import _check_gold, _check_votes
from llmlabel.ensemble.votes import MAX_SKEW, MIN_KAPPA, MIN_ROWS, ONE_LABEL, SPREAD, TOP

__all__ = ["judge_kappas", "one_label", "uninformative"]


def _kappa(a: np.ndarray, b: np.ndarray, K: int) -> tuple[float, int]:
    """Cohen's kappa of two label vectors over items where both are >= 0, and that item count."""
    ok = (a >= 0) & (b >= 0)
    n = int(ok.sum())
    if not n:
        return 0.0, 0
    pa = np.bincount(a[ok], minlength=K) / n
    pb = np.bincount(b[ok], minlength=K) / n
    po, pe = float((a[ok] == b[ok]).mean()), float(pa @ pb)
    return (po - pe) / (1.0 - pe) if pe < 1.0 else 0.0, n


def judge_kappas(votes: np.ndarray, K: int, gold: dict[int, int] | None = None) -> np.ndarray:
    """(J,) Cohen's kappa of each judge against gold (10+ gold rows), else its highest kappa with another judge.

    Kappa discounts the agreement expected by chance from the label shares, so a judge that says one label
    to everything, or guesses, scores ~0 however skewed the data is (raw agreement would reward it). Pairs,
    not a plurality of the others, are the reference: a constant judge in the plurality would make every
    reference constant too.
    """
    v = _check_votes(votes, K)
    idx, lab = _check_gold(gold, v.shape[0], K)
    J = v.shape[1]
    if len(idx) >= 10:
        return np.array([_kappa(v[idx, j], lab, K)[0] for j in range(J)])
    pair = np.full((J, J), -np.inf)
    for j in range(J):
        for k in range(j + 1, J):
            pair[j, k] = pair[k, j] = _kappa(v[:, j], v[:, k], K)[0]
    return pair.max(axis=1) if J > 1 else np.zeros(J)


def uninformative(
    votes: np.ndarray,
    K: int,
    gold: dict[int, int] | None = None,
    min_kappa: float = MIN_KAPPA,
    min_rows: int = MIN_ROWS,
    max_skew: float = MAX_SKEW,
) -> np.ndarray:
    """(J,) bool: judges whose answers carry (next to) no information about the label, to be left out.

    Judges that concentrate on one label while another spreads its answers are flagged first (see
    _concentrated); of the others, a judge is flagged when its kappa (see judge_kappas) is below ``min_kappa``, or (three judges or more)
    when its label shares are ``max_skew`` or more (total variation) away from the other judges' mean shares:
    a judge that says "negative" to 90% of rows while the others split evenly is biased, even when it agrees
    with another weak judge often enough to keep a kappa above chance. Without gold and with two
    judges both kappas are the same number, so only the one whose answers are far less varied (lower
    label entropy: the "one label to everything" failure) is flagged. At least one judge always stays,
    and nothing is flagged on fewer than ``min_rows`` answered items. (votes.none_uninformative answers
    "nothing flagged" from vote counts without numpy: keep the two in step.)
    """
    v = _check_votes(votes, K)
    n, J = v.shape
    flagged = np.zeros(J, dtype=bool)
    if J < 2 or n < min_rows:
        return flagged
    flagged = _concentrated(v, K)
    live = np.flatnonzero(~flagged)
    kappa = np.zeros(J)
    kappa[live] = judge_kappas(v[:, live], K, gold) if len(live) > 1 else 1.0
    flagged |= kappa < min_kappa
    # The most skewed judge goes first, then the others are compared again without it.
    while (~flagged).sum() >= 3:
        live = np.flatnonzero(~flagged)
        skew = _label_skew(v[:, live], K)
        if skew.max() < max_skew:
            break
        flagged[live[int(skew.argmax())]] = True
    ent = np.array([_entropy(np.bincount(v[v[:, j] >= 0, j], minlength=K)) for j in range(J)])
    if J == 2 and len(gold or {}) < 10 and flagged.all():
        low = int(ent.argmin())
        flagged[:] = False
        flagged[low] = ent[1 - low] - ent[low] >= 0.3  # nats; ln 2 = 0.69 is a 50/50 split
    if flagged.all():  # keep the judge with the most varied answers: a constant judge has none to give
        flagged[int(np.argmax(ent))] = False
    return flagged


def _concentrated(v: np.ndarray, K: int, top: float = TOP, spread: float = SPREAD) -> np.ndarray:
    """(J,) bool: on a task of 3+ labels, judges that give one label to ``top`` or more of their answers while
    another judge spreads its answers (no label over ``spread``). Two such judges (tiny models that answer the
    first code to every question) agree with each other and would out-vote the one judge that reads the text;
    pairwise kappa cannot see it, so they go first. Not on 2 labels: an imbalanced task (90% ham) is answered
    that way by a good judge."""
    J = v.shape[1]
    if K < 3 or J < 2:
        return np.zeros(J, dtype=bool)
    share = _top_shares(v, K)[1]
    return (share >= top) & (share.min() <= spread)


def _top_shares(v: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """(J,) each judge's most frequent label and its share of the judge's answers."""
    counts = np.array([np.bincount(v[v[:, j] >= 0, j], minlength=K) for j in range(v.shape[1])]).reshape(-1, K)
    return counts.argmax(axis=1), counts.max(axis=1) / np.maximum(counts.sum(axis=1), 1)


def one_label(votes: np.ndarray, K: int, min_rows: int = MIN_ROWS) -> list[tuple[int, int, float]]:
    """(judge, label, share) for each judge that gives one label to most of its answers on a task of 3+ labels:
    `_concentrated`'s signal for a judge with no other judge to compare with (a single judge cannot be left
    out, so it is reported instead). "Most" is ONE_LABEL of the answers, or on many labels (20+) a quarter:
    a stuck small model answered "Sports" to 65% of a four-label news task and "failed_transfer" to a third of
    a 77-intent one. A real task may be that skewed: the caller words it as something to check."""
    v = _check_votes(votes, K)
    if K < 3:
        return []
    top, share = _top_shares(v, K)
    answered = (v >= 0).sum(axis=0)
    limit = max(0.25, min(ONE_LABEL, 5 / K))
    return [
        (j, int(top[j]), float(share[j])) for j in range(v.shape[1]) if answered[j] >= min_rows and share[j] >= limit
    ]


def _label_skew(v: np.ndarray, K: int) -> np.ndarray:
    """(J,) total-variation distance between each judge's label shares and the mean shares of the others."""
    shares = np.array(
        [np.bincount(v[v[:, j] >= 0, j], minlength=K) / max((v[:, j] >= 0).sum(), 1) for j in range(v.shape[1])]
    )
    J = len(shares)
    others = (shares.sum(axis=0)[None, :] - shares) / max(J - 1, 1)
    return 0.5 * np.abs(shares - others).sum(axis=1)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / max(counts.sum(), 1)
    return float(-(p * np.log(p)).sum())
