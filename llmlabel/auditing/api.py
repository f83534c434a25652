"""`llmlabel.audit(data, given_labels, labeler=...)`: `llmlabel audit` on data in memory, same scores and flags
(the judges are asked through a Labeler, then scored by `audit.score_answers`, as the command does).

Texts give an AuditReport; a pandas DataFrame or a Hugging Face `datasets.Dataset` gives a copy of it with the
audit's columns added, named as cleanlab's `Datalab.get_issues("label")` names them (`AuditReport.issues()`
gives that table for any input)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from llmlabel.auditing.audit import AuditOptions, check_audit_task, given_codes, score_answers
from llmlabel.auditing.multilabel import given_sets, score_set_answers
from llmlabel.config import Config
from llmlabel.errors import InputError
from llmlabel.io.frames import Table, as_table
from llmlabel.io.records import suspect_record
from llmlabel.results import Suspect

if TYPE_CHECKING:
    import datasets
    import pandas

    from llmlabel.pipeline.labeler import Labeler

# cleanlab's label-issue columns (Datalab.get_issues("label")), then llmlabel's own, from an AuditReport record.
ISSUE_COLUMNS = {
    "is_label_issue": "flagged",
    "label_score": "score",
    "given_label": "given_label",
    "predicted_label": "suggested_label",
    "judge_score": "judge_score",
    "cleanlab_score": "cleanlab_score",
}
# A multi-label audit's columns besides: the suspect labels, each with P(the given set is wrong about it).
SET_COLUMNS = {"missing_labels": "missing", "extra_labels": "extra"}
# AuditOptions fields that only the command uses (output files, budgets, its progress bar and run options).
_CLI_ONLY = {"label_column", "gold", "max_cost", "max_requests", "progress", "run"}


@dataclass(frozen=True)
class AuditReport:
    """suspects: one per row, most suspicious first (a `Suspect`: id, text, given_label, suggested_label,
    score = P(given label is right), flagged, judge_score, cleanlab_score, probs, judges); summary: as
    OUTPUT.summary.json; ids: the rows' ids in input order."""

    suspects: list[Suspect]
    summary: dict[str, Any]
    ids: list[str] = field(default_factory=list)

    @property
    def records(self) -> list[dict[str, Any]]:
        """The rows as the dicts `llmlabel audit` writes as JSON lines, most suspicious first."""
        return [suspect_record(s) for s in self.suspects]

    @property
    def flagged(self) -> list[dict[str, Any]]:
        """The rows to review (as records), most suspicious first."""
        return [suspect_record(s) for s in self.suspects if s.flagged]

    @property
    def scores(self) -> dict[str, float]:
        """Each row's score by id."""
        return {s.id: s.score for s in self.suspects}

    def in_input_order(self) -> list[dict[str, Any]]:
        """The records in the order the rows were given."""
        by_id = {r["id"]: r for r in self.records}
        return [by_id[i] for i in self.ids] if self.ids else list(self.records)

    def issues(self, by_score: bool = False) -> pandas.DataFrame:
        """A pandas DataFrame shaped like cleanlab's `Datalab.get_issues("label")`: one row per input row, in
        input order (`by_score=True`: lowest label_score, the most suspicious, first), indexed by id, with
        is_label_issue, label_score, given_label, predicted_label, then judge_score and cleanlab_score."""
        import pandas as pd

        recs = self.records if by_score else self.in_input_order()
        frame = pd.DataFrame({col: [r[key] for r in recs] for col, key in _columns(recs).items()})
        frame.index = pd.Index([r["id"] for r in recs], name="id")
        return frame


def _columns(recs: list[dict[str, Any]]) -> dict[str, str]:
    return {**ISSUE_COLUMNS, **SET_COLUMNS} if recs and "missing" in recs[0] else ISSUE_COLUMNS


@overload
def audit(
    data: pandas.DataFrame,
    given_labels: Iterable[Any] | None = None,
    labeler: Labeler | None = None,
    *,
    config: Config | Mapping[str, Any] | str | Path | None = None,
    ids: Iterable[Any] | None = None,
    text_column: str | None = None,
    label_column: str = "label",
    id_column: str | None = None,
    options: AuditOptions | None = None,
    **settings: Any,
) -> pandas.DataFrame: ...


