"""Distill LLM-ensemble labels into a small text classifier.

``CandidateDistiller`` learns from candidate label sets with CanDist's distribution refinery
("Prompt Candidates, then Distill", ACL 2025): targets start uniform over each row's candidates;
each round fits a multinomial logistic regression on (row, candidate) pairs weighted by target
mass, then re-targets every row to the student's own probabilities renormalized inside its
candidate set and sharpened; low-loss rows per class count more, and rows whose candidates the
student confidently rejects are handled apart. A held-out slice of the training rows, scored
against the teacher (no gold exists), picks the round to keep. With single labels it is an
ordinary weighted classifier.

CLI helpers: :func:`train_from_labeled`, :func:`save_model`, :func:`load_model`,
:func:`predict_rows`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import joblib
import numpy as np
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from llmlabel.distill.features import make_featurizer

__all__ = [
    "CandidateDistiller",
    "train_from_labeled",
    "read_labeled",
    "save_model",
    "load_model",
    "predict_rows",
    "cross_val_teacher_accuracy",
]

Mode = Literal["candidates", "single"]
_POLISH_ITER = 40  # lbfgs cap for the full-data fit warm-started from a sample fit


class CandidateDistiller(ClassifierMixin, BaseEstimator):
    """Text classifier trained from candidate label sets (or single labels).

    Parameters
    ----------
    features: featurizer kind for :func:`llmlabel.distill.features.make_featurizer`, or a transformer.
    C, max_iter: LogisticRegression (lbfgs, multinomial) regularization and iteration cap.
    max_rounds: refinement rounds after the initial uniform-target fit.
    temperature: sharpening of refined targets, ``p ** (1 / temperature)``.
    select_frac: per class (by refined label), the fraction of lowest-loss rows deemed reliable.
    unreliable_weight: weight multiplier of the rows not selected as reliable.
    outside_threshold: a row whose best non-candidate label gets more student probability than
        this is "outside" its candidates.
    outside: what to do with such rows: ``"relabel"`` (student's label, ``outside_weight``),
        ``"drop"``, or ``"keep"`` (refine within candidates like any row).
    holdout: fraction of rows held out to score rounds against the teacher (0 disables).
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
        self.patience = patience
        self.refit = refit
        self.max_refine_rows = max_refine_rows
        self.random_state = random_state

    # -- public API ------------------------------------------------------------------------------

    def fit(
        self,
        texts: Sequence[str],
        candidates: Sequence[Sequence[str]] | None = None,
        y: Sequence[str | None] | None = None,
        sample_weight: Sequence[float] | np.ndarray | None = None,
    ) -> CandidateDistiller:
        """Fit on candidate sets (``candidates``, optionally with the teacher's ``y`` for scoring
        held-out rounds) or, without candidates, on single labels ``y``."""
        if candidates is None and y is None:
            raise ValueError("fit needs candidates or y")
        n = len(texts)
        if candidates is not None and len(candidates) != n or y is not None and len(y) != n:
            raise ValueError("texts, candidates and y must have the same length")
        labels: set[str] = set()
        if candidates is not None:
            for c in candidates:
                labels.update(c)
        if y is not None:
            labels.update(v for v in y if v is not None)
        if not labels:
            raise ValueError("no labels to learn from")
        self.classes_ = np.array(sorted(labels), dtype=object)
        index = {c: i for i, c in enumerate(self.classes_)}
        K = len(self.classes_)
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        yi = None if y is None else np.array([-1 if v is None else index[v] for v in y], dtype=np.int64)

        self.featurizer_ = make_featurizer(self.features) if isinstance(self.features, str) else clone(self.features)
        X = self.featurizer_.fit_transform(list(texts))
        self.history_: list[dict[str, Any]] = []
        if candidates is None:
            assert yi is not None
            ok = yi >= 0
            self.mode_ = "single"
            rows = np.flatnonzero(ok)
            init = None
            if rows.size > self.max_refine_rows:  # warm start from a sample: far fewer full passes
                sample = np.sort(
                    np.random.default_rng(self.random_state).choice(rows, self.max_refine_rows, replace=False)
                )
                init = self._fit_lr(X[sample], yi[sample], w[sample], None)
            self.clf_ = self._fit_lr(X[rows], yi[rows], w[rows], init, _POLISH_ITER if init else None)
            return self

        self.mode_ = "candidates"
        # Candidate matrix (rows x classes), built from one flat pass over the lists.
        lens = np.fromiter((len(c) for c in candidates), dtype=np.int64, count=n)
        flat = np.fromiter((index[l] for c in candidates for l in c), dtype=np.int64, count=int(lens.sum()))
        M = np.zeros((n, K), dtype=bool)
        M[np.repeat(np.arange(n), lens), flat] = True
        if yi is not None:  # the teacher's single label is always a candidate
            has = yi >= 0
            M[np.flatnonzero(has), yi[has]] = True
        usable = M.any(axis=1)
        self.clf_ = self._refinery(X, M, w * usable, yi)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self._proba(self.clf_, self.featurizer_.transform(list(texts)))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.classes_[self.predict_proba(texts).argmax(axis=1)]

    # -- internals -------------------------------------------------------------------------------

    def _fit_lr(
        self,
        X: Any,
        y: np.ndarray,
        w: np.ndarray,
        init: LogisticRegression | None,
        max_iter: int | None = None,
    ) -> LogisticRegression:
        keep = w > 0
        X, y, w = X[keep], y[keep], w[keep]
        lr = LogisticRegression(C=self.C, max_iter=max_iter or self.max_iter, tol=1e-3, solver="lbfgs")
        present = np.unique(y)
        if init is not None and np.array_equal(init.classes_, present):
            # Warm start from the previous round: later rounds move little, so they converge fast.
            lr.set_params(warm_start=True)
            lr.coef_, lr.intercept_ = init.coef_.copy(), init.intercept_.copy()
        if present.size == 1:  # degenerate: one class left, a constant model
            lr.classes_, lr.coef_ = present, np.zeros((1, X.shape[1]))
            lr.intercept_ = np.zeros(1)
            return lr
        with warnings.catch_warnings():  # capped warm-started polishing fits may stop early on purpose
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr.fit(X, y, sample_weight=w * (len(w) / w.sum()))  # mean weight 1 keeps C comparable
        return lr

    def _proba(self, lr: LogisticRegression, X: Any) -> np.ndarray:
        K = len(self.classes_)
        if len(lr.classes_) == 1:
            P = np.zeros((X.shape[0], K))
            P[:, lr.classes_[0]] = 1.0
            return P
        p = lr.predict_proba(X)
        if p.shape[1] == K:
            return p
        P = np.zeros((X.shape[0], K))
        P[:, lr.classes_] = p
        return P

    def _fit_targets(
        self,
        X: Any,
        T: np.ndarray,
        w: np.ndarray,
        rows: np.ndarray,
        init: Any,
        max_iter: int | None = None,
    ) -> LogisticRegression:
        """Fit on expanded (row, class) pairs weighted by target mass x row weight."""
        Tr = T[rows]
        r, k = np.nonzero(Tr > 1e-3)
        return self._fit_lr(X[rows[r]], k, Tr[r, k] * w[rows[r]], init, max_iter)

    def _score(self, P: np.ndarray, M: np.ndarray, yi: np.ndarray | None, rows: np.ndarray) -> tuple[float, ...]:
        """Held-out agreement with the teacher: argmax inside the candidates, then agreement
        with the teacher's single label, then the partial-label log-likelihood."""
        if rows.size == 0:
            return (0.0,)
        Ph, Mh = P[rows], M[rows]
        pred = Ph.argmax(axis=1)
        in_set = float(Mh[np.arange(rows.size), pred].mean())
        ll = float(np.log(np.clip((Ph * Mh).sum(axis=1), 1e-12, None)).mean())
        agree = 0.0
        if yi is not None and (yi[rows] >= 0).any():
            yh = yi[rows]
            agree = float((pred[yh >= 0] == yh[yh >= 0]).mean())
        return (round(in_set, 3), round(agree, 3), ll)

    def _refinery(self, X: Any, M: np.ndarray, w: np.ndarray, yi: np.ndarray | None) -> LogisticRegression:
        n, K = M.shape
        rng = np.random.default_rng(self.random_state)
        live = np.flatnonzero(w > 0)
        n_hold = int(round(self.holdout * live.size)) if live.size >= 50 else 0
        perm = rng.permutation(live)
        hold, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
        sub = train.size > self.max_refine_rows
        if sub:
            train = np.sort(rng.choice(train, self.max_refine_rows, replace=False))

        T = M / np.maximum(M.sum(axis=1, keepdims=True), 1)  # uniform over candidates
        rw = w.copy()  # per-round row weights (reliability, outside handling)
        model = self._fit_targets(X, T, rw, train, None)
        P = self._proba(model, X)
        best = (self._score(P, M, yi, hold), 0, model, T, rw)
        self.history_ = [{"round": 0, "score": best[0]}]
        stale = 0
        for rnd in range(1, self.max_rounds + 1):
            T, rw, info = self._refine(P, M, w)
            model = self._fit_targets(X, T, rw, train, model)
            P = self._proba(model, X)
            score = self._score(P, M, yi, hold)
            self.history_.append({"round": rnd, "score": score, **info})
            if score > best[0]:
                best, stale = (score, rnd, model, T, rw), 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        self.best_round_ = best[1]
        self.holdout_score_ = best[0]
        model, T, rw = best[2], best[3], best[4]
        if (self.refit and n_hold) or sub:
            # Warm-started from the chosen round; on large data a capped polish is enough.
            model = self._fit_targets(X, T, rw, live, model, _POLISH_ITER if sub else None)
        return model

    def _refine(self, P: np.ndarray, M: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """New targets and row weights from the student's probabilities P (all vectorized)."""
        n, K = M.shape
        Q = P * M
        mass = Q.sum(axis=1)
        T = Q / np.maximum(mass, 1e-12)[:, None]
        T = T ** (1.0 / self.temperature)  # sharpen toward the student's favourite candidate
        T /= np.maximum(T.sum(axis=1, keepdims=True), 1e-12)
        rw = w.copy()

        # Small-loss selection, class-balanced: within each refined class, the lowest
        # partial-label losses (-log mass inside the candidates) are the reliable rows.
        loss = -np.log(np.maximum(mass, 1e-12))
        cls = T.argmax(axis=1)
        live = w > 0
        order = np.lexsort((loss, cls))
        order = order[live[order]]
        cls_sorted = cls[order]
        starts = np.searchsorted(cls_sorted, np.arange(K))
        sizes = np.bincount(cls_sorted, minlength=K)
        rank = np.arange(order.size) - starts[cls_sorted]
        reliable = np.zeros(n, dtype=bool)
        reliable[order[rank < np.ceil(self.select_frac * sizes[cls_sorted])]] = True
        rw[~reliable] *= self.unreliable_weight

        # Rows whose candidates the student confidently rejects.
        out_p = np.where(M, 0.0, P)
        outside = live & (out_p.max(axis=1) > self.outside_threshold)
        if self.outside == "relabel":
            T[outside] = 0.0
            T[np.flatnonzero(outside), out_p[outside].argmax(axis=1)] = 1.0
            rw[outside] = w[outside] * self.outside_weight
        elif self.outside == "drop":
            rw[outside] = 0.0
        elif self.outside != "keep":
            raise ValueError(f"outside must be relabel, drop or keep, not {self.outside!r}")
        return T, rw, {"outside": int(outside.sum()), "reliable": int(reliable.sum())}


# -- CLI helpers ---------------------------------------------------------------------------------


def read_labeled(path: str, text_column: str = "text") -> list[dict[str, Any]]:
    """Rows of ``llmlabel label`` output: JSONL, CSV (candidates as a JSON string) or Parquet."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif ext == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        for r in rows:  # CSV has no nulls or lists: decode them
            for k in ("label", "error", "confidence", "candidates"):
                if r.get(k) in ("", None):
                    r[k] = None
            if isinstance(r.get("candidates"), str):
                r["candidates"] = json.loads(r["candidates"])
            if r.get("confidence") is not None:
                r["confidence"] = float(r["confidence"])
    else:
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    if rows and text_column not in rows[0]:
        raise KeyError(f"{path}: no text column {text_column!r} (columns: {', '.join(rows[0])})")
    return rows


def _usable(
    rows: Iterable[dict[str, Any]], mode: Mode, text_column: str
) -> tuple[list[str], list[list[str]], list[str | None], np.ndarray]:
    texts: list[str] = []
    cands: list[list[str]] = []
    labels: list[str | None] = []
    conf: list[float] = []
    for r in rows:
        if r.get("error") or not isinstance(r.get(text_column), str):
            continue
        label = r.get("label")
        c = [x for x in (r.get("candidates") or []) if isinstance(x, str)]
        if label is not None and label not in c:
            c.append(label)
        if (mode == "single" and label is None) or not c:
            continue
        texts.append(r[text_column])
        cands.append(c)
        labels.append(label)
        cf = r.get("confidence")
        conf.append(float(cf) if isinstance(cf, (int, float)) and math.isfinite(cf) else math.nan)
    cw = np.asarray(conf, dtype=np.float64)
    cw = np.where(np.isnan(cw), np.nanmean(cw) if np.isfinite(cw).any() else 1.0, cw)
    return texts, cands, labels, cw


def cross_val_teacher_accuracy(
    model: CandidateDistiller,
    texts: list[str],
    cands: list[list[str]],
    labels: list[str | None],
    sample_weight: np.ndarray | None,
    folds: int = 3,
    max_rows: int = 5000,
    seed: int = 0,
) -> float | None:
    """k-fold accuracy against the teacher's single label, on a sample of at most max_rows."""
    idx = np.array([i for i, l in enumerate(labels) if l is not None])
    if idx.size < 3 * folds:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.permutation(idx)[:max_rows]
    parts = np.array_split(idx, folds)
    hits = 0
    for f in range(folds):
        tr = np.concatenate([parts[g] for g in range(folds) if g != f])
        m = clone(model)
        sw = None if sample_weight is None else sample_weight[tr]
        t = [texts[i] for i in tr]
        if model.mode_ == "single":
            m.fit(t, y=[labels[i] for i in tr], sample_weight=sw)
        else:
            m.fit(t, candidates=[cands[i] for i in tr], y=[labels[i] for i in tr], sample_weight=sw)
        pred = m.predict([texts[i] for i in parts[f]])
        hits += int(np.sum(pred == np.array([labels[i] for i in parts[f]], dtype=object)))
    return hits / idx.size


def train_from_labeled(
    path: str,
    mode: Mode = "candidates",
    features: str = "tfidf",
    weight_by_confidence: bool = False,
    text_column: str = "text",
    cv: bool = True,
    **params: Any,
) -> tuple[CandidateDistiller, dict[str, Any]]:
    """Train a student on ``llmlabel label`` output; returns (model, model card)."""
    if mode not in ("candidates", "single"):
        raise ValueError("mode must be 'candidates' or 'single'")
    rows = read_labeled(path, text_column)
    texts, cands, labels, conf = _usable(rows, mode, text_column)
    if not texts:
        raise ValueError(f"{path}: no usable rows (all have errors or no label/candidates)")
    sw = np.clip(conf, 0.05, 1.0) if weight_by_confidence else None
    model = CandidateDistiller(features=features, **params)
    t0 = time.perf_counter()
    if mode == "single":
        model.fit(texts, y=labels, sample_weight=sw)
    else:
        model.fit(texts, candidates=cands, y=labels, sample_weight=sw)
    seconds = time.perf_counter() - t0
    pred = model.predict(texts)
    lab = np.array(labels, dtype=object)
    has = lab != None  # noqa: E711 - elementwise on an object array
    in_set = np.fromiter((p in c for p, c in zip(pred, cands)), dtype=bool, count=len(cands))
    card: dict[str, Any] = {
        "labels": [str(c) for c in model.classes_],
        "rows_used": len(texts),
        "rows_skipped": len(rows) - len(texts),
        "mode": mode,
        "features": features,
        "weight_by_confidence": weight_by_confidence,
        "teacher_agreement": float(np.mean(pred[has] == lab[has])) if has.any() else None,
        "candidate_coverage": float(in_set.mean()),
        "cv_accuracy_vs_teacher": cross_val_teacher_accuracy(model, texts, cands, labels, sw) if cv else None,
        "training_seconds": round(seconds, 3),
        "sklearn_version": sklearn.__version__,
        "params": {k: v for k, v in model.get_params().items() if isinstance(v, (int, float, str, bool))},
        "source": os.path.abspath(path),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if mode == "candidates":
        card["refinery"] = {"best_round": model.best_round_, "rounds": model.history_}
    return model, card


def save_model(model: CandidateDistiller, card: dict[str, Any], path: str) -> None:
    """One joblib file (featurizer + classifier) and ``<path>.card.json`` beside it."""
    joblib.dump({"format": 1, "model": model, "card": card}, path, compress=3)
    with open(path + ".card.json", "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, default=str)


def load_model(path: str) -> CandidateDistiller:
    """The model saved by :func:`save_model`; its card is on ``model.card_``."""
    blob = joblib.load(path)
    model = blob["model"]
    model.card_ = blob.get("card", {})
    return model


def predict_rows(
    model: CandidateDistiller,
    rows: Iterable[dict[str, Any] | str],
    text_column: str = "text",
    id_column: str = "id",
    batch_size: int = 8192,
) -> Iterator[dict[str, Any]]:
    """Stream ``{"id", "label", "probs": {label: p}}`` for rows (dicts or plain strings),
    featurizing and predicting a batch at a time. Rows without an id get their index."""
    classes = [str(c) for c in model.classes_]
    batch: list[Any] = []
    start = 0

    def flush(batch: list[Any], start: int) -> Iterator[dict[str, Any]]:
        texts = [r if isinstance(r, str) else r.get(text_column, "") for r in batch]
        P = model.predict_proba(texts)
        best = P.argmax(axis=1).tolist()
        for i, (r, b, p) in enumerate(zip(batch, best, np.round(P, 4).tolist())):
            rid = r.get(id_column, start + i) if isinstance(r, dict) else start + i
            yield {"id": rid, "label": classes[b], "probs": dict(zip(classes, p))}

    for r in rows:
        batch.append(r)
        if len(batch) >= batch_size:
            yield from flush(batch, start)
            start += len(batch)
            batch = []
    if batch:
        yield from flush(batch, start)
