"""A labeled (or audited) output as the review loop reads it: ids, texts, the model's labels and confidences, the
judges' answers; and the model's view of it after learning from human answers (`model_view`, `crossfit`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmlabel.ensemble.combine import refit
from llmlabel.errors import InputError
from llmlabel.io.paths import audit_summary_path, ledger_path
from llmlabel.io.records import column, read_output, report_record
from llmlabel.io.values import json_field
from llmlabel.results import RowResult
from llmlabel.review.kinds import LabelKind

__all__ = ["Dataset", "ModelView", "crossfit", "load_output", "model_view"]


@dataclass
class Dataset:
    """The rows of OUTPUT, in file order. For an audit output, `label` holds the given labels (what the dataset
    says unless a human changes it), `confidence` the audit's score (the chance the given label is right) and
    `suggested` the judges' label shown beside it."""

    path: Path
    labels: list[str]
    ids: list[str]
    texts: list[str]
    records: list[dict[str, Any]]  # the rows as the file holds them (FINAL copies what a human did not change)
    judge_names: list[str]
    audit: bool = False
    suggested: list[str | None] = field(default_factory=list)
    flagged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    audit_precision: float | None = None  # the audit's own estimate of its flags' precision
    method: str = "majority"
    mode: str = "label"
    kind: LabelKind | None = None  # multi-label or taxonomy (review.kinds); None: one label per row
    # judges the run batch-calibrated, with their content-free distributions (its ledger says)
    batch: dict[str, dict[str, float] | None] = field(default_factory=dict)
    results: list[RowResult] = field(default_factory=list)  # the same rows, read (io.records.read_output)

    @property
    def k(self) -> LabelKind:
        return self.kind or LabelKind("single", tuple(self.labels))

    def __len__(self) -> int:
        return len(self.ids)

    def index(self) -> dict[str, int]:
        return {rid: i for i, rid in enumerate(self.ids)}


@dataclass
class ModelView:
    """The model's label, confidence and class distribution for every row (None: no label)."""

    label: list[str | None]
    confidence: np.ndarray  # (n,) float; 0 where there is no label
    probs: list[dict[str, float] | None]
    quality: dict[str, Any] = field(default_factory=dict)  # the refit's summary (weights, calibration)


def _label(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


def _batch_calibrated(output: Path) -> dict[str, dict[str, float] | None]:
    """The judges the run that wrote `output` batch-calibrated, each with its content-free distribution, from
    its ledger's quality block (a run's last, or a merge's), so that the review's refit labels rows as the run
    did; none when it cannot be read."""
    import json

    try:
        data = json.loads(ledger_path(output).read_text(encoding="utf-8"))
        quality = (data.get("merged") or data["runs"][-1]).get("quality") or {}
        block = quality.get("batch_calibration") or {}
        p_cf = block.get("content_free") or {}
        return {
            str(j): {str(k): float(v) for k, v in p_cf[j].items()} if j in p_cf else None
            for j in block.get("judges") or []
        }
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return {}


def load_output(
    path: str | Path, labels: list[str], method: str = "majority", mode: str = "label", kind: LabelKind | None = None
) -> Dataset:
    """Read OUTPUT (a `llmlabel label` or `llmlabel audit` output; JSONL, CSV or Parquet). One-line errors for a
    missing file, a file of neither kind, repeated ids and labels outside the task's label set. `kind`: a
    multi-label or taxonomy task's (review.kinds), whose rows' keys are their sets or paths."""
    kind = kind if kind is not None and not kind.single else None
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} not found; pass the output file of `llmlabel label` or `llmlabel audit`")
    records: list[dict[str, Any]] = []
    results: list[RowResult] = []
    ids: list[str] = []
    texts: list[str] = []
    names: dict[str, None] = {}
    audit = False
    index = set(labels)
    seen: set[str] = set()
    advice = "pass the output of `llmlabel label` or `llmlabel audit`"
    for i, (rec, r) in enumerate(read_output(p, mode if kind is None else None, advice)):
        if i == 0:
            audit = "given_label" in rec and "score" in rec
            if not audit and "label" not in rec:
                raise InputError(f"{p} has no 'label' column; {advice}")
            if kind is not None and audit:
                raise InputError(
                    f"{p} is an audit output of a {kind.name} task: the review loop reviews labeled outputs of such "
                    "tasks (llmlabel label), not audits of them yet"
                )
            if kind is not None and kind.name == "taxonomy" and "path" not in rec:
                raise InputError(f"{p} has no 'path' column: pass the output of the taxonomy config it was made with")
        for k in ("judges", "probs", "candidates"):
            rec[k] = json_field(rec.get(k))  # (read_output checked them)
        rid = r.id
        if rid in seen:
            raise InputError(f"{p}: id {rid!r} appears twice; review needs one row per id")
        seen.add(rid)
        rec["id"] = rid
        if kind is not None:
            _check_key(kind, r, p)
        lab = _label(rec.get("given_label")) if audit else r.label
        if kind is None and lab is not None and lab not in index:
            raise InputError(
                f"{p}: row {rid!r} has label {lab!r} outside task.labels ({', '.join(labels)}); pass the config the "
                "output was made with"
            )
        for n in r.judges:
            names.setdefault(n, None)
        records.append(rec)
        results.append(r)
        ids.append(rid)
        text = column(r, "text")
        texts.append("" if text is None else str(text))
    if not records:
        raise InputError(f"{p} has no rows")
    ds = Dataset(p, list(labels), ids, texts, records, list(names), audit=audit, method=method, mode=mode, kind=kind)
    ds.batch = _batch_calibrated(p) if not audit else {}
    ds.results = results
    if audit:
        ds.suggested = [_label(r.get("suggested_label")) for r in records]
        ds.flagged = np.array([str(r.get("flagged")).lower() in ("true", "1") for r in records], dtype=bool)
        summary = audit_summary_path(p)
        if summary.is_file():
            try:
                ds.audit_precision = json.loads(summary.read_text()).get("est_precision")
            except ValueError:
                ds.audit_precision = None
    return ds


