"""Aggregation of LLM-judge votes into per-item label distributions.

Conventions: ``votes`` is an int array of shape (n_items, n_judges) holding
label codes 0..K-1, with -1 meaning "the judge did not answer". Every aggregator
returns an (n, K) row-stochastic array. Candidate sets: ensemble/candidates.py.
Pure math over arrays; ensemble/combine.py applies it to a job's answers and records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DawidSkeneResult",
    "weighted",
    "agreement_weights",
    "gold_weights",
    "dawid_skene",
]

# Floor for probabilities before taking logs: keeps EM finite when smoothing=0.
_TINY = 1e-300


@dataclass
class DawidSkeneResult:
    """Output of (candidate) Dawid-Skene EM.

    posteriors: (n, K) P(true class | votes).
    confusions: (J, K, K), rows = true class. For ``dawid_skene`` row k of
        judge j is P(vote = l | true = k); for ``dawid_skene_candidates`` it is
        P(l in set | true = k) (independent Bernoulli, rows need not sum to 1).
    priors: (K,) class prevalence.
    accuracies: (J,) sum_k priors[k] * confusions[j, k, k].
    n_iter: number of EM iterations run.
    """

    posteriors: np.ndarray
    confusions: np.ndarray
    priors: np.ndarray
    accuracies: np.ndarray
    n_iter: int

    @property
    def labels(self) -> np.ndarray:
        return self.posteriors.argmax(axis=1)


# ---------------------------------------------------------------------------
# helpers


def _check_votes(votes: np.ndarray, K: int) -> np.ndarray:
    v = np.asarray(votes)
    if v.ndim != 2:
        raise ValueError(f"votes must be 2-D (n_items, n_judges), got shape {v.shape}")
    if K < 1:
        raise ValueError("K must be >= 1")
    v = v.astype(np.int64, copy=False)
    if v.size and (v.min() < -1 or v.max() >= K):
        raise ValueError(f"votes must lie in [-1, {K - 1}]")
    return v


def _check_gold(gold: dict[int, int] | None, n: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    if not gold:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    idx = np.fromiter(gold.keys(), np.int64, len(gold))
    lab = np.fromiter(gold.values(), np.int64, len(gold))
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError("gold item index out of range")
    if lab.min() < 0 or lab.max() >= K:
        raise ValueError("gold label out of range")
    return idx, lab


def _vote_counts(votes: np.ndarray, K: int) -> np.ndarray:
    """(n, K) number of judges voting for each class."""
    n, J = votes.shape
    counts = np.zeros((n, K), dtype=np.float64)
    for j in range(J):
        v = votes[:, j]
        ok = v >= 0
        # bincount over flat (item, class) ids is much faster than np.add.at
        counts += np.bincount(np.flatnonzero(ok) * K + v[ok], minlength=n * K).reshape(n, K)
    return counts


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    """Row-normalize; all-zero rows become uniform."""
    s = x.sum(axis=1, keepdims=True)
    K = x.shape[1]
    return np.divide(x, s, out=np.full_like(x, 1.0 / K, dtype=np.float64), where=s > 0)


def _softmax_rows(lp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row softmax and row log-sum-exp."""
    m = lp.max(axis=1, keepdims=True)
    e = np.exp(lp - m)
    s = e.sum(axis=1, keepdims=True)
    return e / s, (np.log(s) + m)[:, 0]


def _unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique rows of a non-negative int matrix: (rows, inverse, counts)."""
    n, J = a.shape
    if n == 0:
        return a, np.zeros(0, np.int64), np.zeros(0, np.int64)
    base = int(a.max()) + 1
    if J * np.log2(max(base, 2)) < 62:
        # Pack each row into one int64: sorting 1-D ints is far faster than unique(axis=0).
        code = a @ (base ** np.arange(J, dtype=np.int64))
        _, first, inv, cnt = np.unique(code, return_index=True, return_inverse=True, return_counts=True)
        return a[first], inv.reshape(-1), cnt
    rows, inv, cnt = np.unique(a, axis=0, return_inverse=True, return_counts=True)
    return rows, inv.reshape(-1), cnt


def _compress(patterns: np.ndarray, gold_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Collapse identical observation rows (non-negative int codes).

    The DS posterior of an item depends only on its row of observations, so EM
    can run over the distinct rows weighted by multiplicity. With few judges
    and classes that shrinks 10^6 items to a few hundred rows. Gold items are
    kept as their own rows (appended at the end) because they get clamped.

    Returns (rows, weights, item_to_row, n_free_rows).
    """
    n = patterns.shape[0]
    free = np.ones(n, dtype=bool)
    free[gold_idx] = False
    free_idx = np.flatnonzero(free)
    urows, inv, cnt = _unique_rows(patterns[free_idx])
    P = len(urows)
    rows = np.concatenate([urows, patterns[gold_idx]], axis=0)
    weights = np.concatenate([cnt, np.ones(len(gold_idx), np.int64)]).astype(np.float64)
    item_to_row = np.empty(n, dtype=np.int64)
    item_to_row[free_idx] = inv
    item_to_row[gold_idx] = P + np.arange(len(gold_idx))
    return rows, weights, item_to_row, P


