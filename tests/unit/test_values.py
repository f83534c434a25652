"""io.values: the text form of values JSON cannot hold, and a Parquet output's types read back from it."""

import datetime as dt
import json
import math
from decimal import Decimal

import pytest

from llmlabel.io.values import dumps, plain, text_form

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def test_dumps_is_always_json():
    v = {"a": math.nan, "b": [math.inf, 1.5], "c": dt.date(2024, 1, 2), "d": b"\x00", "e": Decimal("1.10")}
    out = dumps(v)
    assert json.loads(out) == {"a": None, "b": [None, 1.5], "c": "2024-01-02", "d": "AA==", "e": "1.10"}
    assert "NaN" not in out and "Infinity" not in out
    assert dumps({"x": 1}) == '{"x":1}' and dumps({"x": 1}, compact=False) == '{"x": 1}'


def test_text_form():
    assert text_form([1, "a"]) == '[1,"a"]' and text_form({"k": 1}) == '{"k":1}'
    assert text_form(5) == "5" and text_form(1.5) == "1.5" and text_form(math.nan) == ""
    assert text_form(dt.datetime(2024, 1, 2, 3, 4)) == "2024-01-02T03:04:00" and text_form(b"ab") == "YWI="
    assert plain((1, dt.timedelta(seconds=2))) == [1, 2.0]


def test_a_typed_column_whose_values_do_not_fit_falls_back_to_text(tmp_path):
    from llmlabel.io.tables import write_table

    schema = pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us"))])
    recs = [{"id": "1", "ts": "2024-01-02T03:04:05"}, {"id": "r2", "ts": "2024-01-03T00:00:00"}]
    write_table(tmp_path / "o.parquet", ".parquet", iter(recs), schema)
    t = pq.read_table(tmp_path / "o.parquet")
    assert t.schema.field("id").type == pa.string() and t.column("id").to_pylist() == ["1", "r2"]
    assert t.schema.field("ts").type == pa.timestamp("us")  # the other column keeps its type
    assert t.column("ts").to_pylist()[1] == dt.datetime(2024, 1, 3)
