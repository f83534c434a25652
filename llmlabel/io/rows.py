"""Reading input corpora (CSV, JSONL, Parquet) as a stream of row dicts, with clear errors."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmlabel.errors import InputError
from llmlabel.io.parquet_rows import parquet_batches_rows
from llmlabel.io.values import no_surrogates, text_form

FORMATS = (".csv", ".jsonl", ".parquet")
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # texts of several MB are legal input


def input_format(path: Path, what: str = "input") -> str:
    ext = path.suffix.lower()
    if ext == ".ndjson":
        ext = ".jsonl"
    if ext not in FORMATS:
        raise InputError(f"{path}: unknown {what} extension '{path.suffix}'; use .csv, .jsonl or .parquet")
    return ext


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        # csv.reader and zip: what csv.DictReader does, without its per-row Python overhead. Blank lines are
        # skipped, missing cells are None and extra cells beyond the header are dropped, as there.
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            while header == []:
                header = next(reader, None)
            if header is None:
                return
            _unique_header(path, header)
            width = len(header)
            for cells in reader:
                if len(cells) == width:
                    yield dict(zip(header, cells))
                elif cells:
                    row: dict[str, Any] = dict(zip(header, cells))
                    for name in header[len(cells) :]:
                        row[name] = None
                    yield row
        except UnicodeDecodeError as e:
            # The decoder reads ahead by blocks, so the reader's line count lags: find the real line.
            raise InputError(
                f"{path}: not valid UTF-8 at line {_bad_utf8_line(path)} ({e.reason}); "
                "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            ) from None
        except csv.Error as e:
            raise InputError(f"{path}: malformed CSV at line {reader.line_num}: {e}; fix the quoting") from None


def _unique_header(path: Path, header: list[str], where: str = "the header") -> None:
    """A column named twice would keep only its last cell of each row: refused (unnamed columns, such as
    those of trailing commas, hold nothing to lose by name)."""
    seen: dict[str, int] = {}
    for n, name in enumerate(header, 1):
        if name and name in seen:
            raise InputError(
                f"{path}: {where} names column '{name}' twice (columns {seen[name]} and {n}); "
                "rename or remove one of them"
            )
        seen[name] = n


def _bad_utf8_line(path: Path) -> int:
    """The number of the file's first line that is not valid UTF-8 (a newline byte never ends a UTF-8
    sequence, so lines decode on their own)."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return n
    return 0


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    first = True
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"{path}: line {n} is not valid UTF-8 ({e.reason}); re-encode the file as UTF-8"
                ) from None
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                hint = " (the file looks truncated)" if not raw.endswith(b"\n") else ""
                raise InputError(
                    f"{path}: line {n} is not valid JSON{hint}: {e.msg}; fix or remove that line"
                ) from None
            if not isinstance(obj, dict):
                raise InputError(
                    f'{path}: line {n} is not a JSON object; each line must be one object like {{"text": ...}}'
                )
            if first:  # a key given twice keeps only its last value: refused, as a CSV header naming a column twice
                first = False
                keys = [k for k, _ in json.loads(line, object_pairs_hook=lambda kv: kv)]
                _unique_header(path, keys, f"line {n}")
            if "\\ud" in line or "\\uD" in line:
                obj = no_surrogates(obj)
            yield obj


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: cannot read Parquet ({str(e).splitlines()[0]}); check the file") from None
    yield from parquet_batches_rows(path, pf.iter_batches(batch_size=4096))


def iter_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a corpus file (or of a Hugging Face dataset folder: io.hfdata), streamed; nothing is held in
    memory beyond one batch."""
    from llmlabel.io.hfdata import is_dataset_source, source_rows

    if is_dataset_source(path):
        return source_rows(path)
    p = Path(path)
    fmt = input_format(p)
    if not p.is_file():
        raise InputError(f"input file {p} not found; check the path")
    if p.stat().st_size == 0:
        raise InputError(f"{p} is empty; give a file with a header/rows")
    return {".csv": _csv_rows, ".jsonl": _jsonl_rows, ".parquet": _parquet_rows}[fmt](p)


def row_id(row: dict[str, Any], id_column: str, index: int) -> str:
    """The row's id as text; none (or NaN, a table's missing value): its position. Non-text ids in the text
    form of io.values (a date as ISO 8601, bytes as base64, a list as JSON), as the outputs write them."""
    v = row.get(id_column)
    if no_id(v):
        return str(index)
    return v if isinstance(v, str) else text_form(v)


def no_id(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, float) and v != v)


def scan(
    path: str | Path,
    text_column: str,
    id_column: str,
    limit: int | None = None,
    id_required: bool = False,
    in_shard: Callable[[str], bool] | None = None,
) -> int:
    """Check the whole input before any paid call: columns, unique ids, readable rows. Returns the row count
    (with `in_shard`, the count of the rows whose id it accepts; the checks still cover every row)."""
    from array import array

    hashes = array("q")  # 8 bytes a row, not a set of strings: memory stays flat for large corpora
    n = mine = 0
    has_id = None
    for i, row in enumerate(iter_rows(path)):
        if limit is not None and i >= limit:
            break
        if i == 0:
            cols = list(row)
            if "{{" not in text_column and text_column not in row:
                raise InputError(
                    f"{path}: no column '{text_column}' (columns: {', '.join(map(str, cols[:20]))}); "
                    "set task.text_column in the config"
                )
            has_id = id_column in row
            if id_required and not has_id:
                raise InputError(
                    f"{path}: no id column '{id_column}' (columns: {', '.join(map(str, cols[:20]))}); "
                    "set task.id_column, or remove it to number the rows"
                )
        if has_id:
            hashes.append(hash(row_id(row, id_column, i)))
        if in_shard is not None and in_shard(row_id(row, id_column, i)):
            mine += 1
        n += 1
    if n == 0:
        raise InputError(f"{path} has no rows; give a file with at least one row")
    if has_id:
        _check_unique(path, hashes, id_column, n)
    return n if in_shard is None else mine


SMALL = 200_000  # below this many rows plain Python sorts are cheaper than importing numpy (~0.1 s)


def _repeated(values: Any) -> set[int]:
    """The values that occur more than once in an array('q'): numpy for large arrays (8 bytes a row)."""
    if len(values) < SMALL:
        seen: set[int] = set()
        return {v for v in values if v in seen or seen.add(v)}  # type: ignore[func-returns-value]
    import numpy as np

    h = np.sort(np.frombuffer(values, dtype=np.int64))
    return set(h[1:][h[1:] == h[:-1]].tolist())


def _check_unique(path: str | Path, hashes: Any, id_column: str, n: int) -> None:
    clash = _repeated(hashes)
    if not clash:
        return
    seen: dict[str, tuple[int, bool]] = {}  # equal hashes: compare the ids themselves, to name the first repeat
    for i, row in enumerate(iter_rows(path)):
        if i >= n:
            break
        rid = row_id(row, id_column, i)
        if hash(rid) in clash:
            numbered = no_id(row.get(id_column))  # no id: the row is known by its number
            if rid in seen:
                j, first_numbered = seen[rid]
                if numbered or first_numbered:
                    empty, other = (i, j) if numbered else (j, i)
                    raise InputError(
                        f"{path}: row {empty + 1} has an empty '{id_column}', so it is numbered '{rid}', which "
                        f"row {other + 1} has as its id; fill in the empty ids (or drop the column to number "
                        "every row)"
                    )
                raise InputError(
                    f"{path}: duplicate id '{rid}' at row {i + 1}; ids must be unique "
                    f"(fix the '{id_column}' column or set task.id_column)"
                )
            seen[rid] = (i, numbered)