# ---------------------------------------------------------------------------
# simple voting


def weighted(votes: np.ndarray, K: int, weights: np.ndarray) -> np.ndarray:
    """Log-odds weighted vote: softmax_k(sum_j w_j * [vote_j == k]).

    With w_j = log(K-1) + logit(acc_j) this is the exact posterior under a
    uniform prior and a "symmetric noise" judge model (errors spread evenly).
    """
    v = _check_votes(votes, K)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (v.shape[1],):
        raise ValueError(f"weights must have shape ({v.shape[1]},)")
    n = v.shape[0]
    scores = np.zeros((n, K))
    for j in range(v.shape[1]):
        ok = v[:, j] >= 0
        scores[np.flatnonzero(ok), v[ok, j]] += w[j]
    return _softmax_rows(scores)[0]


def _reference(v: np.ndarray, j: int, K: int, counts: np.ndarray) -> np.ndarray:
    """The other judges' unique plurality label per item (-1 where tied or none answered)."""
    others = counts.copy()
    ans = v[:, j] >= 0
    others[np.flatnonzero(ans), v[ans, j]] -= 1
    top = others.max(axis=1)
    unique = ((others == top[:, None]).sum(axis=1) == 1) & (top > 0)
    return np.where(unique, others.argmax(axis=1), -1)


def _acc_to_weight(acc: np.ndarray, K: int, max_acc: float) -> np.ndarray:
    # Floor at chance (1/K): a below-chance judge gets weight 0 rather than a
    # negative one, since in multi-class "anti-votes" carry little information.
    a = np.clip(acc, 1.0 / K, max_acc)
    return np.log(max(K - 1, 1)) + np.log(a / (1.0 - a))


def agreement_weights(votes: np.ndarray, K: int, max_acc: float = 0.99) -> np.ndarray:
    """Weights from each judge's agreement with the leave-one-out majority.

    acc_j = (agree + 1) / (compared + 2) over items where judge j answered and
    the other judges have a unique plurality label; weight = log(K-1) +
    log(acc/(1-acc)) with acc clipped to [1/K, max_acc]. Agreement with a noisy
    reference under-estimates accuracy, but the ranking of judges is what matters.
    """
    v = _check_votes(votes, K)
    J = v.shape[1]
    counts = _vote_counts(v, K)
    acc = np.full(J, 0.5)
    for j in range(J):
        ref = _reference(v, j, K, counts)
        use = (v[:, j] >= 0) & (ref >= 0)
        acc[j] = ((v[use, j] == ref[use]).sum() + 1.0) / (use.sum() + 2.0)
    return _acc_to_weight(acc, K, max_acc)


def gold_weights(votes: np.ndarray, K: int, gold: dict[int, int], max_acc: float = 0.99) -> np.ndarray:
    """Weights from accuracy on gold items, acc_j = (correct + 1) / (answered + 2)."""
    v = _check_votes(votes, K)
    idx, lab = _check_gold(gold, v.shape[0], K)
    gv = v[idx]
    answered = (gv >= 0).sum(axis=0)
    correct = (gv == lab[:, None]).sum(axis=0)
    acc = (correct + 1.0) / (answered + 2.0)
    return _acc_to_weight(acc, K, max_acc)


# ---------------------------------------------------------------------------
# Dawid-Skene

