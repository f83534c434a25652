"""CSV and Parquet outputs: every column of every record, whatever the first record had, and columns whose
values mix types written without loss (as text where needed) instead of crashing.

Both formats need all columns (and, for Parquet, their types) before the first row is written, while records
arrive as a stream: a first pass spools them to a temporary file (pickled batches: memory stays flat) and
learns the columns, a second writes the file."""

from __future__ import annotations

import json
import pickle
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from llmlabel.errors import InputError

BATCH = 10_000
_NESTED = (dict, list, tuple)


def flat(v: Any) -> Any:
    """A nested value as its JSON text (CSV cells and Parquet string columns hold text)."""
    return json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, _NESTED) else v


def _text(v: Any) -> str | None:
    """Any value as text, losslessly: strings as they are, the rest as JSON (1 -> "1", True -> "true")."""
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, default=str)


class Columns:
    """Every key seen, in first-seen order, with the types of its non-null values. Records repeat a few
    shapes, so each (keys, types) shape is looked at once."""

    def __init__(self) -> None:
        self.kinds: dict[str, set[type]] = {}
        self.samples: dict[str, Any] = {}  # one value of each column, to infer exotic types (dates, bytes)
        self._shapes: set[tuple[tuple[str, ...], tuple[type, ...]]] = set()

    def add(self, rec: dict[str, Any]) -> None:
        shape = (tuple(rec), tuple(map(type, rec.values())))
        if shape in self._shapes:
            return
        if len(self._shapes) < 65536:
            self._shapes.add(shape)
        for k, v in rec.items():
            kinds = self.kinds.setdefault(k, set())
            if v is not None:
                kinds.add(type(v))
                self.samples.setdefault(k, v)


def _spool(records: Iterable[dict[str, Any]], fh: IO[bytes]) -> tuple[Columns, int]:
    cols, batch, n = Columns(), [], 0
    for rec in records:
        cols.add(rec)
        batch.append(rec)
        n += 1
        if len(batch) >= BATCH:
            pickle.dump(batch, fh, protocol=pickle.HIGHEST_PROTOCOL)
            batch = []
    if batch:
        pickle.dump(batch, fh, protocol=pickle.HIGHEST_PROTOCOL)
    fh.seek(0)
    return cols, n


def _batches(fh: IO[bytes]) -> Iterator[list[dict[str, Any]]]:
    while True:
        try:
            yield pickle.load(fh)  # our own temporary file, written just above
        except EOFError:
            return


def write_table(tmp: Path, fmt: str, records: Iterable[dict[str, Any]]) -> int:
    """Write `records` to `tmp` as CSV or Parquet (fmt ".csv" / ".parquet"); returns the row count."""
    with tempfile.TemporaryFile(dir=tmp.parent, prefix=".llmlabel-spool-") as fh:
        cols, n = _spool(records, fh)
        if fmt == ".csv":
            _write_csv(tmp, cols, _batches(fh))
        else:
            if not n:
                raise InputError("no rows to write")
            _write_parquet(tmp, cols, _batches(fh))
    return n


def _write_csv(tmp: Path, cols: Columns, batches: Iterable[list[dict[str, Any]]]) -> None:
    import csv

    with open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(cols.kinds), restval="")
        if cols.kinds:
            writer.writeheader()
        for batch in batches:
            writer.writerows({k: flat(v) for k, v in rec.items()} for rec in batch)


def _arrow_type(name: str, kinds: set[type], sample: Any) -> tuple[Any, bool]:
    """A column's Arrow type, and whether its values must be turned into text first."""
    import pyarrow as pa

    if name in ("candidates", "labels") and kinds == {list}:
        return pa.list_(pa.string()), False  # the labeling's own label lists (other nested values: JSON text)
    if not kinds:
        return pa.string(), False  # null everywhere
    if kinds == {bool}:
        return pa.bool_(), False
    if kinds == {int}:
        return pa.int64(), False
    if kinds <= {int, float}:  # (not bool: True would become 1.0)
        return pa.float64(), False
    if kinds == {str}:
        return pa.string(), False
    if len(kinds) == 1 and not issubclass(next(iter(kinds)), (*_NESTED, bool, int, float, str)):
        try:  # one exotic type (a date, bytes, a decimal): kept as that type
            return pa.infer_type([sample]), False
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    return pa.string(), True  # mixed or nested: text, losslessly


def _write_parquet(tmp: Path, cols: Columns, batches: Iterable[list[dict[str, Any]]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {k: _arrow_type(k, kinds, cols.samples.get(k)) for k, kinds in cols.kinds.items()}
    schema = pa.schema([pa.field(k, t) for k, (t, _) in types.items()])
    as_text = [k for k, (_, text) in types.items() if text]
    with pq.ParquetWriter(tmp, schema) as writer:
        for batch in batches:
            if as_text:
                batch = [{**r, **{k: _text(r.get(k)) for k in as_text if k in r}} for r in batch]
            try:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:  # e.g. an int beyond 64 bits
                raise InputError(f"cannot write {tmp.name[1:-4]} as Parquet ({e}); write .jsonl or .csv") from None
