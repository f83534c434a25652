"""Results as output records and back: the one place a `RowResult` (llmlabel.results) becomes the dict that an
output line, a CSV row or the service's reply holds, and the one place such a record is read back.

The record's field order is part of the format (users' files are compared byte for byte): the row's input
columns, `id`, then the outcome. A one-label or multi-label row's outcome is `label` (`labels`), `confidence`,
`probs`, `candidates`, `error`, `judges`; a taxonomy row's is `label`, `confidence`, `probs`, `candidates`,
`judges`, `error`, `path`, `depth`, `level_confidence`; a row with nothing to label has the first layout's
fields with `judges` before `error` and no `labels` or `path`. `from_record` reads the layout back, so that
`to_record(from_record(rec)) == rec` with the same order for every record llmlabel writes.

`read_results` is the one reader of an output file for the tools that read one (eval, distill, review): it
parses each row at the boundary (JSON text decoded, fields checked, one line naming the file and the row for a
field that is not what llmlabel writes) and hands them typed results."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from llmlabel.errors import InputError
from llmlabel.results import MULTILABEL, TAXONOMY, AggregationReport, JudgeAnswer, RowResult, Suspect

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


def _layout(keys: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], str, bool]:
    """What a record's field names say (see from_record): its input columns, the fields a later tool added after
    the outcome, its kind, and whether it may be a row with nothing to label (then its `judges` is empty)."""
    inputs: list[str] = []
    extra: list[str] = []
    outcome = False
    for k in keys:  # the input columns, then the outcome and what a later tool added
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
    kind = TAXONOMY if "path" in keys else MULTILABEL if "labels" in keys else "label"
    # A row with nothing to label: `judges` (always empty) before `error`, and neither a set nor a path.
    unasked = (
        "path" not in keys
        and "labels" not in keys
        and "judges" in keys
        and "error" in keys
        and keys.index("judges") < keys.index("error")
    )
    return tuple(inputs), tuple(extra), kind, unasked


_LAYOUTS: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...], str, bool]] = {}


def from_record(
    rec: Mapping[str, Any], kind: str | None = None, judges: Mapping[str, JudgeAnswer] | None = None
) -> RowResult:
    """An output record read back as a result: every field llmlabel writes is typed; the fields before the
    first outcome field are its input columns, those after it that llmlabel does not write are kept in `extra`.

    `kind`: the job's kind when known (a row with nothing to label does not show it); else read from the record
    (a `path`: a taxonomy row; `labels`: a multi-label row). `judges`: the record's `judges` already read (rows
    that repeat an answer combination share one)."""
    keys = tuple(rec)
    layout = _LAYOUTS.get(keys)
    if layout is None:  # (the rows of one file share a few layouts: each is worked out once)
        if len(_LAYOUTS) >= 256:
            _LAYOUTS.clear()
        layout = _LAYOUTS[keys] = _layout(keys)
    input_keys, extra_keys, auto_kind, maybe_unasked = layout
    inputs = {k: rec[k] for k in input_keys}
    extra = {k: rec[k] for k in extra_keys} if extra_keys else {}
    if kind is None:
        kind = auto_kind
    asked = not (maybe_unasked and not rec["judges"])
    probs = rec.get("probs")
    labels, path, levels = rec.get("labels"), rec.get("path"), rec.get("level_confidence")
    position = rec.get(POSITION)
    label, error, source = rec.get("label"), rec.get("error"), rec.get("label_source")
    conf, rid = rec.get("confidence"), rec.get("id", "")
    # Every field given: the dict filled as RowResult.evolve fills it, without its check (a reader's hot path).
    r = object.__new__(RowResult)
    r.__dict__.update(
        id=rid if type(rid) is str else str(rid),
        kind=kind,
        position=position if type(position) is int else None,
        inputs=inputs,
        asked=asked,
        label=label if type(label) is str or label is None else str(label),
        confidence=conf if type(conf) is float else _number(conf),
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
    return r


# Outcome fields a CSV or Parquet output keeps as JSON text (lists and mappings): what each must be, in words
# and as the type JSON gives it.
_JSON_FIELDS = {
    "probs": ("a mapping of labels to probabilities", dict),
    "candidates": ("a list of labels", list),
    "judges": ("a mapping of judges to their answers", dict),
    "labels": ("a list of labels", list),
    "path": ("a list of taxonomy nodes", list),
    "level_confidence": ("a list of numbers", list),
}
OUTPUT_ADVICE = "pass the output file of `llmlabel label`"


def read_results(
    path: str | Path, kind: str | None = None, advice: str = OUTPUT_ADVICE, judges: bool = True
) -> Iterator[RowResult]:
    """An output file's rows (JSONL, CSV or Parquet, read by io.rows as any file is) as results, in file order:
    the one reader of an output for the tools that read one (eval, distill, review).

    Parsed here, typed after: a CSV or Parquet cell's JSON text decoded, an empty cell read as no value, a row
    without an id given its position (from 0) as its id. A field that is not what `llmlabel label` writes (probs
    that are no mapping of numbers, a confidence that is no number from 0 to 1, candidates that are no list, ...)
    is one line naming the file and the row (InputError), never an error deep inside the tool; so is a first
    row with no `label` field (no output at all: `advice` says what to pass). Rows that repeat an answer
    combination share one parsed `judges` mapping (as PartFile.results). `judges=False`: for a tool that
    reads no judge's answer (distill), the results hold none and the field is neither parsed nor checked."""
    for _, r in _read(path, kind, advice, True, False, judges):
        yield r


