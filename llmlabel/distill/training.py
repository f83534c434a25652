"""Students from ``llmlabel label`` output: read it, train (:func:`train_from_labeled`, with a
model card), save and load, and stream predictions (:func:`predict_rows`). Used by the CLI's
``distill`` and ``predict`` commands."""

from __future__ import annotations

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

from llmlabel.distill.labelsets import MultiLabelDistiller, TaxonomyDistiller
from llmlabel.distill.student import CandidateDistiller
from llmlabel.results import RowResult

__all__ = [
    "train_from_labeled",
    "read_labeled",
    "save_model",
    "load_model",
    "predict_rows",
    "cross_val_teacher_accuracy",
]

Mode = Literal["candidates", "single"]
Student = CandidateDistiller | MultiLabelDistiller | TaxonomyDistiller


def read_labeled(path: str, text_column: str = "text") -> list[RowResult]:
    """Rows of ``llmlabel label`` output (JSONL, CSV, Parquet) as results (io.records.read_results: CSV's text
    forms of lists and numbers decoded, a field that is not what `llmlabel label` writes one line naming the
    row), without their judges' answers (no student reads them)."""
    from llmlabel.io.records import read_results

    rows = list(read_results(path, advice="pass the output of `llmlabel label`", judges=False))
    if rows and text_column not in rows[0].inputs and text_column not in rows[0].extra:
        names = [*rows[0].inputs, "id", *rows[0].extra]
        raise KeyError(f"{path}: no text column {text_column!r} (columns: {', '.join(map(str, names))})")
    return rows


