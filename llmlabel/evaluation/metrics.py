"""Evaluation metrics: accuracy, agreement, calibration and candidate sets.

Votes follow llmlabel.ensemble.aggregate: int array (n_items, n_judges), -1 = missing.
Candidate sets are bool arrays (n, K); gold labels are int codes (n,).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

__all__ = [
    "accuracy",
    "macro_f1",
    "fleiss_kappa",
    "krippendorff_alpha_nominal",
    "expected_calibration_error",
    "selective_threshold",
    "candidate_coverage",
    "mean_set_size",
    "candidate_beta",
    "candidate_f1",
    "candidate_metrics",
    "cost_per_correct",
]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of items with y_pred == y_true (nan if empty)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape:
        raise ValueError("y_true and y_pred must have the same shape")
    return float(np.mean(t == p)) if t.size else float("nan")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, labels: list | None = None) -> float:
    """Unweighted mean of per-class F1 (classes = ``labels`` or those seen in either array)."""
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def _rating_counts(votes: np.ndarray, K: int) -> np.ndarray:
    v = np.asarray(votes, dtype=np.int64)
    if v.ndim != 2:
        raise ValueError("votes must be 2-D (n_items, n_judges)")
    if v.size and (v.min() < -1 or v.max() >= K):
        raise ValueError(f"votes must lie in [-1, {K - 1}]")
    n = v.shape[0]
    counts = np.zeros((n, K))
    for j in range(v.shape[1]):
        ok = v[:, j] >= 0
        counts[np.flatnonzero(ok), v[ok, j]] += 1
    return counts


def fleiss_kappa(votes: np.ndarray, K: int) -> float:
    """Fleiss' kappa = (P_bar - P_e) / (1 - P_e), over items with >= 2 ratings.

    P_i = (sum_k n_ik^2 - n_i) / (n_i (n_i - 1)) allows a varying number of
    raters n_i per item; p_k = sum_i n_ik / sum_i n_i; P_e = sum_k p_k^2.
    nan if no item has 2 ratings or P_e == 1 (all ratings in one class).
    """
    c = _rating_counts(votes, K)
    m = c.sum(axis=1)
    c, m = c[m >= 2], m[m >= 2]
    if len(m) == 0:
        return float("nan")
    P_bar = np.mean(((c**2).sum(axis=1) - m) / (m * (m - 1)))
    p = c.sum(axis=0) / m.sum()
    P_e = float((p**2).sum())
    if np.isclose(P_e, 1.0):
        return float("nan")
    return float((P_bar - P_e) / (1.0 - P_e))


def krippendorff_alpha_nominal(votes: np.ndarray, K: int) -> float:
    """Krippendorff's alpha, nominal: 1 - (n - 1) * sum_{c!=k} o_ck / sum_{c!=k} n_c n_k.

    o is the coincidence matrix over units with >= 2 values,
    o_ck = sum_u n_uc (n_uk - [c==k]) / (m_u - 1); n_c = sum_k o_ck; n = sum_c n_c.
    nan if fewer than 2 pairable values or no expected disagreement.
    """
    c = _rating_counts(votes, K)
    m = c.sum(axis=1)
    c, m = c[m >= 2], m[m >= 2]
    if len(m) == 0:
        return float("nan")
    cw = c / (m - 1)[:, None]
    o = cw.T @ c - np.diag(cw.sum(axis=0))
    n_c = o.sum(axis=1)
    n = n_c.sum()
    d_o = o.sum() - np.trace(o)
    d_e = n_c.sum() ** 2 - (n_c**2).sum()
    if n < 2 or d_e <= 0:
        return float("nan")
    return float(1.0 - (n - 1) * d_o / d_e)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE = sum_b |B_b|/n * |acc(B_b) - mean conf(B_b)| over equal-width bins on [0, 1].

    Bin b holds confidences in (b/n_bins, (b+1)/n_bins]; 0 goes to the first bin.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    if conf.shape != corr.shape:
        raise ValueError("confidence and correct must have the same shape")
    if conf.size == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)
    cnt = np.bincount(b, minlength=n_bins)
    gap = np.abs(np.bincount(b, weights=corr, minlength=n_bins) - np.bincount(b, weights=conf, minlength=n_bins))
    # |sum(corr) - sum(conf)| / n per bin equals |B|/n * |acc - conf|.
    return float(gap[cnt > 0].sum() / conf.size)


def selective_threshold(confidence: np.ndarray, correct: np.ndarray, target: float) -> dict[str, float | None]:
    """Risk-coverage: the lowest confidence threshold whose rows (confidence >= it) reach ``target`` accuracy.

    Returns {"target", "threshold", "coverage" (share of rows kept), "accuracy" (on the kept rows)};
    threshold, coverage and accuracy are None when no threshold reaches the target. Thresholds are the
    observed confidences, so rows with equal confidence are kept or dropped together.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    if conf.shape != corr.shape:
        raise ValueError("confidence and correct must have the same shape")
    out: dict[str, float | None] = {"target": target, "threshold": None, "coverage": None, "accuracy": None}
    if conf.size == 0:
        return out
    order = np.argsort(-conf, kind="stable")
    c, k = conf[order], np.cumsum(corr[order])
    last = np.flatnonzero(np.append(c[1:] < c[:-1], True))  # the last row of each run of equal confidence
    acc = k[last] / (last + 1)
    ok = np.flatnonzero(acc >= target - 1e-12)
    if ok.size:
        i = last[ok[-1]]
        out.update(threshold=float(c[i]), coverage=(i + 1) / conf.size, accuracy=float(acc[ok[-1]]))
    return out


