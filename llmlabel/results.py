"""The typed data model of a labeling job: a judge's answer, a row's result and the whole-job aggregation's report
(and an audit's row, `Suspect`).

A foundation (no llmlabel import), so that every layer can hold these types: the pipeline builds a `RowResult`
for each row, the ensemble decides its label (`Verdict`) and refits it over the whole job (returning new
results and an `AggregationReport`), and only `io` turns them into output records and back
(io.records.to_record / from_record). One result type carries the three kinds of label a row can have: one
label, a set of labels (a multi-label task) and a path down a taxonomy."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel


class JudgeAnswer(BaseModel):
    """One judge's answer for a row (or for one level of a taxonomy row)."""

    label: str | None = None
    candidates: list[str] | None = None
    labels: list[str] | None = None  # a multi-label judge's set (may be empty; `label` is then None)
    probs: dict[str, float] | None = None  # from logprobs, when the endpoint gives them
    given_label_correct: bool | None = None
    error: str | None = None
    levels: list[JudgeAnswer] | None = None  # a taxonomy row: the judge's answer at each level asked


EMPTY: Mapping[str, Any] = MappingProxyType({})  # a shared, read-only empty mapping (a default)


def _empty() -> Mapping[str, Any]:
    return EMPTY


# The kinds of result a row can hold. Any other job kind (label, candidates, verify) is a one-label result.
MULTILABEL, TAXONOMY = "multilabel", "taxonomy"


@dataclass(frozen=True)
class Verdict:
    """What the ensemble decides for one row from its judges' answers (no label: `error` says why)."""

    label: str | None = None  # one label; a multi-label set joined by "|"; a taxonomy path's deepest node
    confidence: float | None = None
    probs: Mapping[str, float] | None = None  # a distribution over the labels; per-label probabilities (multi-label)
    candidates: tuple[str, ...] = ()
    error: str | None = None
    labels: tuple[str, ...] | None = None  # a multi-label row's set (None: no set decided)
    path: tuple[str, ...] | None = None  # a taxonomy row's nodes, top level first
    level_confidence: tuple[float, ...] | None = None  # each level reached or refused (the last may be refused)

    @staticmethod
    def of(label: str, confidence: float, probs: Mapping[str, float], candidates: tuple[str, ...]) -> Verdict:
        """Verdict(label, confidence, probs, candidates) without the frozen __init__ (a guarded setattr a field):
        combine_row makes one a row, and that __init__ was ~60 of a request's ~9,500 bytecodes (results_model.md)."""
        v = object.__new__(Verdict)
        v.__dict__.update(_NO_VERDICT, label=label, confidence=confidence, probs=probs, candidates=candidates)
        return v


@dataclass(frozen=True)
class RowResult:
    """One row of a job's output: where it came from, its judges' answers and the ensemble's decision.

    Frozen: the whole-job refit and the review loop return new results (`decided`, `dataclasses.replace`).
    `inputs` holds the row's input columns as the output names them (io output_names), in order: the output
    repeats them before its own fields. `asked` is False for a row with nothing to label (its `error` says so)."""

    id: str
    kind: str = "label"  # the job's kind: "multilabel" and "taxonomy" add their fields, any other is one label
    position: int | None = None  # the row's input position (a part file's `_i`)
    inputs: Mapping[str, Any] = field(default_factory=_empty)
    asked: bool = True
    label: str | None = None
    confidence: float | None = None
    probs: Mapping[str, float] | None = None
    candidates: tuple[str, ...] = ()
    judges: Mapping[str, JudgeAnswer] = field(default_factory=_empty)
    error: str | None = None
    labels: tuple[str, ...] | None = None
    path: tuple[str, ...] | None = None
    level_confidence: tuple[float, ...] | None = None
    label_source: str | None = None  # who gave the label when not the model ("human", "given": the review loop)
    extra: Mapping[str, Any] = field(default_factory=_empty)  # fields a later tool added after the output's own

    @property
    def depth(self) -> int | None:
        """How deep a taxonomy row's path goes (None for other kinds)."""
        return None if self.path is None else len(self.path)

    @property
    def label_set(self) -> frozenset[str]:
        """The row's labels as a set: a multi-label row's set, else its one label (or none)."""
        if self.labels is not None:
            return frozenset(self.labels)
        return frozenset() if self.label is None else frozenset((self.label,))

    @property
    def verdict(self) -> Verdict:
        return Verdict(
            self.label,
            self.confidence,
            self.probs,
            self.candidates,
            self.error,
            self.labels,
            self.path,
            self.level_confidence,
        )

    def decided(self, verdict: Verdict, judges: Mapping[str, JudgeAnswer] | None = None) -> RowResult:
        """This row with the ensemble's decision (and, when given, the judges' answers it came from)."""
        # Once a row: copied in place, without evolve's keyword dict and field check (a Verdict's fields are
        # RowResult's, checked at import): 4.2 -> 1.4 us a row (benchmarks/results/results_model.md).
        new = object.__new__(RowResult)
        d = new.__dict__
        d.update(self.__dict__)
        d.update(verdict.__dict__)
        if judges is not None:
            d["judges"] = judges
        return new

    @staticmethod
    def make(id: str, **fields: Any) -> RowResult:
        """RowResult(id, **fields), built as `evolve` builds one: the pipeline makes one a row, and a frozen
        dataclass's __init__ (a guarded setattr a field) took 6x a plain one's, ~20% of a warm rerun's row."""
        return _BLANK.evolve(id=id, **fields)

    def evolve(self, **changes: Any) -> RowResult:
        """A copy with `changes`: dataclasses.replace without re-running the frozen __init__ (see `make`)."""
        # The fields copied in one go (a dict copy, not an insert a field) and checked by count (a name that is
        # no field adds one): `make` 4.1 -> 1.9 us (timeit), a warm 5,000-row job -1.3% instructions (results_model.md).
        fields = self.__dict__.copy()
        fields.update(changes)
        if len(fields) != len(_FIELDS):
            raise TypeError(f"RowResult has no field {sorted(changes.keys() - _FIELDS)[0]!r}")
        new = object.__new__(RowResult)
        object.__setattr__(new, "__dict__", fields)
        return new


