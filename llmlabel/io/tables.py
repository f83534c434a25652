"""CSV and Parquet outputs: every column of every record, whatever the first record had, and columns whose
values mix types written without loss (as text where needed) instead of crashing.

Both formats need all columns (and, for Parquet, their types) before the first row is written, while records
arrive as a stream: a first pass spools them to a temporary file (pickled batches: memory stays flat) and
learns the columns, a second writes the file."""

from __future__ import annotations

import math
import os
import pickle
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from llmlabel.errors import InputError
from llmlabel.io.values import dumps, plain, reviver, text_form

BATCH = 10_000
_NESTED = (dict, list, tuple)

# Spreadsheets run a cell that starts with one of these as a formula (=HYPERLINK(...), =cmd|...), so a text
# from the corpus could act on the machine of whoever opens the CSV. Such cells get a leading "'" (the usual
# rule; a spreadsheet shows the text as it was). LLMLABEL_CSV_FORMULAS=keep writes them unchanged.
FORMULAS_ENV = "LLMLABEL_CSV_FORMULAS"
_FORMULA_START = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")  # (and their fullwidth forms)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")  # "-3.5" is a number, not a formula


def escape_formulas() -> bool:
    """Whether CSV outputs escape formula-like cells: yes unless $LLMLABEL_CSV_FORMULAS is `keep` (any other
    value, a typo too, keeps the safe default: it is read when the output is written, after the paid calls)."""
    return os.environ.get(FORMULAS_ENV, "escape").strip().lower() != "keep"


def spreadsheet_safe(v: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: formula-like strings get a leading "'"."""
    if isinstance(v, str) and v and v[0] in _FORMULA_START and not _NUMBER.fullmatch(v):
        return "'" + v
    return v


def flat(v: Any) -> Any:
    """A CSV cell: nested values as JSON text, dates, bytes and decimals in their text form (io.values), NaN
    empty (CSV cells hold text)."""
    if v is None or isinstance(v, (str, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return text_form(v)


def _text(v: Any) -> str | None:
    """Any value as text, losslessly: strings as they are, the rest as JSON (1 -> "1", True -> "true")."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, _NESTED):
        return dumps(v)  # (NaN and dates inside in their text forms)
    p = plain(v)  # a date or bytes: its text form, as in JSONL
    return p if isinstance(p, str) else dumps(p)


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


def _spool(records: Iterable[dict[str, Any]], fh: IO[bytes], typed: Any = None) -> tuple[Columns, int]:
    cols, batch, n = Columns(), [], 0
    for rec in records:
        if typed is not None:
            rec = typed.revived(rec)
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


class Typed:
    """The Arrow types of a Parquet input's columns, for a Parquet output: each value read back from its text
    form (io.values.revive). A column whose values do not all fit its type (an id edited by hand) falls back
    to the inferred type, its values as they came."""

    def __init__(self, schema: Any) -> None:
        self.types = {f.name: f.type for f in schema}
        self.readers = {k: r for k, t in self.types.items() if (r := reviver(t)) is not None}
        self.failed: set[str] = set()

    def revived(self, rec: dict[str, Any]) -> dict[str, Any]:
        if not self.readers:
            return rec
        out = dict(rec)
        for k, read in list(self.readers.items()):
            if k in out:
                try:
                    out[k] = read(out[k])
                except Exception:  # noqa: BLE001 - any value that is not of the type: the column is inferred
                    self.failed.add(k)
                    del self.readers[k]
        return out

    def fields(self) -> dict[str, Any]:
        return {k: t for k, t in self.types.items() if k not in self.failed}


def write_table(tmp: Path, fmt: str, records: Iterable[dict[str, Any]], schema: Any = None) -> int:
    """Write `records` to `tmp` as CSV or Parquet (fmt ".csv" / ".parquet"); returns the row count.
    `schema`: Arrow types for some of the columns (a Parquet input's), kept in a Parquet output."""
    typed = Typed(schema) if schema is not None and fmt == ".parquet" else None
    with tempfile.TemporaryFile(dir=tmp.parent, prefix=".llmlabel-spool-") as fh:
        cols, n = _spool(records, fh, typed)
        if fmt == ".csv":
            _write_csv(tmp, cols, _batches(fh))
        else:
            if not n:
                raise InputError("no rows to write")
            as_text: set[str] = set()
            while True:  # a column whose values do not fit its type (an int beyond 64 bits): again, as text
                fh.seek(0)
                try:
                    _write_parquet(tmp, cols, _batches(fh), typed, as_text)
                    break
                except _Unfit as e:
                    as_text |= e.columns
    return n


class _Unfit(Exception):
    def __init__(self, columns: set[str]) -> None:
        self.columns = columns


def _write_csv(tmp: Path, cols: Columns, batches: Iterable[list[dict[str, Any]]]) -> None:
    import csv

    safe = spreadsheet_safe if escape_formulas() else None
    with open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(cols.kinds), restval="")
        if cols.kinds:
            if safe:
                csv.writer(out).writerow([safe(k) for k in cols.kinds])  # column names come from the input too
            else:
                writer.writeheader()
        for batch in batches:
            if safe:
                writer.writerows({k: safe(flat(v)) for k, v in rec.items()} for rec in batch)
            else:
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


def _write_parquet(
    tmp: Path,
    cols: Columns,
    batches: Iterable[list[dict[str, Any]]],
    typed: Typed | None = None,
    force_text: set[str] | frozenset[str] = frozenset(),
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    given = typed.fields() if typed is not None else {}
    types = {
        k: (given[k], False) if k in given else _arrow_type(k, kinds, cols.samples.get(k))
        for k, kinds in cols.kinds.items()
    }
    # Values of a failed typed column were revived before it failed; unfit ones did not fit: all as text.
    for k in ((typed.failed if typed is not None else set()) | set(force_text)) & set(types):
        types[k] = (pa.string(), True)
    schema = pa.schema([pa.field(k, t) for k, (t, _) in types.items()])
    as_text = [k for k, (_, text) in types.items() if text]
    with pq.ParquetWriter(tmp, schema) as writer:
        for batch in batches:
            if as_text:
                batch = [{**r, **{k: _text(r.get(k)) for k in as_text if k in r}} for r in batch]
            try:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:  # e.g. an int beyond 64 bits
                unfit = {k for k, (t, text) in types.items() if not text and not _fits(batch, k, t)}
                if unfit:
                    raise _Unfit(unfit) from None
                raise InputError(f"cannot write {tmp.name[1:-4]} as Parquet ({e}); write .jsonl or .csv") from None


def _fits(batch: list[dict[str, Any]], k: str, t: Any) -> bool:
    import pyarrow as pa

    try:
        pa.array([r.get(k) for r in batch], type=t)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return False
    return True
