"""Aggregation of candidate sets (candidate mode): ``cand`` is a bool array of shape (n_items, n_judges, K);
an all-False set means "no answer"."""

from __future__ import annotations

import numpy as np

from llmlabel.ensemble.aggregate import (
    _TINY,
    DawidSkeneResult,
    _check_gold,
    _compress,
    _em_with_gold,
    _normalize_rows,
)

__all__ = ["candidate_scores", "aggregate_candidates", "dawid_skene_candidates"]


def _check_cand(cand: np.ndarray) -> np.ndarray:
    c = np.asarray(cand, dtype=bool)
    if c.ndim != 3:
        raise ValueError(f"cand must be 3-D (n_items, n_judges, K), got shape {c.shape}")
    return c


def candidate_scores(cand: np.ndarray) -> np.ndarray:
    """(n, K) fraction of answering judges whose set contains each label (0 if none answered)."""
    c = _check_cand(cand)
    n_ans = c.any(axis=2).sum(axis=1, keepdims=True)
    hits = c.sum(axis=1).astype(np.float64)
    return np.divide(hits, n_ans, out=np.zeros_like(hits), where=n_ans > 0)


def aggregate_candidates(cand: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Labels present in at least ``threshold`` of answering judges' sets.

    Never empty: a row with nothing above threshold falls back to its
    argmax-score labels (all ties kept, so a row nobody answered gets every label).
    """
    s = candidate_scores(cand)
    # Tolerance so that e.g. 2/3 >= 0.6666... behaves as intended.
    out = s >= threshold - 1e-9
    empty = ~out.any(axis=1)
    if empty.any():
        se = s[empty]
        out[empty] = se >= se.max(axis=1, keepdims=True) - 1e-12
    return out


def dawid_skene_candidates(
    cand: np.ndarray,
    K: int | None = None,
    gold: dict[int, int] | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    smoothing: float = 0.01,
) -> DawidSkeneResult:
    """Dawid-Skene EM for candidate sets.

    Judge j's set is modeled as independent Bernoulli inclusions:
    P(set | true k) = prod_l theta_j[k,l]^[l in set] (1 - theta_j[k,l])^[l not in set].
    Empty sets are "no answer" and contribute nothing, so theta is really
    P(l in set | true k, judge answered). Initialized from normalized
    candidate scores; gold items are handled as in ``dawid_skene``.
    """
    c = _check_cand(cand)
    n, J, Kc = c.shape
    if K is None:
        K = Kc
    if K != Kc:
        raise ValueError(f"cand has {Kc} labels, K={K}")
    g_idx, g_lab = _check_gold(gold, n, K)

    if K <= 62:
        # Pack each set into a bitmask (0 = no answer) so identical rows collapse.
        codes = (c.astype(np.int64) << np.arange(K, dtype=np.int64)).sum(axis=2)
        crow, w, item_to_row, P = _compress(codes, g_idx)
        rows = ((crow[:, :, None] >> np.arange(K, dtype=np.int64)) & 1).astype(bool)
    else:
        order = np.concatenate([np.setdiff1d(np.arange(n), g_idx), g_idx])
        rows, w, P = c[order], np.ones(n, dtype=np.float64), int(n - len(g_idx))
        item_to_row = np.empty(n, np.int64)
        item_to_row[order] = np.arange(n)

    X = rows.astype(np.float64)  # (R, J, K)
    ans: np.ndarray = np.asarray(rows.any(axis=2), dtype=np.float64)  # (R, J)
    n_obs = max(float((w[:, None] * ans).sum()), 1.0)

    def m_step(post: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wp = post * w[:, None]
        theta = np.empty((J, K, K))
        for j in range(J):
            wpa = wp * ans[:, j, None]
            theta[j] = (wpa.T @ X[:, j, :] + smoothing) / (wpa.sum(axis=0)[:, None] + 2 * smoothing)
        prior = _normalize_rows((wp.sum(axis=0) + smoothing)[None, :])[0]
        return theta, prior

    def log_joint(theta: np.ndarray, prior: np.ndarray) -> np.ndarray:
        t = np.clip(theta, 1e-12, 1 - 1e-12)
        lp = np.tile(np.log(np.maximum(prior, _TINY)), (len(rows), 1))
        for j in range(J):
            Xj = X[:, j, :]
            lp += (Xj @ np.log(t[j]).T + (1.0 - Xj) @ np.log1p(-t[j]).T) * ans[:, j, None]
        return lp

    post0 = _normalize_rows(candidate_scores(rows))
    post, theta, prior, n_iter = _em_with_gold(post0, w, P, g_lab, m_step, log_joint, max_iter, tol, n_obs)
    acc = np.einsum("k,jkk->j", prior, theta)
    return DawidSkeneResult(post[item_to_row], theta, prior, acc, n_iter)