_NO_VERDICT = Verdict().__dict__
_FIELDS = frozenset(f.name for f in dataclasses.fields(RowResult))
_BLANK = RowResult("")
if not _FIELDS.issuperset(f.name for f in dataclasses.fields(Verdict)):  # `decided` copies them as RowResult's
    raise TypeError("every Verdict field must be a RowResult field")


@dataclass(frozen=True)
class JudgeFit:
    """What the whole-job fit learned about one judge (which fields depends on the method)."""

    weight: float | None = None  # weighted vote, majority with gold
    accuracy: float | None = None  # Dawid-Skene
    confusion: Mapping[str, Mapping[str, float]] | None = None  # Dawid-Skene: true label -> answered label -> p
    coverage: float | None = None  # Dawid-Skene over candidate sets: how often the true label is in its set
    mean_label_accuracy: float | None = None  # multi-label Dawid-Skene, averaged over the labels


@dataclass(frozen=True)
class OneLabel:
    """A single judge that answered one label to most rows (ensemble.judges.one_label)."""

    judge: str
    label: str
    share: float
    rows: int


@dataclass(frozen=True)
class AggregationReport:
    """What the whole-job aggregation (ensemble.combine.refit) did: the ledger's `quality` of a run.

    Fields left None did not apply (an empty report: no row to fit)."""

    method: str | None = None
    multi_label: bool = False
    per_level: bool = False  # a taxonomy: each level was combined as it was asked
    gold_rows: int | None = None
    left_out: tuple[str, ...] = ()  # judges left out as uninformative
    rows_only_left_out: int = 0  # rows only left-out judges answered (a cascade stopped on them)
    judges: Mapping[str, JudgeFit] | None = None
    priors: Mapping[str, float] | None = None  # Dawid-Skene's label shares
    fallback: str | None = None  # why the method asked for was not the one used
    thresholds: Mapping[str, float] | None = None  # multi-label: per-label thresholds fitted on gold rows
    one_label: OneLabel | None = None
    confidence_calibrated_on: int | None = None  # gold rows the confidences were recalibrated on
    batch_calibrated: tuple[str, ...] = ()  # judges whose distributions were divided by their mean over the job
    batch_too_few: Mapping[str, int] | None = None  # judges with batch_calibration left as they were: their rows
    # the batch-calibrated judges' content-free distributions (what a later refit needs to decide as this one did)
    batch_content_free: Mapping[str, Mapping[str, float]] | None = None
    content_free_undone: tuple[str, ...] = ()  # judges whose content-free calibration was undone (it over-corrected)


@dataclass(frozen=True)
class Suspect:
    """One row of an audit's result, as `llmlabel audit` scored it (io.records.suspect_record makes it an output
    record). score: P(the given label, or set, is right); the ranks count from 1, most suspicious first; the
    cleanlab fields are None when the classifier did not run. A multi-label audit also fills the sets: the
    given and suggested labels, and, per flagged (row, label) pair, P(the given set is wrong about it)."""

    id: str
    text: str
    given_label: str  # a multi-label audit: the set joined by "|", as `llmlabel label` writes a set's `label`
    suggested_label: str
    score: float
    flagged: bool
    judge_score: float
    judge_rank: int
    judge_flagged: bool
    cleanlab_score: float | None
    cleanlab_rank: int | None
    cleanlab_issue: bool | None
    probs: dict[str, float]
    judges: dict[str, Any]  # each judge's answer record, by judge name
    error: str | None = None
    given_labels: list[str] | None = None  # the multi-label fields: None in a single-label audit
    suggested_labels: list[str] | None = None
    missing: dict[str, float] | None = None  # labels that apply though the given set lacks them
    extra: dict[str, float] | None = None  # labels the given set has though they do not apply
    judge_suspects: list[str] | None = None
    cleanlab_suspects: list[str] | None = None

    @property
    def multi_label(self) -> bool:
        return self.given_labels is not None
