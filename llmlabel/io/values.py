"""Input values that JSON cannot hold as they are: Parquet's timestamps, dates, times, durations, binary and
decimals, and NaN / infinity (which JSON has no word for). Each has one faithful text form, used in the part
file, JSONL and CSV outputs, and in prompts; a Parquet output turns them back into the input's Arrow types
(`arrow_schema` records them, `revive` reads the text form back).

    datetime / date / time   ISO 8601 text ("2024-01-02T03:04:05.123456+00:00")
    timedelta                seconds, a number (12.5)
    bytes                    base64 text
    Decimal                  its exact decimal text ("1.10")
    NaN, +-infinity          null
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

_SAFE = (str, int, type(None))  # (bool is an int)


def plain(v: Any) -> Any:
    """`v` with every value JSON cannot hold replaced by its text form (nested lists and dicts too)."""
    if isinstance(v, _SAFE):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k if isinstance(k, str) else text_form(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, Decimal):
        return str(v) if v.is_finite() else None
    item = getattr(v, "item", None)  # numpy scalars (a DataFrame's rows through the Python API)
    if callable(item) and type(v).__module__ == "numpy":
        return plain(item())
    if hasattr(v, "tolist") and type(v).__module__ == "numpy":
        return plain(v.tolist())
    return str(v)


def _default(v: Any) -> Any:
    out = plain(v)
    if out is v:  # plain gives back what it cannot turn into JSON: never loop
        return str(v)
    return out


# allow_nan=False: a NaN raises instead of writing `NaN` (not JSON); `dumps` then writes the text form.
_FAST = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default).encode
_SPACED = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_default).encode


def dumps(v: Any, compact: bool = True) -> str:
    """`v` as JSON text, always valid JSON (the value types above in their text forms)."""
    enc = _FAST if compact else _SPACED
    try:
        return enc(v)
    except ValueError:  # a NaN or an infinity somewhere: rare, so the value is walked only then
        return enc(plain(v))


def text_form(v: Any) -> str:
    """Any value as one line of text (a CSV cell, a non-string text to label): strings as they are, nested
    values and the types above as JSON, other scalars as Python writes them (5, 1.5, True)."""
    if isinstance(v, str):
        return v
    p = plain(v)
    if isinstance(p, str):
        return p
    if isinstance(p, (dict, list)):
        return dumps(p)
    return "" if p is None else str(p)


def json_field(v: Any) -> Any:
    """An output's field as read back: CSV and Parquet outputs store judges, probs, candidates and label sets
    as JSON text, decoded here (None where that text is not JSON); other values as they are."""
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return None
    return v


# -- Parquet inputs: their Arrow types, kept for a Parquet output ------------------------------------------------


def arrow_schema(path: Path, names: Callable[[list[str]], list[str]] | None = None) -> str | None:
    """A Parquet input's Arrow schema, its columns renamed by `names` (as the output names them), serialised
    for a part file's meta (None for other inputs)."""
    if path.suffix.lower() != ".parquet":
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path).remove_metadata()
    except Exception:  # noqa: BLE001 - the input check reports unreadable files
        return None
    if names is not None:
        schema = pa.schema([f.with_name(n) for f, n in zip(schema, names(schema.names))])
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def load_schema(text: str | None) -> Any:
    """What `arrow_schema` wrote, as a pyarrow Schema (None when absent or unreadable)."""
    if not text:
        return None
    import pyarrow as pa

    try:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
    except Exception:  # noqa: BLE001 - a meta file edited by hand: types are inferred instead
        return None


def reviver(t: Any) -> Callable[[Any], Any] | None:
    """A function reading a value's text form (as `plain` wrote it, or the row's id text) back as a Python
    value of the Arrow type `t` (it raises ValueError, TypeError, ... on one that is not); None where values
    need nothing (strings, booleans, and containers of them). Built once per column: it runs on every row."""
    import pyarrow as pa

    def nullable(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
        return lambda v: None if v is None else f(v)

    if pa.types.is_timestamp(t):
        return nullable(_timestamp(t))
    if pa.types.is_date(t):
        return nullable(lambda v: v if isinstance(v, dt.date) else dt.date.fromisoformat(v))
    if pa.types.is_time(t):
        return nullable(lambda v: v if isinstance(v, dt.time) else dt.time.fromisoformat(v))
    if pa.types.is_duration(t):
        return nullable(lambda v: v if isinstance(v, dt.timedelta) else dt.timedelta(seconds=float(v)))
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return nullable(lambda v: v if isinstance(v, bytes) else base64.b64decode(v, validate=True))
    if pa.types.is_decimal(t):
        return nullable(lambda v: Decimal(v) if isinstance(v, (str, int)) else v)
    if pa.types.is_integer(t):
        return nullable(_integer)
    if pa.types.is_floating(t):
        return nullable(lambda v: float(v) if isinstance(v, str) else v)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        item = reviver(t.value_type)
        return None if item is None else nullable(lambda v: [item(x) for x in v])
    if pa.types.is_struct(t):
        fields = [(t.field(k).name, reviver(t.field(k).type)) for k in range(t.num_fields)]
        if all(f is None for _, f in fields):
            return None
        return nullable(lambda v: {n: (f(v.get(n)) if f else v.get(n)) for n, f in fields})
    if pa.types.is_map(t):
        key, val = reviver(t.key_type) or _same, reviver(t.item_type) or _same
        return nullable(lambda v: [(key(k), val(x)) for k, x in v])
    if pa.types.is_dictionary(t):
        return reviver(t.value_type)
    return None


def _same(v: Any) -> Any:
    return v


def _integer(v: Any) -> Any:
    if isinstance(v, bool):
        raise TypeError(f"not an integer: {v!r}")
    return int(v) if isinstance(v, str) else v


def _timestamp(t: Any) -> Callable[[Any], Any]:
    pd: Any = None
    if t.unit == "ns":  # datetime holds microseconds: pandas keeps the nanoseconds
        import importlib

        try:
            pd = importlib.import_module("pandas")
        except ImportError:
            pass

    def read(v: Any) -> Any:
        if pd is not None and isinstance(v, str):
            ts = pd.Timestamp(v)
            return ts.tz_localize("UTC") if t.tz is not None and ts.tzinfo is None else ts
        d = v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(v)
        if t.tz is not None and d.tzinfo is None:
            d = d.replace(tzinfo=dt.timezone.utc)
        return d

    return read


def no_surrogates(v: Any) -> Any:
    """JSON may carry lone surrogates (\\ud800), which UTF-8 cannot: replace them so every row can be written.
    Files are scrubbed as they are read (io.rows); texts from elsewhere (a Python list, a Label Studio task)
    when their line is written (io.output.line)."""
    if isinstance(v, str):
        return v.encode("utf-8", "replace").decode("utf-8")
    if isinstance(v, dict):
        return {no_surrogates(k): no_surrogates(x) for k, x in v.items()}
    if isinstance(v, list):
        return [no_surrogates(x) for x in v]
    return v
