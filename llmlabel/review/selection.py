"""Which rows a human should see: the expected value of a human label on each row, and the picks of a round.

A human label is worth most where the model's label is likely wrong (low calibrated confidence, judges that
disagree, an audit's flag) and on rare labels (one fixed error moves a rare label's accuracy most, and its
estimate has the fewest rows). ActiveLab's re-labeling score (cleanlab.multiannotator) is the reference ranking,
offered as its own strategy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Literal

import numpy as np

from llmlabel.errors import InputError
from llmlabel.review.dataset import Dataset, ModelView
from llmlabel.review.records import ReviewItem

__all__ = ["Strategy", "activelab_priority", "item", "priorities", "random_pick", "ranked_pick"]

Strategy = Literal["targeted", "random", "activelab"]


def _disagreement(ds: Dataset, view: ModelView, i: int) -> tuple[int, int]:
    """(judges whose label differs from the row's label, judges that answered)."""
    lab = view.label[i]
    js = ds.records[i].get("judges") or {}
    answered = [a.get("label") for a in js.values() if isinstance(a, dict) and a.get("label")]
    return sum(1 for a in answered if a != lab), len(answered)


def priorities(ds: Dataset, view: ModelView) -> tuple[np.ndarray, list[str]]:
    """Each row's expected value of a human label, and why, in words.

    value = (P(wrong) + half the share of judges that disagree with it) x (1 + rarity), where P(wrong) is one
    minus the (calibrated) confidence, or an audit's 1 - score, and rarity = 1 - share x K for labels rarer than
    uniform (0 otherwise). A row without a label is worth the most."""
    n, K = len(ds), max(len(ds.labels), 1)
    shares = Counter(lab for lab in view.label if lab is not None)
    total = max(sum(shares.values()), 1)
    value = np.zeros(n)
    why: list[str] = []
    for i in range(n):
        lab = view.label[i]
        if lab is None:
            value[i] = 3.0
            why.append("no label: the judges gave no valid answer")
            continue
        p_wrong = 1.0 - float(view.confidence[i])
        parts = [f"{'score' if ds.audit else 'confidence'} {view.confidence[i]:.2f}"]
        d, m = _disagreement(ds, view, i)
        dis = d / m if m else 0.0
        if d:
            parts.append(f"{d} of {m} judges disagree")
        share = shares[lab] / total
        rare = max(0.0, 1.0 - share * K)
        if rare > 0.25:
            parts.append(f"rare label {lab} ({share:.0%} of rows)")
        v = (p_wrong + 0.5 * dis) * (1.0 + rare)
        if ds.audit and ds.flagged[i]:
            parts.insert(0, "flagged by the audit")
            v += 1.0
        value[i] = v
        why.append("; ".join(parts))
    return value, why


def activelab_priority(ds: Dataset, view: ModelView) -> np.ndarray:
    """1 - ActiveLab's score (Goh et al. 2023; cleanlab.multiannotator.get_active_learning_scores), the judges as
    annotators and the model's distribution as the classifier: higher = re-label first."""
    from cleanlab.multiannotator import get_active_learning_scores

    K = len(ds.labels)
    index = {lab: k for k, lab in enumerate(ds.labels)}
    J = max(len(ds.judge_names), 1)
    votes = np.full((len(ds), J), np.nan)
    for i, rec in enumerate(ds.records):
        js = rec.get("judges") or {}
        for j, name in enumerate(ds.judge_names):
            lab = (js.get(name) or {}).get("label") if isinstance(js.get(name), dict) else None
            if lab in index:
                votes[i, j] = index[lab]
    # Rows no judge answered get the model's label (or the first) as one annotation: ActiveLab needs one a row.
    for r in np.flatnonzero(np.isnan(votes).all(axis=1)):
        votes[r, 0] = index.get(view.label[int(r)] or "", 0)
    probs = np.full((len(ds), K), 1.0 / K)
    for i, p in enumerate(view.probs):
        if p:
            row = np.array([max(float(p.get(lab, 0.0)), 1e-6) for lab in ds.labels])
            probs[i] = row / row.sum()
    import pandas as pd

    try:
        scores, _ = get_active_learning_scores(pd.DataFrame(votes), probs)
    except (ValueError, AssertionError) as e:
        raise InputError(f"--strategy activelab cannot score this output ({e}); use --strategy targeted") from None
    return 1.0 - np.asarray(scores, dtype=float)


def item(ds: Dataset, view: ModelView, i: int, pick: str, why: str, priority: float = 0.0) -> ReviewItem:
    """Row i as a ReviewItem: for an audit, the judges' suggestion with the given label beside it."""
    if ds.audit:
        return ReviewItem(
            id=ds.ids[i],
            text=ds.texts[i],
            label=ds.suggested[i],
            confidence=float(view.confidence[i]),
            pick=pick,  # type: ignore[arg-type]
            why=why,
            priority=round(priority, 6),
            given_label=view.label[i],
            probs=dict(view.probs[i] or {}),
        )
    return ReviewItem(
        id=ds.ids[i],
        text=ds.texts[i],
        label=view.label[i],
        confidence=round(float(view.confidence[i]), 4) if view.label[i] is not None else None,
        pick=pick,  # type: ignore[arg-type]
        why=why,
        priority=round(priority, 6),
        probs=dict(view.probs[i] or {}),
    )


def ranked_pick(value: np.ndarray, exclude: Collection[int], k: int, rng: np.random.Generator) -> list[int]:
    """The k rows of highest value outside `exclude`; ties in a seeded random order."""
    if k <= 0:
        return []
    tie = rng.random(len(value))
    order = np.lexsort((tie, -value))
    ex = set(exclude)
    return [int(i) for i in order if int(i) not in ex][:k]


def random_pick(pool: list[int], k: int, rng: np.random.Generator) -> list[int]:
    """A simple random sample of k rows of `pool` (all of them when k >= its size), in a seeded order."""
    if k <= 0 or not pool:
        return []
    pool = sorted(pool)
    take = rng.choice(len(pool), size=min(k, len(pool)), replace=False)
    return [pool[int(t)] for t in take]
