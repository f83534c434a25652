"""io/: the one gold reader, the one atomic writer and the sidecar names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmlabel.errors import InputError
from llmlabel.io import paths
from llmlabel.io.files import atomic_path, atomic_write
from llmlabel.io.gold import read_gold
from llmlabel.io.records import judges_from_record
from llmlabel.pipeline.options import Progress


def test_read_gold(tmp_path: Path) -> None:
    p = tmp_path / "g.csv"
    p.write_text("id,label\na,pos\nb,\nc,neg\n")
    g = read_gold(p)
    assert g == {"a": "pos", "c": "neg"} and not g.numbered
    p.write_text("text,gold\nx,pos\ny,neg\n")
    g = read_gold(p, label_column="gold")
    assert g == {"0": "pos", "1": "neg"} and g.numbered  # no id column: rows numbered as `llmlabel label` does
    with pytest.raises(InputError, match="has no column 'label'.*pass --label-column"):
        read_gold(p)
    with pytest.raises(InputError, match="not found"):
        read_gold(tmp_path / "missing.csv")


def test_atomic_write_replaces_or_keeps_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "out.json"
    atomic_write(p, "old")
    atomic_write(p, b"new")
    assert p.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert p.read_text() == "new" and os.listdir(tmp_path) == ["out.json"]


def test_sidecar_names() -> None:
    out = Path("d/out.jsonl")
    assert paths.part_path(out) == Path("d/out.jsonl.part")
    assert paths.ledger_path(out) == Path("d/out.jsonl.ledger.json")
    assert paths.eval_path("d/out.jsonl") == Path("d/out.jsonl.eval.json")
    assert paths.audit_judges_path(out) == Path("d/out.jsonl.judges.jsonl")
    assert paths.audit_summary_path(out) == Path("d/out.jsonl.summary.json")


def test_progress_line() -> None:
    from llmlabel.llm.ledger import Ledger

    p = Progress(done=1200, total=10000, rate=35.2, cost=0.014, eta=250.0, ledger=Ledger())
    assert p.line() == "llmlabel: 1,200/10,000 rows (12%), 35.2 rows/s, $0.0140, ETA 4m10s"
    assert "ETA" not in Progress(10, 10, 1.0, 0.0, 0.0, Ledger()).line()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_keep_late_keys_and_mixed_types(tmp_path: Path, fmt: str) -> None:
    from llmlabel.io.output import write_output

    recs = [{"id": "a", "n": 1, "flag": True}, {"id": "b", "n": "x", "late": "kept", "flag": False}]
    recs += [{"id": f"z{i}", "sparse": None, "nested": None} for i in range(10_001)]
    recs.append({"id": "end", "n": 2.5, "sparse": 7, "nested": {"k": [1, "two"]}, "flag": "maybe"})
    out = tmp_path / f"o.{fmt}"
    assert write_output(out, iter(recs)) == len(recs)  # a one-shot iterator, as callers stream them
    if fmt == "csv":
        import csv

        got = list(csv.DictReader(open(out, newline="")))
        assert list(got[0]) == ["id", "n", "flag", "late", "sparse", "nested"]
    else:
        import pyarrow.parquet as pq

        got = pq.read_table(out).to_pylist()
    assert got[1]["late"] == "kept" and got[-1]["id"] == "end"
    assert [str(g["n"]) for g in (got[0], got[1], got[-1])] == ["1", "x", "2.5"]
    assert str(got[-1]["sparse"]) == "7" and json.loads(got[-1]["nested"]) == {"k": [1, "two"]}
    assert str(got[-1]["flag"]) == "maybe" and str(got[0]["flag"]).lower() == "true"


def test_output_lock_one_holder(tmp_path: Path) -> None:
    from llmlabel.io.lock import output_lock

    out = tmp_path / "o.jsonl"
    with output_lock(out):
        with pytest.raises(InputError, match=rf"{out} is being written by another llmlabel run \(pid {os.getpid()}\)"):
            with output_lock(out):
                pass
    assert not paths.lock_path(out).exists()
    with output_lock(out):  # free again
        pass


def test_judges_only_equals_the_parsed_records(tmp_path: Path) -> None:
    from llmlabel.io.output import PartFile, line, line_with

    tricky = ['a ,"judges": {"x": 1}', '"error": ,"judges":', "plain"]
    judges = [{"a": {"label": "pos"}}, {"a": {"error": 'bad ,"judges": x'}}, {"a": {"label": "neg"}}]
    lines = []
    for i, (text, js) in enumerate(zip(tricky, judges)):
        rec = {"_i": i, "id": str(i), "text": text, "meta": {"judges": [1]}}
        if i == 1:  # judges last (line_with's tail) or followed by error (a full line)
            lines.append(line({**rec, "label": None, "judges": js, "error": 'x ,"judges": {}'}))
        else:
            lines.append(line_with(rec, '"label":"pos","error":null,"judges":' + json.dumps(js, separators=(",", ":"))))
    path = tmp_path / "o.part.jsonl"
    path.write_bytes(b"".join(lines))
    part = PartFile(path)
    part.load()
    assert [r.judges for r in part.judges_only()] == [r.judges for r in part.results()]
    assert [judges_from_record(r["judges"]) for r in part.ordered()] == [judges_from_record(js) for js in judges]
    assert [r.judges for r in part.judges_only()] == [judges_from_record(js) for js in judges]
