"""llmlabel: label, audit and distill text datasets with an ensemble of LLM judges.

import llmlabel
with llmlabel.Labeler.from_config("config.yaml") as labeler:
    results = labeler.label(["great phone", "broke in a week"])   # [LabelResult(label=..., ...), ...]
    df = labeler.label(reviews_df, text_column="review")            # a DataFrame (or datasets.Dataset) back
    labeler.label_file("in.csv", "out.jsonl")                       # resumable, like `llmlabel label`
    report = llmlabel.audit(texts, given_labels, labeler=labeler)   # like `llmlabel audit`
    issues = llmlabel.audit(df, labeler=labeler)                    # df + is_label_issue, label_score, ...
student = llmlabel.CandidateDistiller().fit(df["review"], df["label"])  # a scikit-learn classifier
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "AuditOptions",
    "AuditReport",
    "CandidateDistiller",
    "Config",
    "LabelResult",
    "Labeler",
    "Progress",
    "RunOptions",
    "RunResult",
    "audit",
    "load_config",
]

# Lazy: `import llmlabel` (and `llmlabel --help`) must not pay for pydantic, numpy or the HTTP clients.
_WHERE = {
    "Labeler": "llmlabel.pipeline.labeler",
    "LabelResult": "llmlabel.pipeline.labeler",
    "Progress": "llmlabel.pipeline.options",
    "RunOptions": "llmlabel.pipeline.options",
    "RunResult": "llmlabel.pipeline.options",
    "audit": "llmlabel.auditing.api",
    "AuditReport": "llmlabel.auditing.api",
    "AuditOptions": "llmlabel.auditing.audit",
    "CandidateDistiller": "llmlabel.distill.student",
    "load_config": "llmlabel.config",
    "Config": "llmlabel.config",
}

if TYPE_CHECKING:
    from llmlabel.auditing.api import AuditReport, audit
    from llmlabel.auditing.audit import AuditOptions
    from llmlabel.config import Config, load_config
    from llmlabel.distill.student import CandidateDistiller
    from llmlabel.pipeline.labeler import Labeler, LabelResult
    from llmlabel.pipeline.options import Progress, RunOptions, RunResult


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'llmlabel' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(where), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
