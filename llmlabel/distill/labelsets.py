"""Students for label sets beyond one label a text, with scikit-learn's conventions.

:class:`MultiLabelDistiller` learns a multi-label output (`task.multi_label`): one binary logistic regression
per label on a shared featurizer (one-vs-rest), each trained on the teacher's per-label probability as a soft
target (a row counts as a positive with weight p and a negative with weight 1 - p), so a label two of three
judges named teaches less than one all three named. Each label's threshold is tuned on held-out rows against
the teacher's sets, by the same rule that tunes a multi-label job's thresholds on gold rows
(:func:`llmlabel.ensemble.multilabel.best_thresholds`), then the student is refit on every row.
``predict`` returns the indicator matrix scikit-learn's multi-label estimators return (columns: ``classes_``);
``predict_sets`` the label lists.

:class:`TaxonomyDistiller` learns a taxonomy output (`task.taxonomy`): one multinomial logistic regression per
level, the level-k one trained on the rows whose path reached level k. It predicts top-down as the LLM path
labels: at each level the probabilities are renormalised over the children of the node chosen above, the best
child is taken when its probability reaches ``threshold`` (the top level always is) and the row stops at the
parent otherwise. The tree is the one the teacher's paths trace (a node's children are those seen under it).

Both keep their classifiers as one stacked coefficient matrix (``coef_``, ``intercept_``), which is what a
saved model file's arrays are checked against before it is loaded (:func:`llmlabel.distill.training.check_archive`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.utils.validation import check_is_fitted

from llmlabel.distill.features import make_featurizer
from llmlabel.distill.refinery import RefineryMixin
from llmlabel.distill.student import _texts
from llmlabel.ensemble.multilabel import best_thresholds

__all__ = ["MultiLabelDistiller", "TaxonomyDistiller", "PATH_SEP"]

PATH_SEP = "/"  # a node's name in classes_: its path joined (as a taxonomy gold file's `path` column writes it)


class _TextStudent(RefineryMixin, ClassifierMixin, BaseEstimator):
    """What both students share: the featurizer and the logistic-regression fits (RefineryMixin._fit_lr)."""

    features: Any
    C: float
    max_iter: int

    def _featurize(self, X: Any, fit: bool) -> Any:
        texts = _texts(X)  # the single-label student's checks: a 1-D sequence of strings
        if fit:
            self.featurizer_ = (
                make_featurizer(self.features) if isinstance(self.features, str) else clone(self.features)
            )
            return self.featurizer_.fit_transform(texts)
        return self.featurizer_.transform(texts)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags


def _weights(sample_weight: Any, n: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n)
    w = np.array(sample_weight, dtype=np.float64)
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"sample_weight must be {n} finite non-negative numbers")
    return w


class MultiLabelDistiller(_TextStudent):
    """One-vs-rest text classifier trained from label sets and per-label probabilities.

    Parameters
    ----------
    features: featurizer kind for :func:`llmlabel.distill.features.make_featurizer`, or a transformer.
    C, max_iter: each label's LogisticRegression (lbfgs).
    threshold: a label is predicted at this probability or above, where no tuned threshold replaces it.
    holdout: fraction of rows held out to tune each label's threshold against the teacher's sets (0: none).
    min_rows: a label's threshold is tuned only with at least this many held-out rows.
    allow_empty: whether a row may get no label (else its likeliest label is kept), as task.allow_empty.
    refit: after tuning, refit on all rows (held-out included).
    """

    def __init__(
        self,
        features: Any = "tfidf",
        C: float = 10.0,
        max_iter: int = 300,
        threshold: float = 0.5,
        holdout: float = 0.2,
        min_rows: int = 20,
        allow_empty: bool = False,
        refit: bool = True,
        random_state: int = 0,
    ) -> None:
        self.features = features
        self.C = C
        self.max_iter = max_iter
        self.threshold = threshold
        self.holdout = holdout
        self.min_rows = min_rows
        self.allow_empty = allow_empty
        self.refit = refit
        self.random_state = random_state

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        probs: Sequence[Mapping[str, float] | None] | np.ndarray | None = None,
        sample_weight: Any = None,
    ) -> MultiLabelDistiller:
        """Fit on texts ``X`` with label sets ``y`` (lists of labels, or an indicator matrix) and, optionally,
        each row's per-label probabilities ``probs`` (dicts label -> p, or an (n, K) matrix in ``y``'s columns)
        as soft targets; a label a row's dict lacks counts 1 when in its set, else 0."""
        n = len(X)
        T, self.classes_ = _indicator(y, n)
        P = _soft_targets(T, self.classes_, probs)
        w = _weights(sample_weight, n)
        F = self._featurize(X, fit=True)
        K = len(self.classes_)
        self.thresholds_ = np.full(K, float(self.threshold))
        m = int(round(n * self.holdout))
        if self.holdout > 0 and m >= self.min_rows and n - m >= 2:
            rng = np.random.default_rng(self.random_state)
            order = rng.permutation(n)
            held, train = np.sort(order[:m]), np.sort(order[m:])
            self._fit_labels(F[train], P[train], w[train])
            names = [str(c) for c in self.classes_]
            got = best_thresholds(self._decision(F[held]), T[held], names, float(self.threshold), self.min_rows)
            self.thresholds_ = np.array([got.get(lab, float(self.threshold)) for lab in names])
            if not self.refit:
                return self
        self._fit_labels(F, P, w)
        return self

    def _fit_labels(self, F: Any, P: np.ndarray, w: np.ndarray) -> None:
        import scipy.sparse as sp

        n, K = P.shape
        coef = np.zeros((K, F.shape[1]))
        intercept = np.zeros(K)
        both = sp.vstack([F, F]).tocsr() if sp.issparse(F) else np.vstack([F, F])
        yy = np.r_[np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)]
        for k in range(K):
            p = P[:, k]
            sw = np.r_[w * p, w * (1.0 - p)]
            pos, neg = float((w * p).sum()), float((w * (1.0 - p)).sum())
            if pos <= 0 or neg <= 0:  # the label is always or never there: a constant model
                intercept[k] = 12.0 if neg <= 0 else -12.0
                continue
            lr = self._fit_lr(both, yy, sw, None, rescale=False)
            coef[k], intercept[k] = lr.coef_[0], lr.intercept_[0]
        self.coef_, self.intercept_ = coef, intercept
        self.n_features_ = int(F.shape[1])

    def _decision(self, F: Any) -> np.ndarray:
        z = np.asarray(F @ self.coef_.T) + self.intercept_
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def inconsistency(self) -> str | None:
        """Why a loaded model's parts do not fit together (a crafted file), or None."""
        K = len(getattr(self, "classes_", []))
        coef, b, t = getattr(self, "coef_", None), getattr(self, "intercept_", None), getattr(self, "thresholds_", None)
        if not all(isinstance(a, np.ndarray) for a in (coef, b, t)):
            return "its classifier's arrays are missing"
        assert coef is not None and b is not None and t is not None
        if coef.shape[0] != K or b.shape != (K,) or t.shape != (K,):
            return f"{K} labels but coefficients {coef.shape}, intercepts {b.shape} and thresholds {t.shape}"
        return None

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, K): each label's probability of being in the row's set (columns: ``classes_``)."""
        check_is_fitted(self)
        return self._decision(self._featurize(X, fit=False))

    def decide(self, P: np.ndarray) -> np.ndarray:
        """The indicator matrix of probabilities ``P``: each label at its threshold, and, unless
        ``allow_empty``, a row's likeliest label when none reaches its threshold (SetPolicy.decide's rule)."""
        Y = P >= self.thresholds_
        if not self.allow_empty:
            empty = ~Y.any(axis=1) & (P.max(axis=1, initial=0.0) > 0)
            Y[np.flatnonzero(empty), P[empty].argmax(axis=1)] = True
        return Y

    def predict(self, X: Any) -> np.ndarray:
        """The (n, K) boolean indicator matrix of the predicted sets."""
        return self.decide(self.predict_proba(X))

    def predict_sets(self, X: Any) -> list[list[str]]:
        """The predicted label sets, most probable label first."""
        P = self.predict_proba(X)
        Y = self.decide(P)
        out = []
        for p, yrow in zip(P, Y):
            ks = np.flatnonzero(yrow)
            out.append([str(self.classes_[k]) for k in ks[np.argsort(-p[ks], kind="stable")]])
        return out

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Micro-F1 of the predicted sets against ``y``."""
        from sklearn.metrics import f1_score

        T, _ = _indicator(y, len(X), classes=self.classes_)
        return float(f1_score(T, self.predict(X), average="micro", sample_weight=sample_weight, zero_division=0))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        return tags