def _check_sets(sets: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(sets, dtype=bool)
    g = np.asarray(gold, dtype=np.int64)
    if s.ndim != 2 or g.shape != (s.shape[0],):
        raise ValueError("sets must be (n, K) and gold (n,)")
    return s, g


def candidate_coverage(sets: np.ndarray, gold: np.ndarray) -> float:
    """Coverage (1 - alpha in CanDist): fraction of rows whose set contains the gold label."""
    s, g = _check_sets(sets, gold)
    return float(s[np.arange(len(g)), g].mean()) if len(g) else float("nan")


def mean_set_size(sets: np.ndarray) -> float:
    """Mean number of labels per candidate set."""
    s = np.asarray(sets, dtype=bool)
    return float(s.sum(axis=1).mean()) if len(s) else float("nan")


def candidate_beta(sets: np.ndarray) -> float:
    """Beta (CanDist): fraction of sets with more than one label, i.e. ambiguous."""
    s = np.asarray(sets, dtype=bool)
    return float((s.sum(axis=1) > 1).mean()) if len(s) else float("nan")


def candidate_f1(sets: np.ndarray, gold: np.ndarray) -> float:
    """Mean per-row F1 with precision = |S ∩ {gold}|/|S|, recall = [gold in S]; = 2/(1+|S|) on a hit, else 0."""
    s, g = _check_sets(sets, gold)
    if not len(g):
        return float("nan")
    hit = s[np.arange(len(g)), g]
    size = s.sum(axis=1)
    return float(np.where(hit, 2.0 / (1.0 + size), 0.0).mean())


def candidate_metrics(sets: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """All candidate-set metrics in one dict: coverage, mean_set_size, beta, candidate_f1."""
    return {
        "coverage": candidate_coverage(sets, gold),
        "mean_set_size": mean_set_size(sets),
        "beta": candidate_beta(sets),
        "candidate_f1": candidate_f1(sets, gold),
    }


def cost_per_correct(cost: float, n_correct: int) -> float:
    """Total cost divided by the number of correct labels (inf if none correct)."""
    return float(cost) / n_correct if n_correct > 0 else float("inf")
