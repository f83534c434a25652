"""Which rows a human should see: the expected value of a human label on each row, and the picks of a round.

A human label is worth most where the model's label is likely wrong (low calibrated confidence, judges that
disagree, an audit's flag) and on rare labels (one fixed error moves a rare label's accuracy most, and its
estimate has the fewest rows). ActiveLab's re-labeling score (cleanlab.multiannotator) is the reference ranking,
offered as its own strategy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from typing import Literal

import numpy as np

from llmlabel.errors import InputError
from llmlabel.review.dataset import Dataset, ModelView
from llmlabel.review.records import ReviewItem

__all__ = ["Strategy", "activelab_priority", "item", "priorities", "random_pick", "ranked_pick"]

Strategy = Literal["targeted", "random", "activelab"]


def _disagreement(ds: Dataset, view: ModelView, i: int) -> tuple[int, int]:
    """(judges whose answer differs from the row's, judges that answered). A taxonomy judge disagrees when its
    path does not start with the path the row reached."""
    lab = view.label[i]
    k = ds.k
    answered = [x for a in ds.results[i].judges.values() if (x := k.judge_key(a)) is not None]
    if k.name == "taxonomy":
        return sum(1 for a in answered if not k.right(lab, a)), len(answered)
    return sum(1 for a in answered if a != lab), len(answered)


def _rarity(ds: Dataset, view: ModelView) -> Callable[[str], tuple[float, str, float]]:
    """A row's rarity from its answer: (rarity, the rare label, its share of rows). One label per row: the
    label's share against uniform (1/K). Multi-label: the rarest label of the set, its share of rows against
    the mean share of a label. Taxonomy: the path's top-level node against uniform over the top level."""
    k = ds.k
    keys = [lab for lab in view.label if lab is not None]
    total = max(len(keys), 1)
    if k.name == "multilabel":
        per = Counter(x for lab in keys for x in k.members(lab))
        base = max(sum(per.values()) / total / max(len(k.labels), 1), 1e-9)

        def multi(lab: str) -> tuple[float, str, float]:
            got = [(per[x] / total, x) for x in k.members(lab)]
            if not got:
                return 0.0, "", 0.0
            share, x = min(got)
            return max(0.0, 1.0 - share / base), x, share

        return multi
    if k.name == "taxonomy":
        tops = Counter(k.path(lab)[0] for lab in keys)
        n_top = len(k.tree.roots) if k.tree is not None else max(len(tops), 1)

        def top(lab: str) -> tuple[float, str, float]:
            x = k.path(lab)[0]
            share = tops[x] / total
            return max(0.0, 1.0 - share * n_top), x, share

        return top
    shares = Counter(keys)
    K = max(len(ds.labels), 1)

    def flat(lab: str) -> tuple[float, str, float]:
        share = shares[lab] / total
        return max(0.0, 1.0 - share * K), lab, share

    return flat


def _p_wrong(ds: Dataset, view: ModelView, i: int) -> tuple[float, str]:
    """The chance the row's answer is wrong, and what it is read from, in words. Multi-label: one minus the
    chance every label's decision is right, from each label's probability (p when the set has it, else 1 - p;
    the labels nearest 0.5 named); a
    taxonomy: one minus the confidence of the path at the depth it reached."""
    conf = float(view.confidence[i])
    k = ds.k
    if ds.audit:
        return 1.0 - conf, f"score {conf:.2f}"
    if k.name == "multilabel" and view.probs[i]:
        probs = view.probs[i] or {}
        chosen = k.members(view.label[i])
        sure = 1.0
        unsure = []
        for lab in k.labels:
            p = float(probs.get(lab, 0.0))
            sure *= p if lab in chosen else 1.0 - p  # the chance this label's decision is right
            if 0.2 < p < 0.8:
                unsure.append((abs(p - 0.5), lab, p))
        words = f"set confidence {sure:.2f}"
        if unsure:
            words += "; unsure of " + ", ".join(f"{lab} ({p:.2f})" for _, lab, p in sorted(unsure)[:3])
        return 1.0 - sure, words
    if k.name == "multilabel":  # no per-label probabilities kept (a CSV without them): the set's confidence
        return 1.0 - conf, f"set confidence {conf:.2f}"
    if k.name == "taxonomy":
        d = len(k.path(view.label[i]))
        words = f"path confidence {conf:.2f} at depth {d}"
        lc = ds.results[i].level_confidence
        if lc is not None and len(lc) > d:
            words += f" (stopped: level {d + 1} at {float(lc[d]):.2f})"
        return 1.0 - conf, words
    return 1.0 - conf, f"confidence {conf:.2f}"


def priorities(ds: Dataset, view: ModelView) -> tuple[np.ndarray, list[str]]:
    """Each row's expected value of a human label, and why, in words.

    value = (P(wrong) + half the share of judges that disagree with it) x (1 + rarity), where P(wrong) is one
    minus the (calibrated) confidence, or an audit's 1 - score, and rarity = 1 - share x K for labels rarer than
    uniform (0 otherwise). A row without a label is worth the most. Multi-label and taxonomy rows read P(wrong)
    and rarity as `_p_wrong` and `_rarity` say."""
    n = len(ds)
    rarity = _rarity(ds, view)
    value = np.zeros(n)
    why: list[str] = []
    for i in range(n):
        lab = view.label[i]
        if lab is None:
            value[i] = 3.0
            why.append("no label: the judges gave no valid answer")
            continue
        p_wrong, words = _p_wrong(ds, view, i)
        parts = [words]
        d, m = _disagreement(ds, view, i)
        dis = d / m if m else 0.0
        if d:
            parts.append(f"{d} of {m} judges disagree")
        rare, rare_lab, share = rarity(lab)
        if rare > 0.25:
            parts.append(f"rare label {rare_lab} ({share:.0%} of rows)")
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

    if not ds.k.single:
        raise InputError(
            f"--strategy activelab ranks rows with one label each; this is a {ds.k.name} task: use --strategy targeted"
        )
    K = len(ds.labels)
    index = {lab: k for k, lab in enumerate(ds.labels)}
    J = max(len(ds.judge_names), 1)
    votes = np.full((len(ds), J), np.nan)
    for i, res in enumerate(ds.results):
        for j, name in enumerate(ds.judge_names):
            lab = None if (a := res.judges.get(name)) is None else a.label
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
