"""Students from ``llmlabel label`` output: read it, train (:func:`train_from_labeled`, with a
model card), save and load, and stream predictions (:func:`predict_rows`). Used by the CLI's
``distill`` and ``predict`` commands."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import numpy as np
import sklearn
from sklearn.base import clone

from llmlabel.distill.student import CandidateDistiller

__all__ = [
    "train_from_labeled",
    "read_labeled",
    "save_model",
    "load_model",
    "predict_rows",
    "cross_val_teacher_accuracy",
]

Mode = Literal["candidates", "single"]


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
    if sw is not None:
        sw = sw / sw.mean()  # mean weight 1: C means the same with and without confidence weights
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


# A model file is a skops archive (a zip of JSON and arrays, no pickle): loading it instantiates only types that
# llmlabel writes, checked before anything is built, so a crafted file cannot run code (a joblib file can).
MODEL_TYPES = frozenset(
    {
        "llmlabel.distill.student.CandidateDistiller",
        "llmlabel.distill.features.HashedNgramTfidf",
        "llmlabel.distill.features.MiniLMEmbedder",
        "llmlabel.distill.features.LocalLLMEmbedder",
    }
)


class NotAModel(ValueError):
    """The file is not a model written by `save_model`; nothing in it was run."""


def save_model(model: CandidateDistiller, card: dict[str, Any], path: str) -> None:
    """One skops file (featurizer + classifier), written atomically, and ``<path>.card.json`` beside it."""
    import skops.io as sio

    from llmlabel.io.files import atomic_path

    with atomic_path(path) as tmp:
        sio.dump({"format": 2, "model": model, "card": card}, str(tmp))
    with open(path + ".card.json", "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, default=str)


def load_model(path: str) -> CandidateDistiller:
    """The model saved by :func:`save_model`; its card is on ``model.card_``. Raises NotAModel for anything
    else, before any object in the file is created."""
    import zipfile

    import skops.io as sio

    if not zipfile.is_zipfile(path):
        raise NotAModel("not a skops archive (a pickle or joblib file is never loaded)")
    try:
        types = set(sio.get_untrusted_types(file=path))
    except Exception as e:  # a zip that is not a skops archive
        raise NotAModel(f"unreadable model archive ({type(e).__name__})") from None
    foreign = sorted(types - MODEL_TYPES)
    if foreign:
        raise NotAModel(f"it holds types llmlabel does not write: {', '.join(foreign[:3])}")
    blob = sio.load(path, trusted=sorted(types))
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), CandidateDistiller):
        raise NotAModel("no CandidateDistiller inside")
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
