"""Training students from multi-label and taxonomy outputs of ``llmlabel label`` (called by
:func:`llmlabel.distill.training.train_from_labeled` when the rows say which kind they are), and how held-out
rows score them against the teacher: micro/macro-F1 (evaluation.multilabel.set_scores) and per-level accuracy
(evaluation.taxonomy.score_paths), the same figures `llmlabel eval` reports against gold."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.base import clone

from llmlabel.distill.labelsets import MultiLabelDistiller, TaxonomyDistiller
from llmlabel.errors import InputError
from llmlabel.evaluation.multilabel import set_scores
from llmlabel.evaluation.taxonomy import score_paths
from llmlabel.io.records import column
from llmlabel.results import RowResult

Kind = Literal["label", "multi_label", "taxonomy"]


def output_kind(rows: list[RowResult], path: str) -> Kind:
    """Which kind of labeling wrote the rows; one line naming a row of another kind when they are mixed."""
    kinds: dict[Kind, int] = {}
    for n, r in enumerate(rows, 1):
        if r.error:
            continue
        k: Kind = "taxonomy" if r.path is not None else "multi_label" if r.labels is not None else "label"
        kinds.setdefault(k, n)
    if len(kinds) > 1:
        (a, na), (b, nb) = sorted(kinds.items(), key=lambda kv: kv[1])[:2]
        raise InputError(
            f"{path}: row {na} is a {a.replace('_', '-')} row but row {nb} a {b.replace('_', '-')} row; "
            "distill one labeling's output at a time"
        )
    return next(iter(kinds), "label")


def train_sets(
    rows: list[RowResult],
    kind: Kind,
    features: str,
    weight_by_confidence: bool,
    text_column: str,
    cv: bool,
    **params: Any,
) -> tuple[MultiLabelDistiller | TaxonomyDistiller, dict[str, Any]]:
    """(model, card fields) for a multi-label or taxonomy output's rows (already read and decoded)."""
    texts: list[str] = []
    targets: list[list[str]] = []
    soft: list[Any] = []
    for r in rows:
        text = column(r, text_column)
        if r.error or not isinstance(text, str):
            continue
        got = r.labels if kind == "multi_label" else r.path
        if got is None or (kind == "taxonomy" and not got):
            continue
        texts.append(text)
        targets.append(list(got))
        soft.append(r.probs if kind == "multi_label" else r.level_confidence)
    if not texts:
        raise ValueError("no usable rows (all have errors or no label set / path)")
    card: dict[str, Any] = {"rows_used": len(texts), "rows_skipped": len(rows) - len(texts)}
    model: MultiLabelDistiller | TaxonomyDistiller
    if kind == "multi_label":
        # A row the teacher left empty means the task allowed it: the student may leave rows empty too.
        params.setdefault("allow_empty", any(not t for t in targets))
        model = MultiLabelDistiller(features=features, **params)
        probs = soft if weight_by_confidence else None
        model.fit(texts, targets, probs=probs)
        T = _sets_matrix(targets, model.classes_)
        card["labels"] = [str(c) for c in model.classes_]
        card["thresholds"] = {str(c): round(float(t), 4) for c, t in zip(model.classes_, model.thresholds_)}
        card["allow_empty"] = model.allow_empty
        card["teacher_agreement"] = set_scores(T, model.predict(texts))
        card["heldout_vs_teacher"] = cv_sets(model, texts, targets, probs) if cv else None
    else:
        model = TaxonomyDistiller(features=features, **params)
        lw = soft if weight_by_confidence else None
        model.fit(texts, targets, level_weight=lw)
        card["labels"] = [str(c) for c in model.classes_]
        card["depth"] = len(model.levels_)
        card["threshold"] = model.threshold
        card["rows_per_level"] = [sum(len(t) >= d for t in targets) for d in range(1, len(model.levels_) + 1)]
        pred = [list(p) for p in model.predict(texts)]
        card["teacher_agreement"] = _levels_only(score_paths(list(zip(pred, targets))))
        card["heldout_vs_teacher"] = cv_paths(model, texts, targets, lw) if cv else None
    card["n_features"] = int(model.coef_.shape[1])
    return model, card


def _sets_matrix(sets: list[list[str]], classes: np.ndarray) -> np.ndarray:
    index = {str(c): k for k, c in enumerate(classes)}
    T = np.zeros((len(sets), len(classes)), dtype=bool)
    for i, s in enumerate(sets):
        for lab in s:
            if lab in index:
                T[i, index[lab]] = True
    return T


def _folds(n: int, folds: int, max_rows: int, seed: int) -> list[np.ndarray] | None:
    if n < 3 * folds:
        return None
    idx = np.random.default_rng(seed).permutation(n)[:max_rows]
    return np.array_split(idx, folds)


def cv_sets(
    model: MultiLabelDistiller,
    texts: list[str],
    sets: list[list[str]],
    probs: list[Any] | None,
    folds: int = 3,
    max_rows: int = 5000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """k-fold: each fold's rows held out of a fit on the others (its thresholds tuned inside that fit) and
    its predicted sets scored against the teacher's; the folds pooled (at most max_rows rows)."""
    parts = _folds(len(texts), folds, max_rows, seed)
    if parts is None:
        return None
    truth, pred = [], []
    for f in range(folds):
        tr = np.concatenate([parts[g] for g in range(folds) if g != f])
        m = clone(model).fit(
            [texts[i] for i in tr], [sets[i] for i in tr], probs=None if probs is None else [probs[i] for i in tr]
        )
        te = parts[f]
        truth.append(_sets_matrix([sets[i] for i in te], model.classes_))
        pred.append(_sets_matrix(m.predict_sets([texts[i] for i in te]), model.classes_))
    n = sum(len(p) for p in parts)
    return {"rows": n, "folds": folds, **set_scores(np.vstack(truth), np.vstack(pred))}


def cv_paths(
    model: TaxonomyDistiller,
    texts: list[str],
    paths: list[list[str]],
    level_weight: list[Any] | None,
    folds: int = 3,
    max_rows: int = 5000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """k-fold per-level accuracy (and coverage, precision, hierarchical F1) of the student's paths against
    the teacher's, on rows held out of each fit."""
    parts = _folds(len(texts), folds, max_rows, seed)
    if parts is None:
        return None
    pairs: list[tuple[list[str], list[str]]] = []
    for f in range(folds):
        tr = np.concatenate([parts[g] for g in range(folds) if g != f])
        m = clone(model).fit(
            [texts[i] for i in tr],
            [paths[i] for i in tr],
            level_weight=None if level_weight is None else [level_weight[i] for i in tr],
        )
        te = parts[f]
        pairs += [(list(p), paths[i]) for p, i in zip(m.predict([texts[i] for i in te]), te)]
    return {"rows": len(pairs), "folds": folds, **score_paths(pairs)}


def _levels_only(rep: dict[str, Any]) -> dict[str, Any]:
    return {"levels": rep["levels"], "exact_path_accuracy": rep["exact_path_accuracy"]}


def set_record(model: MultiLabelDistiller, p: np.ndarray, kept: np.ndarray) -> dict[str, Any]:
    """A multi-label prediction's fields as `llmlabel label` writes them (ensemble.multilabel.verdict)."""
    from llmlabel.ensemble.multilabel import verdict

    probs = {str(c): float(v) for c, v in zip(model.classes_, p)}
    order = sorted(np.flatnonzero(kept).tolist(), key=lambda k: -p[k])
    v = verdict(probs, [str(model.classes_[k]) for k in order])
    return {"label": v.label, "labels": list(v.labels or ()), "confidence": v.confidence, "probs": v.probs}
