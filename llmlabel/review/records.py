"""The review loop's typed data: a row picked for a human, and a human's answer to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Pick = Literal["validation", "targeted"]


@dataclass(frozen=True)
class ReviewItem:
    """One row to show a human. `pick` says whether it belongs to the seeded random validation sample (the
    unbiased estimate reads only these) or was ranked for the value of its human label; `why` says it in words."""

    id: str
    text: str
    label: str | None  # the model's aggregated label (the suggestion shown to the reviewer)
    confidence: float | None
    pick: Pick
    why: str
    priority: float = 0.0  # expected value of a human label; higher first (validation rows: 0)
    given_label: str | None = None  # an audit's existing label, shown beside the suggestion
    probs: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HumanAnswer:
    """A human's label for one row, from a review sheet or a Label Studio annotation."""

    id: str
    label: str
    annotator: str | None = None  # who answered (Label Studio user email or id, a sheet's column)
    source: Literal["sheet", "labelstudio"] = "sheet"