def _usable(
    rows: Iterable[RowResult], mode: Mode, text_column: str
) -> tuple[list[str], list[list[str]], list[str | None], np.ndarray]:
    from llmlabel.io.records import column

    texts: list[str] = []
    cands: list[list[str]] = []
    labels: list[str | None] = []
    conf: list[float] = []
    for r in rows:
        text = column(r, text_column)
        if r.error or not isinstance(text, str):
            continue
        label = r.label
        c = list(r.candidates)
        if label is not None and label not in c:
            c.append(label)
        if (mode == "single" and label is None) or not c:
            continue
        texts.append(text)
        cands.append(c)
        labels.append(label)
        cf = r.confidence
        conf.append(cf if cf is not None and math.isfinite(cf) else math.nan)
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
    mode: Mode | None = None,
    features: str = "tfidf",
    weight_by_confidence: bool = False,
    text_column: str = "text",
    cv: bool = True,
    **params: Any,
) -> tuple[CandidateDistiller, dict[str, Any]]:
    """Train a student on ``llmlabel label`` output; returns (model, model card). A multi-label output gets a
    MultiLabelDistiller and a taxonomy output a TaxonomyDistiller (`mode` is for single-label outputs: learn
    from candidate sets, the default, or from the single label)."""
    from llmlabel.distill.training_sets import output_kind, train_sets

    if mode not in (None, "candidates", "single"):
        raise ValueError("mode must be 'candidates' or 'single'")
    rows = read_labeled(path, text_column)
    kind = output_kind(rows, path)
    if kind != "label":
        if mode is not None:
            from llmlabel.errors import InputError

            what = "a multi-label output's label sets" if kind == "multi_label" else "a taxonomy output's paths"
            raise InputError(
                f"{path} is a {kind.replace('_', '-')} output: --mode {mode} is for single-label outputs; "
                f"leave it out to learn from {what}"
            )
        student = MultiLabelDistiller if kind == "multi_label" else TaxonomyDistiller
        unknown = sorted(set(params) - set(student().get_params()))
        if unknown:
            from llmlabel.errors import InputError

            raise InputError(
                f"{path} is a {kind.replace('_', '-')} output: {', '.join(unknown)} does not apply to its student "
                "(a setting of single-label students); leave it out"
            )
        t0 = time.perf_counter()
        sets_model, fields = train_sets(rows, kind, features, weight_by_confidence, text_column, cv, **params)
        return sets_model, {
            "kind": kind,
            **fields,
            "features": features,
            "weight_by_confidence": weight_by_confidence,
            "training_seconds": round(time.perf_counter() - t0, 3),
            "sklearn_version": sklearn.__version__,
            "params": {k: v for k, v in sets_model.get_params().items() if isinstance(v, (int, float, str, bool))},
            "source": os.path.abspath(path),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
    mode = mode or "candidates"
    if "threshold" in params:
        from llmlabel.errors import InputError

        raise InputError(f"{path} is a single-label output: a threshold applies to multi-label and taxonomy students")
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
        "kind": "label",
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
    card["n_features"] = int(model.clf_.coef_.shape[1])  # checked against the arrays when the file is loaded
    return model, card


# A model file is a skops archive (a zip of JSON and arrays, no pickle): loading it instantiates only types that
# llmlabel writes, checked before anything is built, so a crafted file cannot run code (a joblib file can).
MODEL_TYPES = frozenset(
    {
        "llmlabel.distill.student.CandidateDistiller",
        "llmlabel.distill.labelsets.MultiLabelDistiller",
        "llmlabel.distill.labelsets.TaxonomyDistiller",
        "llmlabel.distill.features.HashedNgramTfidf",
        "llmlabel.distill.features.MiniLMEmbedder",
        "llmlabel.distill.features.LocalLLMEmbedder",
    }
)


class NotAModel(ValueError):
    """The file is not a model written by `save_model`; nothing in it was run."""


def save_model(model: Student, card: dict[str, Any], path: str) -> None:
    """One skops file (featurizer + classifier), written atomically, and ``<path>.card.json`` beside it."""
    import skops.io as sio

    from llmlabel.io.files import atomic_path

    with atomic_path(path) as tmp:
        sio.dump({"format": 2, "model": model, "card": card}, str(tmp))
    with open(path + ".card.json", "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, default=str)


def load_model(path: str) -> Student:
    """The model saved by :func:`save_model`; its card is on ``model.card_``. Raises NotAModel for anything
    else, before any object in the file is created, and for an archive whose arrays do not fit its card
    (:func:`check_archive`) before any of them is read."""
    import zipfile

    import skops.io as sio

    if not zipfile.is_zipfile(path):
        raise NotAModel("not a skops archive (a pickle or joblib file is never loaded)")
    check_sizes(path)  # before schema.json is read: it could be the bomb
    try:
        types = set(sio.get_untrusted_types(file=path))
    except Exception as e:  # a zip that is not a skops archive
        raise NotAModel(f"unreadable model archive ({type(e).__name__})") from None
    foreign = sorted(types - MODEL_TYPES)
    if foreign:
        raise NotAModel(f"it holds types llmlabel does not write: {', '.join(foreign[:3])}")
    check_archive(path)
    try:
        blob = sio.load(path, trusted=sorted(types))
    except Exception as e:  # checked above, yet unreadable: never a traceback
        raise NotAModel(f"unreadable model archive ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(blob, dict) or not isinstance(
        blob.get("model"), (CandidateDistiller, MultiLabelDistiller, TaxonomyDistiller)
    ):
        raise NotAModel("no student inside")
    model = blob["model"]
    if isinstance(model, (MultiLabelDistiller, TaxonomyDistiller)):
        why = model.inconsistency()
        if why:
            raise NotAModel(why)
    model.card_ = blob.get("card", {})
    return model


# What loading a model file may cost: its arrays as declared, at most this many bytes beyond the file's own
# size times this ratio (llmlabel stores members uncompressed: ratio 1; a zip bomb declares ~1,000).
ARCHIVE_SLACK, ARCHIVE_RATIO = 64 << 20, 20


def check_archive(path: str) -> None:
    """Refuse a model archive whose declared contents do not add up, before anything in it is read: members
    that would decompress far beyond the file's size, arrays whose .npy header disagrees with the member's
    size or holds objects, and arrays whose shapes do not match the model card (its labels and, in files
    written since, its feature count) or each other. Reads only the zip directory, schema.json (bounded)
    and each array's header."""
    import zipfile

    check_sizes(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = {i.filename: i for i in zf.infolist()}
            if "schema.json" not in members:
                raise NotAModel("no schema.json inside")
            schema = json.loads(zf.read("schema.json"))
            arrays = {name: _npy_header(zf, members[name]) for name in members if name.endswith(".npy")}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise NotAModel(f"unreadable model archive ({type(e).__name__}: {str(e)[:200]})") from None
    _check_shapes(schema, arrays)


def check_sizes(path: str) -> None:
    """Refuse an archive whose members would decompress far beyond the file's own size (a zip bomb): read
    from the zip directory alone."""
    import zipfile

    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise NotAModel(f"unreadable model archive ({type(e).__name__}: {str(e)[:200]})") from None
    if declared > max(ARCHIVE_SLACK, ARCHIVE_RATIO * size):
        raise NotAModel(
            f"its members declare {declared:,} bytes once decompressed, far beyond a model of {size:,} bytes "
            "(llmlabel writes them uncompressed)"
        )


def _npy_header(zf: Any, info: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """An array member's shape and dtype, from its header alone; its data must be exactly what they say."""
    from numpy.lib import format as npy

    with zf.open(info) as fh:
        version = npy.read_magic(fh)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read(fh)
        header = fh.tell()
    if dtype.hasobject:
        raise NotAModel(f"array {info.filename} holds Python objects")
    if math.prod(shape) * dtype.itemsize != info.file_size - header:
        raise NotAModel(
            f"array {info.filename} declares shape {shape} of {dtype} but holds {info.file_size - header:,} bytes"
        )
    return tuple(int(n) for n in shape), dtype


def _check_shapes(schema: Any, arrays: dict[str, tuple[tuple[int, ...], Any]]) -> None:
    """The arrays' shapes against the card (inside the archive) and against each other."""
    found: dict[str, list[tuple[int, ...]]] = {}  # attribute name -> shapes of the arrays stored under it
    json_lengths: dict[str, int] = {}  # attribute name -> length of an array stored as JSON (classes_)
    ints: dict[str, int] = {}  # attribute name -> an integer parameter (n_features_out_)

    def walk(node: Any, name: str) -> None:
        if isinstance(node, list):
            for v in node:
                walk(v, name)
            return
        if not isinstance(node, dict):
            return
        if node.get("__loader__") == "NdArrayNode":
            if node.get("type") == "numpy":
                file = node.get("file")
                if file not in arrays:
                    raise NotAModel(f"array {name} names a member {str(file)[:80]!r} that is not a .npy file in it")
                found.setdefault(name, []).append(arrays[file][0])
            elif isinstance(node.get("content"), list):
                json_lengths[name] = len(node["content"])
            return
        if node.get("__loader__") == "JsonNode" and isinstance(node.get("content"), str):
            try:
                value = json.loads(node["content"])
            except ValueError:
                return
            if type(value) is int:
                ints[name] = value
            return
        content = node.get("content")
        if node.get("__loader__") in ("DictNode", "ObjectNode") and isinstance(content, dict):
            inner = content.get("content") if node.get("__loader__") == "ObjectNode" else content
            for k, v in (inner if isinstance(inner, dict) else content).items():
                walk(v, str(k))
        else:
            walk(content, name)

    model = schema.get("content", {}).get("model") if isinstance(schema, dict) else None
    walk(model, "model")
    card = _card(schema)
    labels = card.get("labels")
    where = "the model card"
    if isinstance(labels, list) and "classes_" in json_lengths and json_lengths["classes_"] != len(labels):
        raise NotAModel(f"it has {json_lengths['classes_']} classes but {where} lists {len(labels)} labels")
    k = len(labels) if isinstance(labels, list) else json_lengths.get("classes_")
    coefs = found.get("coef_", [])
    if len(coefs) != 1 or len(coefs[0]) != 2:
        raise NotAModel(f"the classifier's coefficients are {'missing' if not coefs else f'of shape {coefs}'}")
    rows, n_features = coefs[0]
    if k is not None and not 1 <= rows <= k:
        raise NotAModel(f"coefficients of shape {coefs[0]} do not fit the {k} labels of {where}")
    if found.get("intercept_", [(rows,)]) != [(rows,)]:
        raise NotAModel(f"intercepts of shape {found['intercept_']} do not fit coefficients of shape {coefs[0]}")
    idf = found.get("idf_", [])
    featurizer = sum(s[0] for s in idf) if idf else ints.get("n_features_out_")
    if any(len(s) != 1 for s in idf) or sorted(found.get("kept_buckets_", [])) not in ([], sorted(idf)):
        raise NotAModel("the featurizer's arrays do not match each other")
    carded = card.get("n_features")
    for what, n in (("the featurizer", featurizer), (where, carded if type(carded) is int else None)):
        if n is not None and n != n_features:
            raise NotAModel(f"coefficients of shape {coefs[0]} do not fit the {n} features of {what}")
    known = {"coef_", "intercept_", "idf_", "kept_buckets_"}
    for name, shapes in found.items():
        for shape in shapes:
            if name not in known and math.prod(shape) > max(n_features, rows, 1) + 1024:
                raise NotAModel(f"array {name} of shape {shape} is larger than any part of this model")


def _card(schema: Any) -> dict[str, Any]:
    """The model card stored in the archive (labels, n_features), read from the schema without loading."""
    try:
        node = schema["content"]["card"]["content"]
    except (KeyError, TypeError):
        return {}
    out: dict[str, Any] = {}
    if not isinstance(node, dict):
        return out
    labels = node.get("labels")
    if isinstance(labels, dict) and isinstance(labels.get("content"), list):
        out["labels"] = labels["content"]
    nf = node.get("n_features")
    if isinstance(nf, dict) and isinstance(nf.get("content"), str):
        try:
            out["n_features"] = json.loads(nf["content"])
        except ValueError:
            pass
    return out


def predict_rows(
    model: Student,
    rows: Iterable[dict[str, Any] | str],
    text_column: str = "text",
    id_column: str = "id",
    batch_size: int = 8192,
) -> Iterator[dict[str, Any]]:
    """Stream ``{"id", "label", "probs": {label: p}}`` for rows (dicts or plain strings),
    featurizing and predicting a batch at a time. Rows without an id get their index. A multi-label student's
    rows also carry ``labels`` and ``confidence`` and a taxonomy student's ``path``, ``depth``,
    ``level_confidence`` and ``confidence``, the fields `llmlabel label` writes for those kinds."""
    from llmlabel.distill.training_sets import set_record

    classes = [str(c) for c in model.classes_]
    batch: list[Any] = []
    start = 0

    def flush(batch: list[Any], start: int) -> Iterator[dict[str, Any]]:
        texts = [r if isinstance(r, str) else r.get(text_column, "") for r in batch]
        ids = [r.get(id_column, start + i) if isinstance(r, dict) else start + i for i, r in enumerate(batch)]
        if isinstance(model, TaxonomyDistiller):
            for rid, rec in zip(ids, model.predict_paths(texts)):
                yield {"id": rid, **rec}
            return
        if isinstance(model, MultiLabelDistiller):
            Ps = model.predict_proba(texts)
            for rid, p, kept in zip(ids, np.round(Ps, 4), model.decide(Ps)):
                yield {"id": rid, **set_record(model, p, kept)}
            return
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
