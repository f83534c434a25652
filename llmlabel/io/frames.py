"""In-memory tables in and out: a pandas DataFrame or a Hugging Face `datasets.Dataset` read as rows, and
results written back as columns added to a copy of the same kind of table.

pandas and datasets are optional extras: a table is recognised by its type's module and name, so nothing here
imports either library unless the caller handed over one of its objects (`import llmlabel` stays fast)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llmlabel.errors import InputError

Kind = Literal["pandas", "datasets"]


def table_kind(data: Any) -> Kind | None:
    """ "pandas" for a DataFrame, "datasets" for a Dataset, None for anything else (a list of texts or rows)."""
    cls = type(data)
    mod, name = cls.__module__.split(".")[0], cls.__name__
    if mod == "pandas" and name == "DataFrame":
        return "pandas"
    if mod == "datasets":
        if name == "Dataset":
            return "datasets"
        if name == "DatasetDict":
            raise InputError(f"a DatasetDict holds several splits ({', '.join(data)}); pass one, e.g. ds['train']")
        if name.startswith("Iterable"):
            raise InputError("an IterableDataset streams its rows; pass a Dataset (e.g. Dataset.from_generator)")
    if mod == "pandas" and name == "Series":
        raise InputError("pass a DataFrame (text_column= names the texts) or a list of texts, not a Series")
    return None


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


@dataclass(frozen=True)
class Table:
    """A DataFrame or Dataset being labeled: its kind, the object and its column names."""

    kind: Kind
    data: Any

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in (self.data.columns if self.kind == "pandas" else self.data.column_names)]

    def __len__(self) -> int:
        return len(self.data)

    def column(self, name: str, what: str) -> list[Any]:
        """A column's values as a list (NaN as None); `what` names the argument that chose it, for the error."""
        if name not in self.columns:
            cols = ", ".join(self.columns[:20])
            raise InputError(f"the {self._noun} has no column '{name}' (columns: {cols}); pass {what}=")
        if self.kind == "pandas":
            key = next(c for c in self.data.columns if str(c) == name)  # a DataFrame's names may be numbers
            values = self.data[key].tolist()
        else:
            values = list(self.data[name])
        return [None if _missing(v) else v for v in values]

    def label_column(self, name: str, what: str) -> list[Any]:
        """A column of labels: a Dataset's ClassLabel codes as their names (what a config's task.labels lists)."""
        values = self.column(name, what)
        feature = self.data.features.get(name) if self.kind == "datasets" else None
        names = getattr(feature, "names", None)
        if names is None or type(feature).__name__ != "ClassLabel":
            return values
        return [None if v is None or v < 0 else names[v] for v in values]

    def rows(self) -> list[dict[str, Any]]:
        """Every column of every row (for a text_column template over several columns)."""
        cols = {c: self.column(c, "text_column") for c in self.columns}
        return [dict(zip(cols, vals)) for vals in zip(*cols.values())] if cols else [{} for _ in range(len(self))]

    def with_columns(self, new: Mapping[str, Sequence[Any]]) -> Any:
        """A copy with `new` columns added (a DataFrame keeps its index; the caller's table is left as it was).
        An input column that a new one would overwrite is kept as `NAME_input`, as `llmlabel label` keeps it."""
        clash = {n: f"{n}_input" for n in new if n in self.columns}
        taken = [n for n in clash.values() if n in self.columns or n in new]
        if taken:
            raise InputError(f"the {self._noun} has columns '{taken[0][:-6]}' and '{taken[0]}'; rename one of them")
        if self.kind == "pandas":
            out = self.data.rename(columns=clash) if clash else self.data.copy(deep=False)
            for name, values in new.items():
                out[name] = list(values)
            return out
        import datasets

        ds = self.data.rename_columns(clash) if clash else self.data
        if (
            getattr(ds, "_indices", None) is not None
        ):  # a select()/shuffle() view: lay its rows out before adding columns
            ds = ds.flatten_indices()
        added = datasets.Dataset.from_dict({k: [_arrow_cell(v) for v in vals] for k, vals in new.items()})
        return datasets.concatenate_datasets([ds, added], axis=1)  # one new table, not one per column

    @property
    def _noun(self) -> str:
        return "DataFrame" if self.kind == "pandas" else "Dataset"


def _arrow_cell(v: Any) -> Any:
    """Dicts with row-dependent keys (each judge's answer) cannot share an Arrow struct type: kept as JSON text."""
    return json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, dict) else v


def as_table(data: Any) -> Table | None:
    kind = table_kind(data)
    return None if kind is None else Table(kind, data)


__all__ = ["Kind", "Table", "as_table", "table_kind"]
