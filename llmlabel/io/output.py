"""Results on disk: an append-only part file while a job runs, then the final file, written atomically."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmlabel.errors import OutputError
from llmlabel.io.files import atomic_path, atomic_write
from llmlabel.io.paths import ledger_path, part_path  # noqa: F401  (re-exported: io.paths names them)
from llmlabel.io.records import from_record, judges_from_record
from llmlabel.io.rows import input_format
from llmlabel.io.tables import write_table
from llmlabel.io.values import dumps, load_schema, no_surrogates
from llmlabel.results import RowResult

PERMANENT = "empty text"  # row errors that a rerun would not fix


class PartFile:
    """JSON lines appended as rows finish, so a kill loses at most the line being written.

    Beside it, `meta` (OUTPUT.part.json) records what the rows belong to (the caller's fingerprint of the input
    and of the settings that change answers), written before the first row, so that a rerun can tell whether
    it may continue. Rows at or past `limit` (an earlier run without --limit) are kept but never output."""

    def __init__(self, path: Path, limit: int | None = None) -> None:
        self.path = path
        self.meta_path = path.with_name(path.name + ".json")
        self.limit = limit
        self.done: set[str] = set()
        self.errored: set[str] = set()  # ids with a failed attempt on file: a later line may supersede it
        self._fh: Any = None
        self._failed: OutputError | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def meta(self) -> dict[str, Any] | None:
        """The recorded fingerprint, or None when there is none (or it cannot be read)."""
        try:
            data = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def discard(self) -> None:
        """Forget an earlier run's rows (its answers stay in the response cache)."""
        self.path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)

    def load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as fh:
            good = 0
            for line in fh:
                rec = _record(line)
                if rec is None:
                    break  # a line cut by a kill, or not one this code wrote: dropped below, the row is redone
                good += len(line)
                if self.limit is not None and rec["_i"] >= self.limit:
                    continue
                err = rec["error"]
                if err is None or err.startswith(PERMANENT):
                    self.done.add(rec["id"])
                else:
                    self.errored.add(rec["id"])
            fh.truncate(good)

    def open(self, meta: dict[str, Any] | None = None) -> None:
        """Open for appending; a new part file first gets `meta` (an existing one keeps its own)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if meta is not None and not self.path.exists():
            atomic_write(self.meta_path, json.dumps(meta))
        # Unbuffered: each row is one write() straight to the OS, so a kill cannot strand rows in a buffer.
        self._fh = open(self.path, "ab", buffering=0)

    def append(self, rec: dict[str, Any]) -> None:
        self._write(line(rec))

    def append_lines(self, lines: list[bytes]) -> None:
        """Several rows (from `line`/`line_with`) in one write (a kill may cut the last line: `load` drops it
        and the row is redone)."""
        if lines:
            self._write(b"".join(lines))

    def _write(self, data: bytes) -> None:
        if self._failed is not None:  # after a failed write, nothing more: a later row would follow a cut one
            raise self._failed
        start = self._fh.tell()
        try:
            view = memoryview(data)
            while view:  # a nearly full disk takes part of a write without an error: the rest, or the error
                view = view[self._fh.write(view) :]
        except OSError as e:
            with contextlib.suppress(OSError):
                self._fh.truncate(start)  # the cut row goes (a rerun redoes it); the rows before stay whole
            self._failed = OutputError(
                f"cannot write {self.path}: {e.strerror or e}; the rows finished before are safe in it: "
                "free some space (or fix the disk) and rerun the same command to continue"
            )
            raise self._failed from None

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None

    def seed(self, meta: dict[str, Any], lines: list[bytes]) -> set[str]:
        """Start a new part file with rows of an earlier run (`error_lines`); returns their ids."""
        atomic_write(self.meta_path, json.dumps(meta))
        atomic_write(self.path, b"".join(lines))
        return self.ids(lines)

    @staticmethod
    def ids(lines: list[bytes]) -> set[str]:
        return {json.loads(x)["id"] for x in lines}

    def error_lines(self) -> list[bytes]:
        """The part-file lines of the rows that ended with an error a rerun could fix, in input order."""
        out = []
        for raw in self._lines():
            if raw.endswith(b'"error":null}\n'):
                continue  # quick: `error` is always a record's last field (RowLabeler.finish)
            rec = json.loads(raw)
            err = rec.get("error")
            if err is not None and not err.startswith(PERMANENT):
                out.append(raw)
        return out

    def finished(self) -> None:
        """The final output is written: the rows and their fingerprint go."""
        self.discard()

    def _lines(self) -> Iterator[bytes]:
        """Raw lines in input order, the last attempt of each row, read back by offset (memory stays flat)."""
        from array import array
        from itertools import islice

        # Typed arrays, not lists: 16 bytes a row, so a million-row job stays within a few dozen MB.
        order, offsets, latest = array("q"), array("q"), {}
        limit, skipped = self.limit, False
        with open(self.path, "rb") as fh:
            off = 0
            for line in fh:
                i = position(line)  # (every line's prefix is checked by `load`)
                if limit is not None and i >= limit:
                    off, skipped = off + len(line), True
                    continue  # a row past --limit, from an earlier run without it
                order.append(i)
                if self.errored:
                    rid = json.loads(line)["id"]
                    if rid in self.errored:
                        latest[rid] = off
                offsets.append(off)
                off += len(line)
        superseded: set[int] = set()
        if latest:
            keep = set(latest.values())
            with open(self.path, "rb") as fh:
                for o in offsets:
                    fh.seek(o)
                    rid = json.loads(fh.readline())["id"]
                    if rid in latest and o not in keep:
                        superseded.add(o)
        with open(self.path, "rb") as fh:
            if not superseded and not skipped and all(map(int.__le__, order, islice(order, 1, None))):
                yield from fh  # already in input order (a warm rerun, one judge at concurrency 1): one pass
                return
            for k in _argsort(order):
                o = offsets[k]
                if o in superseded:
                    continue
                fh.seek(o)
                yield fh.readline()

    def ordered(self) -> Iterator[dict[str, Any]]:
        """Records in input order, without the internal row index."""
        for line in self._lines():
            rec = json.loads(line)
            rec.pop("_i", None)
            yield rec

    def results(self, kind: str | None = None) -> Iterator[RowResult]:
        """The rows as results, in input order (`kind`: the job's; see io.records.from_record). Rows that
        repeat an answer combination share one parsed `judges` mapping (found as `judges_only` finds it): a
        weighted job's rewrite of 5,000 warm rows read its answers in ~half the time."""
        memo: dict[bytes, Any] = {}
        for line in self._lines():
            rec = json.loads(line)
            rec.pop("_i", None)
            raw = _judges_json(line)
            judges = memo.get(raw) if raw is not None else None
            if judges is None:
                judges = judges_from_record(rec.get("judges"))
                if raw is not None:
                    if len(memo) >= 4096:
                        memo.clear()
                    memo[raw] = judges
            yield from_record(rec, kind, judges)

    def judges_only(self) -> Iterator[RowResult]:
        """Each row's judges' answers alone (a result with no other field), in input order, for aggregations that
        need nothing else.

        Rows usually repeat a few answer combinations, so each distinct `judges` JSON is parsed once and its
        answers are one shared mapping: on a warm 5,000-row rerun this is most of the end-of-job aggregation's
        cost. `"judges"` is one of the last two fields (with `"error"`, a string or null) and quotes inside
        strings are escaped, so the last `,"judges":` of a line starts it and it ends at `,"error":` or at the
        record's closing brace."""
        memo: dict[bytes, RowResult] = {}
        for line in self._lines():
            raw = _judges_json(line)
            if raw is None:
                yield RowResult.make("", judges=judges_from_record(json.loads(line).get("judges")))
                continue
            r = memo.get(raw)
            if r is None:
                if len(memo) >= 4096:
                    memo.clear()
                r = memo[raw] = RowResult.make("", judges=judges_from_record(json.loads(raw)))
            yield r

    def positions(self) -> Iterator[int]:
        """The input position of each row `ordered` yields, in the same order."""
        for line in self._lines():
            yield position(line)

    def ordered_raw(self) -> Iterator[bytes]:
        """The same as JSON lines, copied without parsing (the row index, always first, cut out)."""
        for line in self._lines():
            yield unnumbered(line)


def _judges_json(raw: bytes) -> bytes | None:
    """A part-file line's `judges` JSON, cut out without parsing the line (see PartFile.judges_only); None when
    the line has no `judges` field."""
    raw = raw.rstrip()
    start, err = raw.rfind(b',"judges":'), raw.rfind(b',"error":')
    if start < 0:
        return None
    return raw[start + 10 : err if err > start else len(raw) - 1]


# A part-file line is `line(rec)` of a record whose first field is its input position: it starts {"_i":N,
def position(raw: bytes) -> int:
    """A part-file line's input position, read from its prefix without parsing the line."""
    return int(raw[6 : raw.index(b",", 6)])


def unnumbered(raw: bytes) -> bytes:
    """A part-file line as an output line: its input position cut out."""
    return b"{" + raw[raw.index(b",", 6) + 1 :]


def renumbered(raw: bytes, i: int) -> bytes:
    """The same part-file line at input position `i` (a Ray actor numbers rows within its batch)."""
    return b'{"_i":%d' % i + raw[raw.index(b",", 6) :]


def save_rows(path: Path, meta: dict[str, Any], lines: list[bytes]) -> None:
    """Keep part-file lines with their fingerprint (a first line) for a later run; none: remove the file."""
    if not lines:
        path.unlink(missing_ok=True)
        return
    atomic_write(path, (json.dumps(meta) + "\n").encode() + b"".join(lines))


def load_rows(path: Path) -> tuple[dict[str, Any] | None, list[bytes]]:
    """What `save_rows` kept: the fingerprint and the lines (nothing when missing or unreadable)."""
    try:
        with open(path, "rb") as fh:
            meta = json.loads(fh.readline())
            lines = [x for x in fh if _record(x) is not None]
    except (OSError, ValueError):
        return None, []
    return (meta, lines) if isinstance(meta, dict) else (None, [])


def _record(line: bytes) -> dict[str, Any] | None:
    """A part-file line as written by `line`, or None for anything else (cut by a kill, or edited by hand)."""
    if not line.endswith(b"\n") or not line.startswith(b'{"_i":'):
        return None
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    ok = isinstance(rec, dict) and type(rec.get("_i")) is int and isinstance(rec.get("id"), str)
    return rec if ok and isinstance(rec.get("error", ""), (str, type(None))) and "error" in rec else None


def line(rec: dict[str, Any]) -> bytes:
    """A part-file line (values JSON cannot hold, such as dates or NaN, in their text form: io.values)."""
    try:
        return (dumps(rec) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from an input that was not a file (io.values.no_surrogates)
        return (dumps(no_surrogates(rec)) + "\n").encode("utf-8")


def fields_json(fields: dict[str, Any]) -> str:
    """`fields` as JSON members without braces: the common end of many lines (see `line_with`)."""
    return dumps(fields)[1:-1]


def line_with(rec: dict[str, Any], tail: str) -> bytes:
    """line({**rec, **fields}) for tail = fields_json(fields), when rec has none of those keys (same bytes):
    rows that end alike are serialised in part."""
    try:
        return (dumps(rec)[:-1] + "," + tail + "}\n").encode("utf-8")
    except UnicodeEncodeError:  # as in `line`
        return (dumps(no_surrogates(rec))[:-1] + "," + no_surrogates(tail) + "}\n").encode("utf-8")


def _argsort(order: Any) -> Iterable[int]:
    """Positions of an array('q') in stable sorted order. Large jobs use numpy (8 bytes a row, where a list
    of Python ints would take ~36); small ones skip its import (~0.1 s of start-up)."""
    from llmlabel.io.rows import SMALL

    if len(order) < SMALL:
        return sorted(range(len(order)), key=order.__getitem__)
    import numpy as np

    return map(int, np.argsort(np.frombuffer(order, dtype=np.int64), kind="stable"))


def write_jsonl_lines(path: Path, lines: Iterable[bytes]) -> int:
    """Ready JSON lines into a .jsonl output, atomically (the fast path when no row changes)."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for line in lines:
            fh.write(line)
            n += 1
    return n


def write_output(path: Path, records: Iterable[dict[str, Any]], schema: str | None = None) -> int:
    """Write the final file next to its target and rename it into place: never a half-written output.
    `schema`: a Parquet input's column types (io.values.arrow_schema), kept by a Parquet output."""
    fmt = input_format(path, "output")
    n = 0
    with atomic_path(path) as tmp:
        if fmt == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in records:
                    fh.write(dumps(rec, compact=False) + "\n")
                    n += 1
        else:
            n = write_table(tmp, fmt, records, load_schema(schema) if fmt == ".parquet" else None)
    return n