def read_output(
    path: str | Path, kind: str | None = None, advice: str = OUTPUT_ADVICE
) -> Iterator[tuple[dict[str, Any], RowResult]]:
    """read_results, each row beside its record as the file holds it (a tool that writes the rows back, as the
    review loop does, copies what it does not change), and without the `label` check (an audit output has
    none: the caller checks the first record)."""
    return _read(path, kind, advice, False, True, True)


def _read(
    path: str | Path, kind: str | None, advice: str, need_label: bool, keep: bool, with_judges: bool
) -> Iterator[tuple[dict[str, Any], RowResult]]:
    from llmlabel.io.rows import iter_rows

    memo: dict[Any, tuple[Any, dict[str, JudgeAnswer]]] = {}  # by the answers' labels (rows read as JSON)
    texts: dict[str, tuple[Any, dict[str, JudgeAnswer]]] = {}  # by the cell's JSON text (CSV, Parquet)
    for i, read in enumerate(iter_rows(path)):
        if i == 0 and need_label and "label" not in read:
            raise InputError(f"{path} has no 'label' column; {advice}")
        rec = dict(read) if keep else read
        judges: dict[str, JudgeAnswer] | None = None
        text = rec.get("judges")
        if not with_judges:
            judges = {}
        elif type(text) is str and (seen := texts.get(text)) is not None:  # a CSV's or Parquet's repeated cell
            rec["judges"], judges = seen
        _check(rec, path, i + 1, advice, with_judges)
        rid = rec.get("id")
        if rid is None or rid == "" or rid != rid:  # none, empty or NaN: numbered (as io.rows.row_id)
            rec["id"] = str(i)
        raw = rec.get("judges")
        if judges is None and raw:
            try:  # the answers' labels as a cheap key; the compare below makes a hit exact
                key: Any = tuple([a.get("label") for a in raw.values()])
                hit = memo.get(key)
            except (AttributeError, TypeError):  # an answer that is no mapping, a label no string: not kept
                key = hit = None
            if hit is not None and hit[0] == raw:
                judges = hit[1]
            else:
                judges = judges_from_record(raw)
                if key is not None:
                    if len(memo) >= 4096:
                        memo.clear()
                    memo[key] = (raw, judges)
            if type(text) is str:
                if len(texts) >= 4096:
                    texts.clear()
                texts[text] = (raw, judges)
        yield read, from_record(rec, kind, judges if judges is not None else {})


def column(r: RowResult, name: str) -> Any:
    """A column of the row beside its outcome: an input column (as the output names it) or one a later tool
    added; None when the row has none."""
    v = r.inputs.get(name)
    return r.extra.get(name) if v is None else v


def _numbers(values: Iterable[Any]) -> bool:
    """Whether every value is a number (bool is none); the types gathered at C speed."""
    return set(map(type, values)) <= _NUMBER_TYPES


