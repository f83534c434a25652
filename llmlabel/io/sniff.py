"""Guessing a corpus's text, id and label columns from a sample of its rows (for `llmlabel init`).

The guesses are plain rules a user can check in the written config: the text column is the one of longest
free text (a familiar name wins among the long ones), the id column a familiar name (or `*_id`) whose values
are unique and non-empty, the label column a familiar name with few distinct values."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from llmlabel.errors import InputError

TEXT_NAMES = (
    "text", "content", "body", "review", "sentence", "message", "comment", "document", "tweet", "question",
    "utterance", "description", "abstract", "query", "prompt", "title", "summary",
)  # fmt: skip
ID_NAMES = ("id", "idx", "uid", "uuid", "guid", "key", "row_id", "doc_id")
LABEL_NAMES = (
    "label", "labels", "class", "category", "target", "sentiment", "intent", "topic", "tag", "gold", "y",
    "annotation", "coarse_label", "fine_label", "label_text",
)  # fmt: skip
MAX_LABELS = 200  # more distinct values than this is not a label set (CLINC150 has 150 intents)
LABEL_ROWS = 100_000  # rows read for the label set: a sample of a file sorted by label would miss most labels


@dataclass
class ColumnStats:
    name: str
    values: int = 0  # non-empty values
    texts: int = 0  # of which strings (that are not numbers)
    chars: int = 0  # total length of the strings
    distinct: set[str] = field(default_factory=set)
    repeated: bool = False

    @property
    def mean_chars(self) -> float:
        return self.chars / self.texts if self.texts else 0.0

    def add(self, v: Any) -> None:
        if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            return
        self.values += 1
        if isinstance(v, str) and not _number(v):  # CSV cells are all strings: "3.5" is a number
            self.texts += 1
            self.chars += len(v)
        key = str(v)
        if key in self.distinct:
            self.repeated = True
        elif len(self.distinct) <= 100_000:
            self.distinct.add(key)


def _number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Guess:
    """What `llmlabel init` read from a sample: the columns it chose, and why (for the config's comments)."""

    rows: int  # rows sampled
    columns: list[str]
    text_column: str
    text_why: str
    id_column: str | None
    label_column: str | None
    labels: list[str]  # the label column's values, sorted (empty without a label column)
    label_rows: int = 0  # rows read for the label set (the sample, and more)
    note: str | None = None  # why a column named like labels was not taken


def _named(name: str, names: tuple[str, ...]) -> int:
    """How well a column name matches familiar names: 2 exactly (any case), 1 as a word in it, 0 not."""
    low = name.lower().strip()
    if low in names:
        return 2
    words = low.replace("-", "_").replace(" ", "_").split("_")
    return 1 if any(w in names for w in words if w) else 0


def guess_columns(
    rows: Iterable[dict[str, Any]], sample: int, label_column: str | None = None, label_rows: int = LABEL_ROWS
) -> Guess:
    """The text, id and label columns of the first `sample` rows; the label set from the first `label_rows`.
    `label_column` names the label column (checked to exist) instead of guessing it; "" means there is none."""
    stats: dict[str, ColumnStats] = {}
    n = 0
    rows = iter(rows)
    for row in islice(rows, sample):
        n += 1
        for k, v in row.items():
            st = stats.get(str(k))
            if st is None:
                st = stats[str(k)] = ColumnStats(str(k))
            st.add(v)
    if n == 0:
        raise InputError("the input has no rows; give a file with a header and rows")
    columns = list(stats)

    def looks_like_label(st: ColumnStats) -> bool:
        # One value in the sample may be a file sorted by label: the label set is read past the sample below.
        return 1 <= len(st.distinct) <= min(MAX_LABELS, max(2, n // 2)) and st.repeated and st.mean_chars <= 40

    label: ColumnStats | None = None
    note = None
    if label_column:
        if label_column not in stats:
            raise InputError(f"no column '{label_column}' (columns: {', '.join(columns[:20])}); check --label-column")
        label = stats[label_column]
    elif label_column is None:
        named = sorted((st for st in stats.values() if _named(st.name, LABEL_NAMES) and looks_like_label(st)),
                       key=lambda st: -_named(st.name, LABEL_NAMES))  # fmt: skip
        label = named[0] if named else None
        if label is None:
            other = [st for st in stats.values() if _named(st.name, LABEL_NAMES) == 2]
            if other:
                note = (
                    f"column '{other[0].name}' has {len(other[0].distinct)} distinct values in {n:,} rows, too "
                    "many or too long for a label set (several labels in one cell?)"
                )

    # Free text: mostly strings, mostly distinct (a label or category column repeats a few values).
    texts = [
        st
        for st in stats.values()
        if st is not label and st.texts >= 0.9 * max(st.values, 1) and st.texts and len(st.distinct) >= 0.5 * st.values
    ]
    if not texts:
        raise InputError(
            f"no column of free text among {', '.join(columns[:20])}; set task.text_column in the written config"
        )
    longest = max(texts, key=lambda st: st.mean_chars)
    # A familiar name wins when its texts are at least a third as long as the longest (title vs body: body).
    familiar = [st for st in texts if _named(st.name, TEXT_NAMES) and st.mean_chars >= longest.mean_chars / 3]
    text = max(familiar, key=lambda st: (_named(st.name, TEXT_NAMES), st.mean_chars)) if familiar else longest
    why = f"mean {text.mean_chars:.0f} characters" + (", the longest text" if text is longest else "")

    ids = [
        st
        for st in stats.values()
        if st is not text and st is not label and st.values == n and not st.repeated and _id_name(st.name)
    ]
    ident = max(ids, key=lambda st: _id_name(st.name)) if ids else None
    read = n
    if label is not None:
        for row in islice(rows, max(0, label_rows - n)):
            label.add(row.get(label.name))
            read += 1
    labels = sorted(label.distinct) if label is not None else []
    if label is not None and len(labels) > MAX_LABELS:
        why = f"column '{label.name}' has {len(labels)} distinct values in {read:,} rows; too many for a label set"
        if label_column:
            raise InputError(f"{why}; name another with --label-column, or give --labels")
        label, labels, note = None, [], f"{why}: several labels in one cell?"
    elif label is not None and len(labels) < 2 and not label_column:
        note = f"column '{label.name}' holds one value ({labels[0]!r}) in {read:,} rows"
        label, labels = None, []
    return Guess(
        rows=n,
        columns=columns,
        text_column=text.name,
        text_why=why,
        id_column=ident.name if ident else None,
        label_column=label.name if label else None,
        labels=labels,
        label_rows=read,
        note=note,
    )


def _id_name(name: str) -> int:
    low = name.lower()
    if low in ID_NAMES:
        return 3
    if low.endswith(_ID_SUFFIXES) or low.startswith(("id_", "id-", "id ")):
        return 2
    return 1 if low.endswith(("_no", " no", "_num", "_number", " number", "_key", "_uuid")) else 0


_ID_SUFFIXES = ("_id", "-id", " id", "_uid", "_guid")
