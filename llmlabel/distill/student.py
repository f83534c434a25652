"""Distill LLM-ensemble labels into a small text classifier, with scikit-learn's conventions.

``CandidateDistiller().fit(X, y, candidates=...)``: ``X`` are texts, ``y`` the teacher's single
labels (``None`` where it gave none), and the keyword ``candidates`` the teacher's candidate label
sets. With candidates it learns through CanDist's distribution refinery
(:mod:`llmlabel.distill.refinery`); without, it is an ordinary weighted classifier on ``y``. It is
cloneable and works in ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``; pass
``features=None`` to take an earlier pipeline step's feature matrix (dense or sparse) instead of texts.

With ``features=None`` it passes scikit-learn's estimator checks (``check_estimator``): validated numeric
input, ``n_features_in_``, ``NotFittedError``, ``sample_weight``, labels of any dtype kept in ``classes_``.
With a featurizer its input is a 1-D sequence of strings, as its tags say (``input_tags.string``, no 2-D
array), like scikit-learn's own text vectorizers.

Training from ``llmlabel label`` output, saving and streaming predictions live in
:mod:`llmlabel.distill.training`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from llmlabel.distill.features import make_featurizer
from llmlabel.distill.refinery import POLISH_ITER, RefineryMixin

__all__ = ["CandidateDistiller"]


class CandidateDistiller(RefineryMixin, ClassifierMixin, BaseEstimator):
    """Text classifier trained from single labels and/or candidate label sets.

    Parameters
    ----------
    features: featurizer kind for :func:`llmlabel.distill.features.make_featurizer`, a transformer
        (cloned at fit), or None when ``X`` is already a feature matrix (e.g. in a ``Pipeline``).
    C, max_iter: LogisticRegression (lbfgs, multinomial) regularization and iteration cap.
    max_rounds: refinement rounds after the initial uniform-target fit.
    temperature: sharpening of refined targets, ``p ** (1 / temperature)``.
    select_frac: per class (by refined label), the fraction of lowest-loss rows deemed reliable.
    unreliable_weight: weight multiplier of the rows not selected as reliable.
    outside_threshold: a row whose best non-candidate label gets more student probability than
        this is "outside" its candidates.
    outside: what to do with such rows: ``"relabel"`` (student's label, ``outside_weight``),
        ``"drop"``, or ``"keep"`` (refine within candidates like any row).
    holdout: fraction of rows held out to choose the round (0 disables).
    select_round: how held-out rows choose the round: ``"teacher"``, agreement with the teacher's
        single label first (falls back to the in-set rate without one), or ``"in_set"``, the rate
        of predictions inside the candidate set (CanDist's criterion; it rewards predicting the
        label a small judge puts in every set).
    patience: rounds without held-out improvement before stopping.
    refit: after choosing the round, refit once on all rows (held-out included).
    max_refine_rows: refinement rounds fit on a random sample of at most this many training
        rows (targets are still refreshed for every row); the final fit always uses all rows.
        Keeps 100k-row fits within a minute.
    """

    def __init__(
        self,
        features: Any = "tfidf",
        C: float = 10.0,
        max_iter: int = 300,
        max_rounds: int = 8,
        temperature: float = 0.5,
        select_frac: float = 0.5,
        unreliable_weight: float = 0.5,
        outside_threshold: float = 0.9,
        outside: Literal["relabel", "drop", "keep"] = "relabel",
        outside_weight: float = 0.3,
        holdout: float = 0.1,
        select_round: Literal["teacher", "in_set"] = "teacher",
        patience: int = 2,
        refit: bool = True,
        max_refine_rows: int = 20000,
        random_state: int = 0,
    ) -> None:
        self.features = features
        self.C = C
        self.max_iter = max_iter
        self.max_rounds = max_rounds
        self.temperature = temperature
        self.select_frac = select_frac
        self.unreliable_weight = unreliable_weight
        self.outside_threshold = outside_threshold
        self.outside = outside
        self.outside_weight = outside_weight
        self.holdout = holdout
        self.select_round = select_round
        self.patience = patience
        self.refit = refit
        self.max_refine_rows = max_refine_rows
        self.random_state = random_state

    def fit(
        self,
        X: Any,
        y: Any = None,  # array-like of labels (None where the teacher gave none)
        *,
        candidates: Sequence[Sequence[str]] | None = None,
        sample_weight: Sequence[float] | np.ndarray | None = None,
    ) -> CandidateDistiller:
        """Fit on texts ``X`` with single labels ``y`` and/or candidate sets ``candidates``.

        With candidates, ``y`` (optional) is the teacher's single label per row: always counted as
        a candidate and used to choose the refinery's round. Without, rows whose ``y`` is None are
        skipped."""
        if self.features is None:
            X = validate_data(self, X, accept_sparse="csr", reset=True)
        n = _num_rows(X)
        if y is not None and not isinstance(y, (list, tuple)):
            ya = np.asarray(y)  # a Series, an array-like
            # A column vector, as scikit-learn accepts it (with a warning).
            y = column_or_1d(ya, warn=True) if ya.ndim == 2 and ya.shape[1] == 1 else ya
        ys = _labels(y, n)
        if candidates is None and ys is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None "
                "(give labels y, or candidate sets as candidates=)"
            )
        if candidates is not None and len(candidates) != n:
            raise ValueError(f"X has {n} rows but candidates has {len(candidates)}")
        self.classes_ = _classes(y, ys, candidates)
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        if sample_weight is None:
            w = np.ones(n)
        else:
            w = np.array(sample_weight, dtype=np.float64)  # a copy: the caller's array is never changed
            if w.shape != (n,):
                raise ValueError(f"X has {n} rows but sample_weight has shape {w.shape}")
            if not np.isfinite(w).all() or (w < 0).any():
                raise ValueError("sample_weight must be finite and non-negative")
            if not w.any():
                raise ValueError("sample_weight is zero for every row: nothing to learn from")
        yi = None if ys is None else np.array([-1 if v is None else index[v] for v in ys], dtype=np.int64)

        self.featurizer_ = self._new_featurizer()
        F = self._featurize(X, fit=True)
        self.history_ = []
        if candidates is None:
            assert yi is not None
            self.mode_ = "single"
            self.clf_ = self._fit_single(F, yi, w)
        else:
            self.mode_ = "candidates"
            M = _candidate_matrix(candidates, index, yi)
            self.clf_ = self._refinery(F, M, w * M.any(axis=1), yi)
        self.n_iter_ = int(np.max(getattr(self.clf_, "n_iter_", 0)))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self._proba(self.clf_, self._featurize(X, fit=False))

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        if self.features is None:  # a feature matrix from an earlier step: dense or sparse numbers
            tags.input_tags.sparse = True
        else:  # texts: a 1-D sequence of strings, like scikit-learn's text vectorizers take
            tags.input_tags.two_d_array = False
            tags.input_tags.string = True
        return tags

    def _new_featurizer(self) -> Any:
        if self.features is None:
            return None
        return make_featurizer(self.features) if isinstance(self.features, str) else clone(self.features)

    def _featurize(self, X: Any, fit: bool) -> Any:
        if self.featurizer_ is None:  # X is already a feature matrix
            return X if fit else validate_data(self, X, accept_sparse="csr", reset=False)
        texts = _texts(X)
        return self.featurizer_.fit_transform(texts) if fit else self.featurizer_.transform(texts)

    def _fit_single(self, F: Any, yi: np.ndarray, w: np.ndarray) -> Any:
        rows = np.flatnonzero(yi >= 0)
        init = None
        if rows.size > self.max_refine_rows:  # warm start from a sample: far fewer full passes
            sample = np.sort(np.random.default_rng(self.random_state).choice(rows, self.max_refine_rows, replace=False))
            init = self._fit_lr(F[sample], yi[sample], w[sample], None)
        # The caller's weights as they are (no rescaling): weight 2 is the same fit as the row given twice.
        return self._fit_lr(F[rows], yi[rows], w[rows], init, POLISH_ITER if init else None, rescale=False)


def _num_rows(X: Any) -> int:
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape is not None else len(X)


def _texts(X: Any) -> list[str]:
    """Texts from a list, array or Series of strings (a 2-D input means features=None was meant)."""
    if getattr(X, "ndim", 1) != 1:
        raise ValueError("X must be a 1-D sequence of texts; for a feature matrix pass features=None")
    out = list(X)
    bad = next((t for t in out if not isinstance(t, str)), None)
    if out and bad is not None:
        raise ValueError(f"X must hold texts, found {type(bad).__name__}; for a feature matrix pass features=None")
    return out


def _labels(y: Any, n: int) -> list[str | None] | None:
    """``y`` as a list of labels or None; catches the pre-scikit-learn call ``fit(texts, candidates)``."""
    if y is None:
        return None
    ys = list(y)
    if len(ys) != n:
        raise ValueError(f"X has {n} rows but y has {len(ys)}")
    for v in ys:
        if isinstance(v, (list, tuple, set, np.ndarray)):
            raise TypeError("y holds label lists; pass candidate sets as the keyword candidates=")
    out = [None if v is None or (isinstance(v, float) and v != v) else v for v in ys]
    return None if all(v is None for v in out) and n else out


def _classes(y: Any, ys: list[Any] | None, candidates: Sequence[Sequence[str]] | None) -> np.ndarray:
    """The sorted labels, in y's dtype (integer labels stay integers, so that ``score()`` compares like with
    like); a float y must hold class labels, not a continuous target."""
    labels = sorted(_label_set(ys, candidates))
    if ys is not None and None not in ys:
        check_classification_targets(y)
    out = np.asarray(labels)
    dtype = getattr(y, "dtype", None)
    if dtype is not None and dtype.kind in "biuf" and out.dtype.kind in "biuf":
        out = out.astype(dtype)
    return out


def _label_set(ys: list[str | None] | None, candidates: Sequence[Sequence[str]] | None) -> set[str]:
    labels: set[str] = {v for v in ys or [] if v is not None}
    for c in candidates or []:
        if isinstance(c, str):
            raise TypeError("candidates must be a list of label lists, one per row")
        labels.update(c)
    if not labels:
        raise ValueError("no labels to learn from")
    return labels


def _candidate_matrix(candidates: Sequence[Sequence[str]], index: dict[str, int], yi: np.ndarray | None) -> np.ndarray:
    """Rows x classes boolean matrix, built from one flat pass over the lists; the teacher's single
    label is always a candidate."""
    n = len(candidates)
    lens = np.fromiter((len(c) for c in candidates), dtype=np.int64, count=n)
    flat = np.fromiter((index[l] for c in candidates for l in c), dtype=np.int64, count=int(lens.sum()))
    M = np.zeros((n, len(index)), dtype=bool)
    M[np.repeat(np.arange(n), lens), flat] = True
    if yi is not None:
        has = yi >= 0
        M[np.flatnonzero(has), yi[has]] = True
    return M
