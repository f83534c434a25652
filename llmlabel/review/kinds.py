"""What one row's answer is for each kind of task, as the review loop reads, compares and writes it.

The loop works on one string per row (a *key*), so its sampling, intervals and rounds are the same for every kind:

- one label per row: the label;
- multi-label (`task.multi_label`): the set, its labels in task order joined by "|" (as an output's `label`
  column), the empty set as `(none)`; a row is right when its whole set is (subset accuracy);
- a taxonomy (`task.taxonomy`): the path reached, joined by " > " (`travel > flights`); a row is right when the
  path it reached is the start of the true path (it may stop at a right parent: that is what its confidence,
  the product of the levels taken, is the chance of). `right_at` gives the accuracy at each level.

Human answers are read in the forms people write (a set as `a|b`, `a, b` or a JSON list; a path as `a > b`,
`a/b`, a JSON list, or a node's name when no other node has it) and kept as keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from llmlabel.io.records import from_record
from llmlabel.results import JudgeAnswer, RowResult
from llmlabel.taxonomy import Taxonomy, path_key

__all__ = ["EMPTY_SET", "LabelKind", "kind_for"]

EMPTY_SET = "(none)"  # a multi-label row's empty set, as a key (a blank cell is an unanswered row)


def _listish(v: Any) -> list[str] | None:
    """A list field of an output (CSV and Parquet keep lists as JSON text)."""
    if isinstance(v, str) and v.startswith("["):
        try:
            v = json.loads(v)
        except ValueError:
            return None
    if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
        return list(v)
    return None


@dataclass(frozen=True)
class LabelKind:
    name: Literal["single", "multilabel", "taxonomy"]
    labels: tuple[str, ...]
    tree: Taxonomy | None = None

    @property
    def single(self) -> bool:
        return self.name == "single"

    @property
    def what(self) -> str:
        """What a row's answer is, in words."""
        return {"single": "label", "multilabel": "label set", "taxonomy": "path"}[self.name]

    # -- keys ----------------------------------------------------------------------------------------------------

    def set_key(self, labels: list[str]) -> str:
        order = {lab: k for k, lab in enumerate(self.labels)}
        got = sorted(set(labels), key=lambda x: order.get(x, len(order)))
        return "|".join(got) if got else EMPTY_SET

    def members(self, key: str | None) -> set[str]:
        """A multi-label key's labels."""
        return set() if key in (None, EMPTY_SET) else set(str(key).split("|"))

    def path(self, key: str | None) -> list[str]:
        """A taxonomy key's path."""
        return [] if not key else str(key).split(" > ")

    def model_key(self, rec: dict[str, Any]) -> str | None:
        """The model's answer in a written output row (a CSV's lists as JSON text too; None: no answer)."""
        lists = {k: _listish(rec.get(k)) for k in ("labels", "path")}
        return self.result_key(from_record({**rec, **lists}))

    def result_key(self, r: RowResult) -> str | None:
        """The model's answer in an output row (io.records.read_results; None: no answer)."""
        if self.name == "multilabel":
            got = r.labels
            if got is None:  # a CSV without the list column: the joined `label`
                if r.label is None or r.label == "":
                    return None if r.error else EMPTY_SET
                got = tuple(r.label.split("|"))
            return self.set_key(list(got))
        if self.name == "taxonomy":
            return path_key(list(r.path)) if r.path else None
        return r.label or None

    def judge_key(self, ans: JudgeAnswer | None) -> str | None:
        """A judge's own answer (its `judges` entry) as a key."""
        if ans is None:
            return None
        if self.name == "multilabel":
            return None if ans.labels is None else self.set_key(ans.labels)
        if self.name == "taxonomy":
            p = [x.label for x in ans.levels or ()]
            return path_key([x for x in p if x is not None]) if p and None not in p else None
        return ans.label or None

    def parse(self, text: str) -> str | None:
        """A human's answer as a key, or None when it is not one of this task's."""
        text = text.strip()
        if self.name == "single":
            return text if text in self.labels else None
        if self.name == "taxonomy":
            assert self.tree is not None
            p = self.tree.resolve(text)
            return path_key(p) if p else None
        if text in (EMPTY_SET, "[]"):
            return EMPTY_SET
        got = _listish(text) if text.startswith("[") else None
        parts = got if got is not None else [x.strip() for x in text.replace(",", "|").split("|") if x.strip()]
        fold = {lab.casefold(): lab for lab in self.labels}
        names = [fold.get(x.casefold()) for x in parts]
        if not names or any(n is None for n in names):
            return None
        return self.set_key([n for n in names if n is not None])

    def example(self) -> str:
        """How to write an answer, for error messages."""
        if self.name == "multilabel":
            return f"labels of task.labels joined by '|' (e.g. {'|'.join(self.labels[:2])}), or {EMPTY_SET}"
        if self.name == "taxonomy":
            assert self.tree is not None
            deep = max(self.tree.paths(), key=len)
            return f"a path of task.taxonomy, e.g. {path_key(deep)!r}"
        return f"one of task.labels ({', '.join(self.labels)})"

    # -- right and wrong -------------------------------------------------------------------------------------------

    def right(self, model: str | None, gold: str) -> bool:
        """Whether the model's answer is right by a human's: the same label or set; a path that starts the
        human's (the depth reached right)."""
        if model is None:
            return False
        if self.name == "taxonomy":
            m, g = self.path(model), self.path(gold)
            return g[: len(m)] == m
        return model == gold

    def right_at(self, model: str | None, gold: str, level: int) -> bool:
        """A taxonomy path right at `level` (1 = top): the two paths agree down to it (a row that stopped above
        a level the human's path has is wrong there; one that goes below the human's path is wrong there)."""
        m, g = self.path(model), self.path(gold)
        return model is not None and m[:level] == g[:level]

    @property
    def depth(self) -> int:
        return self.tree.depth if self.tree is not None else 1

    # -- writing ---------------------------------------------------------------------------------------------------

    def write(self, rec: dict[str, Any], key: str) -> None:
        """Put a (human) answer into an output row's fields, as the labeling run writes them."""
        if self.name == "multilabel":
            got = sorted(self.members(key), key=self.labels.index)
            rec["labels"] = got
            rec["label"] = "|".join(got) if got else None
            rec["probs"] = {lab: 1.0 if lab in got else 0.0 for lab in self.labels}
        elif self.name == "taxonomy":
            p = self.path(key)
            rec["path"], rec["depth"], rec["label"] = p, len(p), p[-1]
            rec["level_confidence"] = [1.0] * len(p)
        else:
            rec["label"] = key


def kind_for(task: Any) -> LabelKind:
    """The kind of a config's task (config.Task)."""
    labels = tuple(task.label_names)
    if getattr(task, "taxonomy", None) is not None:
        return LabelKind("taxonomy", labels, Taxonomy.parse(task.taxonomy))
    if getattr(task, "multi_label", False):
        return LabelKind("multilabel", labels)
    return LabelKind("single", labels)