MStep = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
LogJoint = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _run_em(
    post: np.ndarray,
    w: np.ndarray,
    P: int,
    g_lab: np.ndarray,
    m_step: MStep,
    log_joint: LogJoint,
    max_iter: int,
    tol: float,
    n_obs: float,
    first_w: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """Generic EM over compressed rows; rows P: are gold, clamped to ``g_lab``.

    The objective is log P(votes of all rows, gold labels), per observation, so
    runs from different starts are comparable. ``first_w`` replaces the row
    weights in the first M-step (used to start from gold-only estimates).
    """
    K = post.shape[1]
    G = len(g_lab)
    clamp = np.eye(K)[g_lab]
    post = post.copy()
    post[P:] = clamp
    ll_prev = ll = -np.inf
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        conf, prior = m_step(post, first_w if (n_iter == 1 and first_w is not None) else w)
        lp = log_joint(conf, prior)
        post, lse = _softmax_rows(lp)
        lse[P:] = lp[P:][np.arange(G), g_lab]
        post[P:] = clamp
        ll = float((w * lse).sum()) / n_obs
        if abs(ll - ll_prev) < tol:
            break
        ll_prev = ll
    conf, prior = m_step(post, w)
    return post, conf, prior, ll, n_iter


def _em_with_gold(
    post0: np.ndarray,
    w: np.ndarray,
    P: int,
    g_lab: np.ndarray,
    m_step: MStep,
    log_joint: LogJoint,
    max_iter: int,
    tol: float,
    n_obs: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    best = _run_em(post0, w, P, g_lab, m_step, log_joint, max_iter, tol, n_obs)
    if len(g_lab):
        # EM from majority vote can settle in a label-permuted mode (e.g. when
        # most judges share a systematic confusion) that clamping a few gold
        # rows cannot pull it out of. A second start from confusions estimated
        # on gold rows alone reaches the anchored mode; keep the start with
        # the higher joint likelihood of votes and gold labels.
        gold_only = np.where(np.arange(len(w)) >= P, w, 0.0)
        alt = _run_em(post0, w, P, g_lab, m_step, log_joint, max_iter, tol, n_obs, first_w=gold_only)
        if alt[3] > best[3]:
            best = alt
    post, conf, prior, _, n_iter = best
    return post, conf, prior, n_iter


def dawid_skene(
    votes: np.ndarray,
    K: int,
    gold: dict[int, int] | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    smoothing: float = 0.01,
    diag_prior: float = 0.0,
) -> DawidSkeneResult:
    """Dawid-Skene EM over single-label votes (missing = -1).

    Initialized from majority vote. Gold items are clamped to one-hot in every
    E-step, anchoring the confusion matrices (with gold, a second EM start from
    gold-only confusion estimates is also tried; the likelier one wins).
    ``smoothing`` is a pseudo-count added to every confusion cell and prior; ``diag_prior`` adds that
    many pseudo-counts to each confusion diagonal (a Dirichlet prior that judges are better than chance),
    which keeps small jobs from fitting label-permuted or degenerate confusions and fades as rows add up.
    Stops when the log-likelihood per observed vote changes by less than ``tol``.
    """
    v = _check_votes(votes, K)
    n, J = v.shape
    g_idx, g_lab = _check_gold(gold, n, K)
    # Shift by +1 so missing (-1) becomes 0 and rows are non-negative codes.
    rows, w, item_to_row, P = _compress(v + 1, g_idx)
    rows = rows - 1
    n_obs = max(float((w[:, None] * (rows >= 0)).sum()), 1.0)
    # Missing votes index slot K: discarded in the M-step, a zero row in the E-step.
    idx = np.where(rows >= 0, rows, K)
    offs = np.arange(K) * (K + 1)

    def m_step(post: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wp = post * w[:, None]
        conf = np.empty((J, K, K))
        for j in range(J):
            flat = (offs[None, :] + idx[:, j, None]).ravel()
            c = np.bincount(flat, weights=wp.ravel(), minlength=K * (K + 1)).reshape(K, K + 1)
            conf[j] = c[:, :K] + smoothing + diag_prior * np.eye(K)
        conf = _normalize_rows(conf.reshape(J * K, K)).reshape(J, K, K)
        prior = _normalize_rows((wp.sum(axis=0) + smoothing)[None, :])[0]
        return conf, prior

    def log_joint(conf: np.ndarray, prior: np.ndarray) -> np.ndarray:
        lp = np.tile(np.log(np.maximum(prior, _TINY)), (len(rows), 1))
        logc = np.log(np.maximum(conf, _TINY))
        for j in range(J):
            table = np.vstack([logc[j].T, np.zeros((1, K))])
            lp += table[idx[:, j]]
        return lp

    post0 = _normalize_rows(_vote_counts(rows, K))
    post, conf, prior, n_iter = _em_with_gold(post0, w, P, g_lab, m_step, log_joint, max_iter, tol, n_obs)
    acc = np.einsum("k,jkk->j", prior, conf)
    return DawidSkeneResult(post[item_to_row], conf, prior, acc, n_iter)