def _indicator(y: Any, n: int, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, K) bool matrix and the classes: from label lists (MultiLabelBinarizer: classes sorted, or the
    given ones) or from an indicator matrix of numbers (classes 0..K-1)."""
    if isinstance(y, str) or any(isinstance(s, str) for s in y):
        raise TypeError("y must hold label lists (one list per row) or an indicator matrix, not single labels")
    arr = np.asarray(y) if hasattr(y, "shape") else None
    if arr is not None and arr.ndim == 2 and arr.dtype.kind in "biuf":
        if arr.shape[0] != n:
            raise ValueError(f"X has {n} rows but y has {arr.shape[0]}")
        return arr != 0, (np.arange(arr.shape[1]) if classes is None else classes)
    sets = [[str(v) for v in s] for s in y]
    if len(sets) != n:
        raise ValueError(f"X has {n} rows but y has {len(sets)}")
    mlb = MultiLabelBinarizer(classes=None if classes is None else [str(c) for c in classes])
    T = np.asarray(mlb.fit_transform(sets)).astype(bool)
    if T.shape[1] == 0:
        raise ValueError("no labels to learn from")
    return T, np.asarray(mlb.classes_)


def _soft_targets(T: np.ndarray, classes: np.ndarray, probs: Any) -> np.ndarray:
    P = T.astype(np.float64)
    if probs is None:
        return P
    if isinstance(probs, np.ndarray) and probs.ndim == 2:
        if probs.shape != T.shape:
            raise ValueError(f"probs has shape {probs.shape}, not {T.shape}")
        return np.clip(np.nan_to_num(probs.astype(np.float64), nan=0.0), 0.0, 1.0)
    if len(probs) != len(T):
        raise ValueError(f"y has {len(T)} rows but probs has {len(probs)}")
    index = {str(c): k for k, c in enumerate(classes)}
    for i, d in enumerate(probs):
        if not isinstance(d, Mapping):
            continue
        for lab, p in d.items():
            k = index.get(str(lab))
            if k is not None and isinstance(p, (int, float)) and math.isfinite(p):
                P[i, k] = min(max(float(p), 0.0), 1.0)
    return P


class TaxonomyDistiller(_TextStudent):
    """A classifier per taxonomy level, predicting paths top-down (see the module docstring).

    Parameters
    ----------
    features: featurizer kind for :func:`llmlabel.distill.features.make_featurizer`, or a transformer.
    C, max_iter: each level's LogisticRegression (lbfgs, multinomial).
    threshold: below this probability (among the children of the node reached) a row stops at the parent,
        as task.taxonomy_threshold does for the judges.
    """

    def __init__(self, features: Any = "tfidf", C: float = 10.0, max_iter: int = 300, threshold: float = 0.5) -> None:
        self.features = features
        self.C = C
        self.max_iter = max_iter
        self.threshold = threshold

    def fit(self, X: Any, y: Any, *, sample_weight: Any = None, level_weight: Any = None) -> TaxonomyDistiller:
        """Fit on texts ``X`` and paths ``y`` (lists of node names, top first; at least one level each).
        ``level_weight``: optional per row a list of weights, one a level (e.g. the teacher's
        level_confidence), multiplying ``sample_weight`` for that level's classifier."""
        n = len(X)
        paths = [tuple(str(x) for x in p) for p in y]
        if len(paths) != n:
            raise ValueError(f"X has {n} rows but y has {len(paths)}")
        if any(isinstance(p, str) for p in y):
            raise TypeError("y must hold paths (a list of node names per row), not single labels")
        if not paths or any(not p for p in paths):
            raise ValueError("every row needs a path of at least one node")
        w = _weights(sample_weight, n)
        F = self._featurize(X, fit=True)
        depth = max(len(p) for p in paths)
        self.levels_: list[list[list[str]]] = []  # each level's nodes (as paths), in classes_ order
        self.parents_: list[np.ndarray] = []  # each node's parent's index in the level above (-1: a top node)
        coefs, intercepts = [], []
        for d in range(1, depth + 1):
            rows = [i for i, p in enumerate(paths) if len(p) >= d]
            nodes = sorted({paths[i][:d] for i in rows})
            index = {node: k for k, node in enumerate(nodes)}
            above = {tuple(node): k for k, node in enumerate(self.levels_[-1])} if self.levels_ else {}
            self.levels_.append([list(node) for node in nodes])
            self.parents_.append(np.array([above.get(node[:-1], -1) for node in nodes], dtype=np.int64))
            yi = np.array([index[paths[i][:d]] for i in rows], dtype=np.int64)
            lw = np.array([_level_weight(level_weight, i, d) for i in rows]) * w[rows]
            coef, b = np.zeros((len(nodes), F.shape[1])), np.zeros(len(nodes))
            if len(nodes) > 1 and lw.any():
                lr = self._fit_lr(F[rows], yi, lw, None, rescale=False)
                if len(lr.classes_) == 2 and lr.coef_.shape[0] == 1:  # binary: softmax of (0, w.x + b)
                    coef[lr.classes_[1]], b[lr.classes_[1]] = lr.coef_[0], lr.intercept_[0]
                elif len(lr.classes_) > 1:
                    coef[lr.classes_], b[lr.classes_] = lr.coef_, lr.intercept_
                    b[np.setdiff1d(np.arange(len(nodes)), lr.classes_)] = -30.0  # weight 0 only: never chosen
            coefs.append(coef)
            intercepts.append(b)
        self.offsets_ = np.cumsum([0] + [len(lv) for lv in self.levels_]).astype(np.int64)
        self.coef_, self.intercept_ = np.vstack(coefs), np.concatenate(intercepts)
        self.classes_ = np.array([PATH_SEP.join(node) for lv in self.levels_ for node in lv])
        self.n_features_ = int(F.shape[1])
        return self

    def _walk(self, F: Any) -> tuple[list[list[str]], list[list[float]], list[dict[str, float]], np.ndarray]:
        """Each row's path, its per-level confidences (the last may be the one refused), the probabilities
        among the siblings of the deepest node taken, and P(node on the path) for every node (classes_)."""
        n = F.shape[0]
        Z = np.asarray(F @ self.coef_.T) + self.intercept_
        cur = np.full(n, -1, dtype=np.int64)  # each row's node at the level above (-1: the top)
        live = np.ones(n, dtype=bool)
        on_path = np.zeros((n, len(self.classes_)))
        paths: list[list[str]] = [[] for _ in range(n)]
        conf: list[list[float]] = [[] for _ in range(n)]
        probs: list[dict[str, float]] = [{} for _ in range(n)]
        for d, nodes in enumerate(self.levels_):
            lo, hi = int(self.offsets_[d]), int(self.offsets_[d + 1])
            parent = self.parents_[d]
            z = Z[:, lo:hi]
            # Softmax within each group of siblings: a node's probability given its parent.
            e = np.exp(z - z.max(axis=1, keepdims=True))
            groups = np.maximum(parent, 0)
            sums = np.zeros((int(groups.max()) + 1, n))
            np.add.at(sums, groups, e.T)
            cond = e / np.maximum(sums[groups].T, 1e-300)
            on_path[:, lo:hi] = cond * (on_path[:, self.offsets_[d - 1] + groups] if d else 1.0)
            mask = parent[None, :] == cur[:, None]
            live &= mask.any(axis=1)  # a node with no children seen: the path ends there
            masked = np.where(mask, cond, -1.0)
            best = masked.argmax(axis=1)
            nxt = np.full(n, -1, dtype=np.int64)
            for i in np.flatnonzero(live):
                p = float(masked[i, best[i]])
                conf[i].append(round(p, 4))
                if d and p < self.threshold:
                    live[i] = False  # unsure: stop at the parent, as the judges' descent does
                    continue
                nxt[i] = best[i]
                paths[i] = list(nodes[best[i]])
                probs[i] = {nodes[k][-1]: round(float(cond[i, k]), 4) for k in np.flatnonzero(mask[i])}
            cur = nxt
        return paths, conf, probs, on_path

    def inconsistency(self) -> str | None:
        """Why a loaded model's parts do not fit together (a crafted file), or None: the levels, their offsets
        into the stacked coefficients and each node's parent index must agree."""
        try:
            levels, parents, offsets = self.levels_, self.parents_, np.asarray(self.offsets_)
            sizes = [len(lv) for lv in levels]
            if not sizes or len(parents) != len(sizes) or offsets.tolist() != np.cumsum([0, *sizes]).tolist():
                return "its levels and their offsets do not agree"
            if self.coef_.shape[0] != offsets[-1] or self.intercept_.shape != (offsets[-1],):
                return f"{offsets[-1]} nodes but coefficients of shape {self.coef_.shape}"
            if len(self.classes_) != offsets[-1]:
                return f"{offsets[-1]} nodes but {len(self.classes_)} classes"
            for d, (n, par) in enumerate(zip(sizes, parents)):
                above = sizes[d - 1] if d else 1
                if np.asarray(par).shape != (n,) or (d and ((par < 0) | (par >= above)).any()):
                    return f"level {d + 1}'s parent indices do not fit the level above"
        except (AttributeError, TypeError, ValueError) as e:
            return f"its levels are not a taxonomy student's ({type(e).__name__})"
        return None

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, len(classes_)): each node's probability of being on the row's path (the product of the
        probabilities given the parent down to it), whatever the threshold."""
        check_is_fitted(self)
        return self._walk(self._featurize(X, fit=False))[3]

    def predict(self, X: Any) -> np.ndarray:
        """Each row's path as a tuple of node names (an object array), stopped at the parent where unsure."""
        check_is_fitted(self)
        paths = self._walk(self._featurize(X, fit=False))[0]
        out = np.empty(len(paths), dtype=object)
        out[:] = [tuple(p) for p in paths]
        return out

    def predict_paths(self, X: Any) -> list[dict[str, Any]]:
        """Each row's outcome as a taxonomy job's record writes it: label (the deepest node), path, depth,
        level_confidence (each level reached or refused), confidence (the product over the levels taken)
        and probs (among the siblings of the deepest node taken)."""
        check_is_fitted(self)
        paths, conf, probs, _ = self._walk(self._featurize(X, fit=False))
        out = []
        for path, c, p in zip(paths, conf, probs):
            out.append(
                {
                    "label": path[-1] if path else None,
                    "confidence": round(math.prod(c[: len(path)]), 4) if path else None,
                    "probs": p,
                    "path": path,
                    "depth": len(path),
                    "level_confidence": c,
                }
            )
        return out

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Exact-path accuracy against the paths ``y``."""
        pred = self.predict(X)
        hit = np.array([tuple(p) == tuple(str(x) for x in t) for p, t in zip(pred, y)], dtype=np.float64)
        return float(np.average(hit, weights=sample_weight))


def _level_weight(level_weight: Any, i: int, d: int) -> float:
    """Row i's weight for level d (1-based): its d-th entry, 1 where none is given."""
    if level_weight is None:
        return 1.0
    ws = level_weight[i]
    if not isinstance(ws, (list, tuple, np.ndarray)) or len(ws) < d:
        return 1.0
    v = ws[d - 1]
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 else 1.0
