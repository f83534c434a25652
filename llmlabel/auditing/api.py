"""`llmlabel.audit(texts, given_labels, labeler=...)`: `llmlabel audit` on texts in memory, same scores and flags
(the judges are asked through a Labeler, then scored by `audit.score_answers`, as the command does)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlabel.auditing.audit import AuditOptions, given_codes, score_answers
from llmlabel.config import Config
from llmlabel.errors import InputError


@dataclass(frozen=True)
class AuditReport:
    """records: one per row, most suspicious first (id, text, given_label, suggested_label, score = P(given
    label is right), flagged, judge_score, cleanlab_score, probs, judges); summary: as OUTPUT.summary.json."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]

    @property
    def flagged(self) -> list[dict[str, Any]]:
        """The rows to review, most suspicious first."""
        return [r for r in self.records if r["flagged"]]

    @property
    def scores(self) -> dict[str, float]:
        """Each row's score by id."""
        return {r["id"]: r["score"] for r in self.records}


def audit(
    texts: Sequence[str],
    given_labels: Iterable[Any],
    labeler: Any = None,
    *,
    config: Config | Mapping[str, Any] | str | Path | None = None,
    ids: Iterable[Any] | None = None,
    verify: bool = False,
    min_precision: float = 0.8,
    classifier: bool = True,
    features: str = "tfidf",
    folds: int = 5,
    classifier_weight: float = 1.0,
    seed: int = 0,
) -> AuditReport:
    """Which given labels are most likely wrong. `labeler`: a Labeler (its judges, cache and calibration are
    reused), else one is made from `config` for this call. ids: row ids (default "0", "1", ...). The other
    options are `llmlabel audit`'s (--verify, --min-precision, --no-classifier, --features, --folds...)."""
    from llmlabel.pipeline.labeler import Labeler

    if labeler is None:
        if config is None:
            raise InputError("audit() needs a labeler= or a config=")
        with Labeler(config) as own:
            return audit(texts, given_labels, own, ids=ids, verify=verify, min_precision=min_precision,
                         classifier=classifier, features=features, folds=folds,
                         classifier_weight=classifier_weight, seed=seed)  # fmt: skip
    if not 0.0 < min_precision <= 1.0:
        raise InputError(f"min_precision {min_precision} must be in (0, 1]")
    texts, given = list(texts), list(given_labels)
    if len(given) != len(texts):
        raise InputError(f"{len(given)} given labels for {len(texts)} texts; give one per text")
    if not texts:
        raise InputError("no texts to audit")
    task = labeler.config.task
    labels = task.label_names
    codes = given_codes(given, labels, "audit()")
    row_ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(texts))]
    if len(row_ids) != len(texts):
        raise InputError(f"{len(row_ids)} ids for {len(texts)} texts; give one per text")
    rows = [{task.id_column: rid, task.text_column: t} for rid, t in zip(row_ids, texts)]
    results = labeler.label(rows, prompt="verify" if verify else "label", given_labels=given)
    recs = [r.to_dict() for r in results]
    names: dict[str, None] = {}  # first-seen order, as the command reads them from its judges file
    for rec in recs:
        names.update(dict.fromkeys(rec.get("judges") or {}))
    opts = AuditOptions(
        verify=verify,
        min_precision=min_precision,
        features=features,
        folds=folds,
        classifier=classifier,
        classifier_weight=classifier_weight,
        seed=seed,
    )
    texts_seen = [t or "" for t in texts]
    records, summary = score_answers(row_ids, texts_seen, codes, labels, list(names), recs, opts)
    return AuditReport(records, summary)