def _check_key(kind: LabelKind, r: RowResult, p: Path) -> None:
    """A multi-label row's set within task.labels, a taxonomy row's path a node of task.taxonomy."""
    rid = r.id
    key = kind.result_key(r)
    if key is None:
        return
    bad = (
        [x for x in kind.members(key) if x not in kind.labels]
        if kind.name == "multilabel"
        else ([] if kind.parse(key) == key else [key])
    )
    if bad:
        what = "task.labels" if kind.name == "multilabel" else "task.taxonomy"
        raise InputError(
            f"{p}: row {rid!r} has {kind.what} {key!r} with {bad[0]!r} outside {what}; pass the config the output "
            "was made with"
        )


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def model_view(ds: Dataset, gold: dict[str, str] | None = None) -> ModelView:
    """The model's labels after learning from `gold` (human answers): the whole-job aggregation refit on the
    judges' answers the output already holds (no request is made), weighted by the judges' accuracy on the gold
    rows, with the gold rows' label prior and, from 20 gold rows, confidences Platt-scaled on them
    (ensemble.combine.refit, the same fit `llmlabel label` runs with a config's `gold:` file).

    An audit output's labels are its given labels: a human changes them, the judges do not. A multi-label or
    taxonomy output's answers are its own: their aggregation is not refit (docs/review.md says why)."""
    n = len(ds)
    if ds.kind is not None:
        return ModelView(
            [ds.kind.result_key(r) for r in ds.results],
            np.array([r.confidence or 0.0 for r in ds.results]),
            [None if r.probs is None else dict(r.probs) for r in ds.results],
            {"learned": False},
        )
    if ds.audit:
        return ModelView(
            [_label(r.get("given_label")) for r in ds.records],
            np.array([_float(r.get("score")) for r in ds.records]),
            [None if r.probs is None else dict(r.probs) for r in ds.results],
        )
    gold = {k: v for k, v in (gold or {}).items() if v in ds.labels}
    results = ds.results
    update: Any = None
    quality: dict[str, Any] = {}
    if ds.judge_names:
        update, report = refit(
            lambda: iter(results), ds.judge_names, ds.labels, ds.method, ds.mode, gold or None, batch=ds.batch
        )
        quality = report_record(report)
    labels: list[str | None] = []
    conf = np.zeros(n)
    probs: list[dict[str, float] | None] = []
    for pos, r in enumerate(results):
        r = update(pos, r) if update else r
        lab = _label(r.label)
        labels.append(lab)
        conf[pos] = (r.confidence or 0.0) if lab is not None else 0.0
        probs.append(None if r.probs is None else dict(r.probs))
    return ModelView(labels, conf, probs, quality)


def crossfit(
    ds: Dataset, gold: dict[str, str], rows: list[str], folds: int = 5, seed: int = 0
) -> dict[str, tuple[str | None, float]]:
    """For each id in `rows` (human-labeled rows), the model's label and confidence learned without that row's
    own answer: `rows` split into `folds` folds, each fold's labels from a refit on the other answers. The final
    labels learn from every answer; checking them on rows whose answers they learned from would flatter them."""
    out: dict[str, tuple[str | None, float]] = {}
    if not rows:
        return out
    if ds.audit or ds.kind is not None:  # nothing is learned from the answers: the labels are the model's own
        view = model_view(ds)
        idx = ds.index()
        return {rid: (view.label[idx[rid]], float(view.confidence[idx[rid]])) for rid in rows}
    rng = np.random.default_rng(seed)
    order = list(rows)
    rng.shuffle(order)
    k = max(1, min(folds, len(order)))
    idx = ds.index()
    for f in range(k):
        held = order[f::k]
        held_set = set(held)
        view = model_view(ds, {r: v for r, v in gold.items() if r not in held_set})
        for rid in held:
            out[rid] = (view.label[idx[rid]], float(view.confidence[idx[rid]]))
    return out
