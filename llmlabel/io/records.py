"""Results as output records and back: the one place a `RowResult` (llmlabel.results) becomes the dict that an
output line, a CSV row or the service's reply holds, and the one place such a record is read back.

The record's field order is part of the format (users' files are compared byte for byte): the row's input
columns, `id`, then the outcome. A one-label or multi-label row's outcome is `label` (`labels`), `confidence`,
`probs`, `candidates`, `error`, `judges`; a taxonomy row's is `label`, `confidence`, `probs`, `candidates`,
`judges`, `error`, `path`, `depth`, `level_confidence`; a row with nothing to label has the first layout's
fields with `judges` before `error` and no `labels` or `path`. `from_record` reads the layout back, so that
`to_record(from_record(rec)) == rec` with the same order for every record llmlabel writes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from llmlabel.results import MULTILABEL, TAXONOMY, AggregationReport, JudgeAnswer, RowResult

POSITION = "_i"  # a part-file record's input position (always its first field)
# What a taxonomy row adds to its record besides the flat fields (label, confidence, probs, ...).
TAXONOMY_FIELDS = ("path", "depth", "level_confidence")
# Every field a record's outcome may hold: the fields after the input columns (input columns named like one are
# renamed NAME_input, see pipeline.row_labeler.output_names).
OUTCOME_FIELDS = frozenset(
    ("label", "labels", "confidence", "probs", "candidates", "judges", "error", *TAXONOMY_FIELDS)
)
_ANSWER_FIELDS = ("label", "candidates", "labels", "probs", "given_label_correct", "error")


def answer_record(a: JudgeAnswer, kind: str = "label") -> dict[str, Any]:
    """A judge's answer as the output's `judges` field holds it: its fields that are set; for a taxonomy row,
    its deepest label, its label at each level (`path`) and its first error."""
    if kind == TAXONOMY and a.levels is not None:
        out: dict[str, Any] = {"label": a.label, "path": [x.label for x in a.levels]}
        if a.error:
            out["error"] = a.error
        return out
    return {k: v for k in _ANSWER_FIELDS if (v := getattr(a, k)) is not None}


def answer_from_record(value: Any) -> JudgeAnswer:
    """A `judges` entry read back (a taxonomy entry's `path` as its levels); a value that is no answer object
    (a hand-edited file) is an answer without a label."""
    if not isinstance(value, Mapping):
        return JudgeAnswer(error=None if value is None else str(value))
    fields = {k: value[k] for k in _ANSWER_FIELDS if k in value}
    path = value.get("path")
    if isinstance(path, list):
        fields["levels"] = [JudgeAnswer(label=x if isinstance(x, str) else None) for x in path]
    try:
        return JudgeAnswer.model_validate(fields)
    except ValueError:  # a field of the wrong type: keep what reads as a label
        label = value.get("label")
        return JudgeAnswer(label=label if isinstance(label, str) else None)


def judges_from_record(value: Any) -> dict[str, JudgeAnswer]:
    """A record's `judges` field read back (nothing usable: no answers)."""
    if not isinstance(value, Mapping):
        return {}
    return {str(name): answer_from_record(a) for name, a in value.items()}


def head_record(r: RowResult) -> dict[str, Any]:
    """The record's fields before its outcome: the input position (part files), the input columns and `id`."""
    rec: dict[str, Any] = {} if r.position is None else {POSITION: r.position}
    rec.update(r.inputs)
    rec["id"] = r.id  # in place of an input column named `id` (the id column keeps its name)
    return rec


def judges_record(r: RowResult) -> dict[str, Any]:
    """The record's `judges` field."""
    return {n: answer_record(a, r.kind) for n, a in r.judges.items()}


def outcome_record(r: RowResult, judges: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record's outcome fields, in the output's order (see the module docstring); `judges`: the result's
    judges_record when the caller has it already."""
    cands = list(r.candidates)
    probs = None if r.probs is None else dict(r.probs)
    if not r.asked:
        out: dict[str, Any] = {
            "label": r.label,
            "confidence": r.confidence,
            "probs": probs,
            "candidates": cands,
            "judges": {},
            "error": r.error,
        }
    elif r.kind == TAXONOMY:
        path = list(r.path or ())
        out = {
            "label": r.label,
            "confidence": r.confidence,
            "probs": probs,
            "candidates": cands,
            "judges": judges_record(r) if judges is None else judges,
            "error": r.error,
            "path": path,
            "depth": len(path),
            "level_confidence": list(r.level_confidence or ()),
        }
    else:
        out = {"label": r.label}
        if r.kind == MULTILABEL:
            out["labels"] = None if r.labels is None else list(r.labels)
        out.update(
            confidence=r.confidence,
            probs=probs,
            candidates=cands,
            error=r.error,
            judges=judges_record(r) if judges is None else judges,
        )
    if r.label_source is not None:
        out["label_source"] = r.label_source
    out.update(r.extra)
    return out


def to_record(r: RowResult, judges: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row as an output record: input columns, `id`, then its outcome (`judges`: as in outcome_record)."""
    rec = head_record(r)
    rec.update(outcome_record(r, judges))
    return rec


def to_records(results: Iterable[RowResult]) -> Iterator[dict[str, Any]]:
    """to_record of each result. Results that share one `judges` mapping (PartFile.results gives rows that
    repeat an answer combination the same one) share its serialised form, made once."""
    memo: dict[int, tuple[Mapping[str, JudgeAnswer], dict[str, Any]]] = {}
    for r in results:
        hit = memo.get(id(r.judges))
        if hit is None or hit[0] is not r.judges:  # (the memo holds each mapping: its id is not reused)
            if len(memo) >= 4096:
                memo.clear()
            hit = memo[id(r.judges)] = (r.judges, judges_record(r))
        yield to_record(r, hit[1])


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(map(str, value)) if isinstance(value, list) else ()


def _number(value: Any) -> float | None:
    """A number field (a CSV cell's text too); None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


@lru_cache(maxsize=256)
def _layout(keys: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A record's input columns and the fields a later tool added, from its field names (see `from_record`).
    Cached: a file's records share their names, and walking them took a third of a weighted job's rewrite
    (warm 5,000 rows: from_record 313 -> 185 bytecodes a row, benchmarks/results/results_model.md)."""
    inputs: list[str] = []
    extra: list[str] = []
    outcome = False
    for k in keys:  # one pass: the input columns, then the outcome and what a later tool added
        if k in OUTCOME_FIELDS:
            if not outcome:
                outcome = True
                if inputs and inputs[-1] == "id":
                    inputs.pop()  # the output's own id, after the inputs (an id column named `id` stays)
        elif not outcome:
            if k != POSITION:
                inputs.append(k)
        elif k not in ("id", "label_source"):
            extra.append(k)
    if not outcome and inputs and inputs[-1] == "id":
        inputs.pop()
    return tuple(inputs), tuple(extra)


def from_record(
    rec: Mapping[str, Any], kind: str | None = None, judges: Mapping[str, JudgeAnswer] | None = None
) -> RowResult:
    """An output record read back as a result: every field llmlabel writes is typed; the fields before the
    first outcome field are its input columns, those after it that llmlabel does not write are kept in `extra`.

    `kind`: the job's kind when known (a row with nothing to label does not show it); else read from the record
    (a `path`: a taxonomy row; `labels`: a multi-label row). `judges`: the record's `judges` already read (rows
    that repeat an answer combination share one)."""
    input_keys, extra_keys = _layout(tuple(rec))
    inputs = {k: rec[k] for k in input_keys}
    extra = {k: rec[k] for k in extra_keys} if extra_keys else {}
    if kind is None:
        kind = TAXONOMY if "path" in rec else MULTILABEL if "labels" in rec else "label"
    # A row with nothing to label: `judges` (always empty) before `error`, and neither a set nor a path.
    asked = True
    if "path" not in rec and "labels" not in rec and "judges" in rec and "error" in rec and not rec["judges"]:
        order = [k for k in rec if k in ("judges", "error")]
        asked = order[0] != "judges"
    probs = rec.get("probs")
    labels, path, levels = rec.get("labels"), rec.get("path"), rec.get("level_confidence")
    position = rec.get(POSITION)
    label, error, source = rec.get("label"), rec.get("error"), rec.get("label_source")
    return RowResult.make(
        str(rec.get("id", "")),
        kind=kind,
        position=position if type(position) is int else None,
        inputs=inputs,
        asked=asked,
        label=None if label is None else str(label),
        confidence=_number(rec.get("confidence")),
        probs=probs if isinstance(probs, dict) else dict(probs) if isinstance(probs, Mapping) else None,
        candidates=_strings(rec.get("candidates")),
        judges=judges_from_record(rec.get("judges")) if judges is None else judges,
        error=None if error is None else str(error),
        labels=_strings(labels) if isinstance(labels, list) else None,
        path=_strings(path) if isinstance(path, list) else None,
        level_confidence=tuple(float(x) for x in levels if _number(x) is not None)
        if isinstance(levels, list)
        else None,
        label_source=None if source is None else str(source),
        extra=extra,
    )


def report_record(r: AggregationReport) -> dict[str, Any]:
    """The report as the ledger's `quality` holds it (fields that apply only; an empty report: {})."""
    if r.method is None:
        return {}
    out: dict[str, Any] = {"method": r.method}
    if r.multi_label:
        out["multi_label"] = True
    if r.per_level:
        out["per_level"] = True
    if r.gold_rows is not None:
        out["gold_rows"] = r.gold_rows
    if r.left_out:
        out["left_out"] = list(r.left_out)
    if r.rows_only_left_out:
        out["rows_only_left_out"] = r.rows_only_left_out
    if r.judges is not None:
        out["judges"] = {
            n: {
                k: v
                for k in ("weight", "accuracy", "confusion", "coverage", "mean_label_accuracy")
                if (v := getattr(f, k)) is not None
            }
            for n, f in r.judges.items()
        }
    if r.priors is not None:
        out["priors"] = dict(r.priors)
    if r.fallback is not None:
        out["fallback"] = r.fallback
    if r.thresholds is not None:
        out["thresholds"] = dict(r.thresholds)
    if r.one_label is not None:
        o = r.one_label
        out["one_label"] = {"judge": o.judge, "label": o.label, "share": o.share, "rows": o.rows}
    if r.confidence_calibrated_on is not None:
        out["confidence_calibrated_on"] = r.confidence_calibrated_on
    if r.batch_calibrated or r.batch_too_few:
        out["batch_calibration"] = {
            "judges": list(r.batch_calibrated),
            "too_few_rows": dict(r.batch_too_few or {}),  # left as they were (ensemble.calibration.BATCH_MIN_ROWS)
        }
    return out