@overload
def audit(  # type: ignore[overload-cannot-match]  # pandas, datasets: Any without their stubs
    data: datasets.Dataset,
    given_labels: Iterable[Any] | None = None,
    labeler: Labeler | None = None,
    *,
    config: Config | Mapping[str, Any] | str | Path | None = None,
    ids: Iterable[Any] | None = None,
    text_column: str | None = None,
    label_column: str = "label",
    id_column: str | None = None,
    options: AuditOptions | None = None,
    **settings: Any,
) -> datasets.Dataset: ...


@overload
def audit(  # type: ignore[overload-cannot-match]
    data: Sequence[str],
    given_labels: Iterable[Any] | None = None,
    labeler: Labeler | None = None,
    *,
    config: Config | Mapping[str, Any] | str | Path | None = None,
    ids: Iterable[Any] | None = None,
    text_column: str | None = None,
    label_column: str = "label",
    id_column: str | None = None,
    options: AuditOptions | None = None,
    **settings: Any,
) -> AuditReport: ...


def audit(
    data: Any,
    given_labels: Iterable[Any] | None = None,
    labeler: Labeler | None = None,
    *,
    config: Config | Mapping[str, Any] | str | Path | None = None,
    ids: Iterable[Any] | None = None,
    text_column: str | None = None,
    label_column: str = "label",
    id_column: str | None = None,
    options: AuditOptions | None = None,
    **settings: Any,
) -> Any:
    """Which given labels are most likely wrong.

    data: texts (then `given_labels` holds one label per text, and an AuditReport comes back), row dicts (an
        AuditReport too; columns as for a DataFrame), or a pandas
        DataFrame / `datasets.Dataset` (texts in `text_column`, default the config's task.text_column; given
        labels in `label_column` unless `given_labels` is passed; ids in `id_column`), which comes back as a
        copy with the audit's columns added: is_label_issue, label_score (P(given label is right)),
        given_label, predicted_label, judge_score, cleanlab_score (a DataFrame's `attrs["llmlabel_audit"]`
        holds the summary). A Dataset's ClassLabel column is read as its label names.
    labeler: a Labeler (its judges, cache and calibration are reused), else one is made from `config` for
        this call. ids: row ids for texts (default "0", "1", ...).
    options / settings: `AuditOptions`, or its fields as keywords (verify, min_precision, classifier,
        features, folds, classifier_weight, seed): `llmlabel audit`'s --verify, --min-precision,
        --no-classifier, --features, --folds..."""
    from llmlabel.pipeline.labeler import Labeler

    opts = _options(options, settings)
    if labeler is None:
        if config is None:
            raise InputError("audit() needs a labeler= or a config=")
        with Labeler(config) as own:
            return audit(data, given_labels, own, ids=ids, text_column=text_column, label_column=label_column,
                         id_column=id_column, options=opts)  # fmt: skip
    table = as_table(data)
    if table is None:
        data = list(data)
        if data and isinstance(data[0], Mapping):  # row dicts: their columns, as a table's
            texts, given, ids = _from_dicts(data, labeler.config, text_column, label_column, id_column, given_labels)
        elif given_labels is None:
            raise InputError("audit() needs given_labels= (one per text) when data is a list of texts")
        else:
            texts, given = data, list(given_labels)
    else:
        texts, given, ids = _from_table(table, labeler.config, text_column, label_column, id_column, given_labels)
    report = _audit(labeler, texts, given, ids, opts)
    return report if table is None else _with_audit(table, report)


def _options(options: AuditOptions | None, settings: dict[str, Any]) -> AuditOptions:
    names = {f.name for f in dataclasses.fields(AuditOptions)} - _CLI_ONLY
    unknown = sorted(set(settings) - names)
    if unknown:
        raise InputError(f"audit() got an unknown option '{unknown[0]}'; use one of {', '.join(sorted(names))}")
    opts = dataclasses.replace(options or AuditOptions(), **settings)
    if not 0.0 < opts.min_precision <= 1.0:
        raise InputError(f"min_precision {opts.min_precision} must be in (0, 1]")
    return opts


