"""Labeling a taxonomy top-down: one level at a time, the judges' answers combined per level.

A row starts at the top level. At each level every judge is asked to choose among the children of the node
reached so far; their answers are combined by the same soft vote as a flat row (`combine_row`: vote shares,
or logprob distributions, weighted by judge weight). The winning child is taken when its combined confidence
reaches `task.taxonomy_threshold`; below it the row stops at the parent (the top level is always taken: a
row gets at least a top-level node). A node with a single child needs no question: it is taken at
confidence 1. The row's confidence is the product of its taken levels' confidences (the chance, by the
judges' own account, that the whole path is right)."""

from __future__ import annotations

import math

from llmlabel.ensemble.combine import combine_row
from llmlabel.llm.prompts import taxonomy_kind
from llmlabel.results import JudgeAnswer, Verdict
from llmlabel.taxonomy import Taxonomy


class Descent:
    """One row's walk down the tree. `kind` is the next question to ask (None: done); `take` gives it the
    judges' answers to that question. Replaying the same answers gives the same walk."""

    def __init__(self, tax: Taxonomy, threshold: float, weights: dict[str, float] | None = None) -> None:
        self.tax, self.threshold, self.weights = tax, threshold, weights
        self.path: tuple[str, ...] = ()
        self.confidence: list[float] = []  # each level reached or refused (the last may be below threshold)
        self.judges: dict[str, list[JudgeAnswer]] = {}  # each judge's answer at each level asked
        self.chosen: Verdict | None = None  # the vote that chose the deepest node taken
        self.error: str | None = None
        self.done = False
        self._settle()

    def _settle(self) -> None:
        while not self.done:
            kids = self.tax.kids(self.path)
            if not kids:
                self.done = True
            elif len(kids) == 1:  # nothing to choose
                self.path += (kids[0],)
                self.confidence.append(1.0)
                self.chosen = None
            else:
                return

    @property
    def kind(self) -> str | None:
        return None if self.done else taxonomy_kind(self.path, self.tax.kids(self.path))

    def take(self, answers: dict[str, JudgeAnswer]) -> None:
        kids = self.tax.kids(self.path)
        for name, a in answers.items():
            self.judges.setdefault(name, []).append(a)
        agg = combine_row(answers, kids, "label", self.weights)
        if agg.label is None or agg.confidence is None:
            where = " > ".join(self.path) or "the top level"
            self.error, self.done = f"at {where}: {agg.error}", True
            return
        self.confidence.append(agg.confidence)
        if self.path and agg.confidence < self.threshold:
            self.done = True  # unsure: stop at the parent
            return
        self.path += (agg.label,)
        self.chosen = agg
        self._settle()

    def verdict(self) -> Verdict:
        """The row's decision: the path taken, its deepest node as the label."""
        depth = len(self.path)
        kept = self.confidence[:depth]
        label = self.path[-1] if self.path else None
        conf = round(math.prod(kept), 4) if kept else None
        probs = self.chosen.probs if self.chosen else ({label: 1.0} if label is not None else None)
        cands = self.chosen.candidates if self.chosen else ((label,) if label is not None else ())
        return Verdict(
            label=label,
            confidence=conf,
            probs=probs,
            candidates=cands,
            error=self.error,
            path=self.path,
            level_confidence=tuple(self.confidence),
        )

    def answers(self) -> dict[str, JudgeAnswer]:
        """Each judge's answers for the row: its deepest level's label, its first error and every level's answer."""
        return {
            name: JudgeAnswer(label=got[-1].label, error=next((a.error for a in got if a.error), None), levels=got)
            for name, got in self.judges.items()
        }


def replay(
    tax: Taxonomy, threshold: float, weights: dict[str, float] | None, answers: dict[str, list[JudgeAnswer]]
) -> Descent:
    """The walk that `answers` (each judge's answers, level by level, as a Descent collected them) make."""
    d = Descent(tax, threshold, weights)
    level = 0
    while d.kind is not None:
        got = {n: a[level] for n, a in answers.items() if level < len(a)}
        if not got:
            break
        d.take(got)
        level += 1
    return d
