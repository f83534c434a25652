"""Results on disk: an append-only part file while a job runs, then the final file, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import InputError
from .rows import input_format

PERMANENT = "empty text"  # row errors that a rerun would not fix


def part_path(output: Path) -> Path:
    return output.with_name(output.name + ".part")


def ledger_path(output: Path) -> Path:
    return output.with_name(output.name + ".ledger.json")


class PartFile:
    """JSON lines appended as rows finish, so a kill loses at most the line being written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: set[str] = set()
        self.errored: set[str] = set()  # ids with a failed attempt on file: a later line may supersede it
        self._fh: Any = None

    def load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as fh:
            good = 0
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # a line cut by a kill: dropped below, the row is redone
                try:
                    rec = json.loads(line)
                except ValueError:
                    break
                good += len(line)
                err = rec.get("error")
                if err is None or err.startswith(PERMANENT):
                    self.done.add(rec["id"])
                else:
                    self.errored.add(rec["id"])
            fh.truncate(good)

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, rec: dict[str, Any]) -> None:
        self._fh.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with open(self.path, "rb") as fh:
            while True:
                off = fh.tell()
                line = fh.readline()
                if not line:
                    return
                yield off, json.loads(line)

    def ordered(self, update: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
        """Records in input order, the last attempt of each row, read back by offset (memory stays flat)."""
        from array import array

        import numpy as np

        # Typed arrays, not lists: 16 bytes a row, so a million-row job stays within a few dozen MB.
        order, offsets, latest = array("q"), array("q"), {}
        for off, rec in self.records():
            if rec["id"] in self.errored:
                latest[rec["id"]] = off
            order.append(rec["_i"])
            offsets.append(off)
        idx = np.frombuffer(order, dtype=np.int64) if order else np.zeros(0, dtype=np.int64)
        offs = np.frombuffer(offsets, dtype=np.int64) if offsets else np.zeros(0, dtype=np.int64)
        sort = np.argsort(idx, kind="stable")
        keep_latest = set(latest.values())
        with open(self.path, "rb") as fh:
            pos = 0
            for k in sort:
                fh.seek(int(offs[k]))
                rec = json.loads(fh.readline())
                if rec["id"] in latest and int(offs[k]) not in keep_latest:
                    continue
                if update:
                    rec = update(pos, rec)
                pos += 1
                rec.pop("_i", None)
                yield rec


def _flat(v: Any) -> Any:
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v


def write_output(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write the final file next to its target and rename it into place: never a half-written output."""
    fmt = input_format(path, "output")
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    try:
        if fmt == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in records:
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    n += 1
        elif fmt == ".csv":
            import csv

            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = None
                for rec in records:
                    if writer is None:
                        writer = csv.DictWriter(fh, fieldnames=list(rec), extrasaction="ignore")
                        writer.writeheader()
                    writer.writerow({k: _flat(v) for k, v in rec.items()})
                    n += 1
        else:
            n = _write_parquet(tmp, records)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def _write_parquet(tmp: Path, records: Iterable[dict[str, Any]]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, schema, batch, n = None, None, [], 0

    def flush() -> None:
        nonlocal writer, schema
        rows = [{k: (_flat(v) if k in ("judges", "probs") else v) for k, v in r.items()} for r in batch]
        if schema is None:
            t = pa.Table.from_pylist(rows)
            # Columns that were all null in the first batch become strings, so later values fit.
            schema = pa.schema([pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type) for f in t.schema])
        t = pa.Table.from_pylist(rows, schema=schema)
        if writer is None:
            writer = pq.ParquetWriter(tmp, schema)
        writer.write_table(t)

    try:
        for rec in records:
            batch.append(rec)
            n += 1
            if len(batch) >= 10000:
                flush()
                batch = []
        if batch or writer is None:
            if batch:
                flush()
            else:
                raise InputError("no rows to write")
    finally:
        if writer is not None:
            writer.close()
    return n