def _from_table(
    table: Table,
    cfg: Config,
    text_column: str | None,
    label_column: str,
    id_column: str | None,
    given_labels: Iterable[Any] | None,
) -> tuple[list[Any], list[Any], list[Any] | None]:
    from llmlabel.pipeline.labeler import table_rows

    task = cfg.task
    if text_column is None and "{{" in task.text_column:
        raise InputError("audit() reads one text column: pass text_column= (task.text_column is a template)")
    rows = table_rows(table, cfg, text_column, id_column)
    texts = [r[task.text_column] for r in rows]
    given = list(given_labels) if given_labels is not None else table.label_column(label_column, "label_column")
    row_ids = [r[task.id_column] for r in rows] if rows and task.id_column in rows[0] else None
    return texts, given, row_ids


def _from_dicts(
    rows: list[Mapping[str, Any]],
    cfg: Config,
    text_column: str | None,
    label_column: str,
    id_column: str | None,
    given_labels: Iterable[Any] | None,
) -> tuple[list[Any], list[Any], list[Any] | None]:
    task = cfg.task
    text_col, id_col = text_column or task.text_column, id_column or task.id_column
    if "{{" in text_col:
        raise InputError("audit() reads one text column: pass text_column= (task.text_column is a template)")
    for what, col, needed in (("text_column", text_col, True), ("label_column", label_column, given_labels is None)):
        missing = next((i for i, r in enumerate(rows) if needed and col not in r), None)
        if missing is not None:
            raise InputError(f"row {missing} has no column '{col}' (columns: {', '.join(map(str, rows[missing]))}); "
                             f"pass {what}=")  # fmt: skip
    texts = [r[text_col] for r in rows]
    given = list(given_labels) if given_labels is not None else [r[label_column] for r in rows]
    has_ids = all(r.get(id_col) not in (None, "") for r in rows)
    return texts, given, [r[id_col] for r in rows] if has_ids else None


def _with_audit(table: Table, report: AuditReport) -> Any:
    recs = report.in_input_order()
    if len({r["id"] for r in recs}) != len(recs):
        raise InputError("the rows' ids repeat; give each row its own id (id_column=) or none to number them")
    out = table.with_columns({col: [r[key] for r in recs] for col, key in _columns(recs).items()})
    if table.kind == "pandas":
        out.attrs["llmlabel_audit"] = report.summary
    return out


def _audit(
    labeler: Labeler, texts: list[Any], given: list[Any], ids: Iterable[Any] | None, opts: AuditOptions
) -> AuditReport:
    if len(given) != len(texts):
        raise InputError(f"{len(given)} given labels for {len(texts)} texts; give one per text")
    if not texts:
        raise InputError("no texts to audit")
    task = labeler.config.task
    labels = task.label_names
    check_audit_task(labeler.config, opts.verify)
    multi = task.multi_label
    codes = given_sets(given, labels, "audit()") if multi else given_codes(given, labels, "audit()")
    row_ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(texts))]
    if len(row_ids) != len(texts):
        raise InputError(f"{len(row_ids)} ids for {len(texts)} texts; give one per text")
    rows = [{task.id_column: rid, task.text_column: t} for rid, t in zip(row_ids, texts)]
    if multi:  # each judge answers its own set, blind to the given one (as `llmlabel audit`)
        results = labeler.label(rows, prompt="multilabel")
    else:
        results = labeler.label(rows, prompt="verify" if opts.verify else "label", given_labels=given)
    recs = [r.to_dict() for r in results]
    names: dict[str, None] = {}  # first-seen order, as the command reads them from its judges file
    for rec in recs:
        names.update(dict.fromkeys(rec.get("judges") or {}))
    texts_seen = [t if isinstance(t, str) else "" for t in texts]
    if multi:
        records, summary = score_set_answers(
            row_ids, texts_seen, codes, labels, list(names), recs, opts, task.allow_empty
        )
    else:
        records, summary = score_answers(row_ids, texts_seen, codes, labels, list(names), recs, opts)
    return AuditReport(records, summary, row_ids)