_NUMBER_TYPES = frozenset((float, int))
_LIST_FIELDS = ("candidates", "judges", "labels", "path")  # (and mappings: judges)


def _check(rec: dict[str, Any], path: str | Path, n: int, advice: str, judges: bool = True) -> None:
    """`rec`'s outcome fields decoded and checked in place (see read_results)."""
    get = rec.get
    label = get("label")
    if label == "":
        rec["label"] = None
    elif isinstance(label, (Mapping, list)):
        raise _bad(path, n, "label", label, "a label", advice)
    if get("error") == "":
        rec["error"] = None
    c = get("confidence")
    if c is not None and not (type(c) is float and 0.0 <= c <= 1.0):
        if c == "":
            x: float | None = None
        else:
            try:
                x = math.nan if isinstance(c, bool) else float(c)
            except (TypeError, ValueError):
                x = -1.0
            if isinstance(c, bool) or not (x != x or 0.0 <= x <= 1.0):
                raise InputError(f"{path}: row {n} has confidence {c!r}, not a number from 0 to 1; {advice}")
        rec["confidence"] = None if x is None or x != x else x  # NaN: a table's missing value
    # The fast path (a JSONL row as llmlabel writes it) with one test a field; anything else: _decode.
    v = get("probs")
    if v is not None and not (type(v) is dict and _numbers(v.values())):
        _decode(rec, "probs", path, n, advice)
    for k in _LIST_FIELDS if judges else _LIST_FIELDS[:1] + _LIST_FIELDS[2:]:
        v = get(k)
        if v is not None and type(v) is not _JSON_FIELDS[k][1]:
            _decode(rec, k, path, n, advice)
    v = get("level_confidence")
    if v is not None and not (type(v) is list and _numbers(v)):
        _decode(rec, "level_confidence", path, n, advice)


def _decode(rec: dict[str, Any], k: str, path: str | Path, n: int, advice: str) -> None:
    """A field's JSON text (a CSV's or Parquet's cell) decoded and checked in place; an empty cell: none."""
    what, kind = _JSON_FIELDS[k]
    v = rec[k]
    if isinstance(v, str):
        if v == "":
            rec[k] = None
            return
        try:
            v = rec[k] = json.loads(v)
        except ValueError:
            raise _bad(path, n, k, v, what, advice) from None
    if kind is dict:
        ok = isinstance(v, Mapping) and (k == "judges" or _numbers(v.values()))
    else:
        ok = isinstance(v, list) and (k != "level_confidence" or _numbers(v))
    if not ok:
        raise _bad(path, n, k, v, what, advice)


def _bad(path: str | Path, n: int, name: str, value: Any, what: str, advice: str) -> InputError:
    return InputError(f"{path}: row {n}: {name} {value!r:.60} is not {what}; {advice}")


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
        if r.batch_content_free:
            out["batch_calibration"]["content_free"] = {n: dict(p) for n, p in r.batch_content_free.items()}
            out["batch_calibration"]["content_free_undone"] = list(r.content_free_undone)
    return out


def suspect_record(s: Suspect) -> dict[str, Any]:
    """An audit's output record of a row (the JSON line `llmlabel audit` writes, `AuditReport.records`)."""
    rec: dict[str, Any] = {
        "id": s.id,
        "text": s.text,
        "given_label": s.given_label,
        "suggested_label": s.suggested_label,
    }
    if s.multi_label:
        rec |= {"given_labels": s.given_labels, "suggested_labels": s.suggested_labels}
    rec |= {"score": s.score, "flagged": s.flagged}
    if s.multi_label:
        rec |= {"missing": s.missing, "extra": s.extra}
    rec |= {"judge_score": s.judge_score, "judge_rank": s.judge_rank, "judge_flagged": s.judge_flagged}
    if s.multi_label:
        rec["judge_suspects"] = s.judge_suspects
    rec |= {"cleanlab_score": s.cleanlab_score, "cleanlab_rank": s.cleanlab_rank, "cleanlab_issue": s.cleanlab_issue}
    if s.multi_label:
        rec["cleanlab_suspects"] = s.cleanlab_suspects
    rec |= {"probs": s.probs, "judges": s.judges}
    if s.error:
        rec["error"] = s.error
    return rec
