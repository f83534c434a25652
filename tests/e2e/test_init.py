"""`llmlabel init DATA`: a config guessed from a sample of a file the project has never seen, that `plan` prices
and `label` runs as written (against the in-test server through OPENAI_BASE_URL; no network)."""

from __future__ import annotations

import csv
import json
import random

import pytest
import yaml
from conftest import read_jsonl, run_cli

CATEGORIES = ["billing", "shipping", "account access", "bug report"]


def write_tickets(path, n=120):
    """A help-desk export: ids under an unusual name, two free-text columns, the labels under `Category`."""
    rng = random.Random(7)
    rows = []
    for i in range(n):
        cat = rng.choice(CATEGORIES)
        rows.append({
            "ticket_no": f"T-{5000 + i}",
            "Subject": f"Issue {i}",
            "Customer Message": f"Hi, since order #{i} I have had trouble with {cat}; nothing I try works and I need help soon.",
            "channel": rng.choice(["email", "chat"]),
            "Category": cat,
            "priority": rng.randint(1, 3),
        })  # fmt: skip
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


@pytest.mark.slow
def test_init_guesses_a_config_that_plan_prices_and_label_runs(tmp_path, fake):
    rows = write_tickets(tmp_path / "tickets.csv")
    cfg = tmp_path / "tickets.yaml"
    r = run_cli("init", str(tmp_path / "tickets.csv"), "-o", str(cfg))
    assert r.returncode == 0, r.stderr
    text = cfg.read_text()
    assert text.startswith("# Written by `llmlabel init") and "# judges:" in text
    task = yaml.safe_load(text)["task"]
    assert task["text_column"] == "Customer Message" and task["id_column"] == "ticket_no"
    assert list(task["labels"]) == sorted(CATEGORIES)
    assert "judges" not in yaml.safe_load(text)  # no key set: the embedded model; a key: its model

    r = run_cli("plan", str(tmp_path / "tickets.csv"), "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "120 requests" in r.stdout

    env = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-test"}
    r = run_cli("label", str(tmp_path / "tickets.csv"), "-c", str(cfg), "-o", str(tmp_path / "out.jsonl"), "-q",
                env=env, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [o["id"] for o in out] == [row["ticket_no"] for row in rows]
    assert fake.requests == 120 and all(o["label"] in CATEGORIES for o in out)


def test_init_never_replaces_a_file(tmp_path):
    write_tickets(tmp_path / "tickets.csv", 10)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mine\n")
    r = run_cli("init", str(tmp_path / "tickets.csv"), "-o", str(cfg))
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
    assert cfg.read_text() == "mine\n"
    r = run_cli("init", str(tmp_path / "tickets.csv"), cwd=tmp_path)  # default: llmlabel.yaml here
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "llmlabel.yaml").is_file()


def test_without_a_label_column_placeholders_or_labels_flag(tmp_path):
    (tmp_path / "notes.jsonl").write_text(
        "".join(json.dumps({"uid": f"u{i}", "note": f"note number {i} about the weather"}) + "\n" for i in range(30))
    )
    r = run_cli("init", str(tmp_path / "notes.jsonl"), "-o", str(tmp_path / "a.yaml"))
    assert r.returncode == 0, r.stderr
    assert "no label column" in r.stderr and "--labels" in r.stderr
    task = yaml.safe_load((tmp_path / "a.yaml").read_text())["task"]
    assert list(task["labels"]) == ["CHANGE_ME_1", "CHANGE_ME_2"] and task["id_column"] == "uid"
    assert "TODO" in (tmp_path / "a.yaml").read_text()
    r = run_cli("init", str(tmp_path / "notes.jsonl"), "-o", str(tmp_path / "b.yaml"), "--labels", "sunny, rainy")
    assert r.returncode == 0, r.stderr
    assert list(yaml.safe_load((tmp_path / "b.yaml").read_text())["task"]["labels"]) == ["sunny", "rainy"]


@pytest.mark.slow
def test_parquet_input_and_a_named_label_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"body": [f"a fairly long body of text number {i}" for i in range(40)],
                      "title": [f"t{i}" for i in range(40)], "verdict": [i % 2 for i in range(40)]})  # fmt: skip
    pq.write_table(table, tmp_path / "d.parquet")
    r = run_cli("init", str(tmp_path / "d.parquet"), "-o", str(tmp_path / "c.yaml"), "--label-column", "verdict")
    assert r.returncode == 0, r.stderr
    task = yaml.safe_load((tmp_path / "c.yaml").read_text())["task"]
    assert task["text_column"] == "body" and list(task["labels"]) == ["0", "1"] and "id_column" not in task


@pytest.mark.slow
def test_errors_are_one_line_and_write_nothing(tmp_path):
    (tmp_path / "nums.csv").write_text("a,b\n1,2\n3,4\n")
    r = run_cli("init", str(tmp_path / "nums.csv"), "-o", str(tmp_path / "c.yaml"))
    assert r.returncode == 2 and "no column of free text" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("init", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "c.yaml"))
    assert r.returncode == 2 and "not found" in r.stderr
    r = run_cli("init", str(tmp_path / "nums.csv"), "-o", str(tmp_path / "c.yaml"), "--labels", "x")
    assert r.returncode == 2 and "at least two" in r.stderr
    assert not (tmp_path / "c.yaml").exists()


def test_the_label_set_reads_past_the_sample(tmp_path):
    rows = sorted(write_tickets(tmp_path / "t.csv", 120), key=lambda r: r["Category"])
    with open(tmp_path / "sorted.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    # A file sorted by label: its first 20 rows hold one category; the label set still has all four.
    r = run_cli("init", str(tmp_path / "sorted.csv"), "-o", str(tmp_path / "c.yaml"), "--sample", "20")
    assert r.returncode == 0, r.stderr
    assert list(yaml.safe_load((tmp_path / "c.yaml").read_text())["task"]["labels"]) == sorted(CATEGORIES)
    assert "the 4 values of column 'Category' in the first 120 rows" in (tmp_path / "c.yaml").read_text()
    # Several labels in one cell (multi-label data): too many combinations for a label set, so placeholders.
    many = [{"text": f"text number {i} with words", "labels": f"l{i % 30},l{i % 7}"} for i in range(400)]
    (tmp_path / "multi.jsonl").write_text("".join(json.dumps(m) + "\n" for m in many))
    r = run_cli("init", str(tmp_path / "multi.jsonl"), "-o", str(tmp_path / "m.yaml"))
    assert r.returncode == 0, r.stderr
    assert "column 'labels' has 210 distinct values" in r.stderr and "CHANGE_ME_1" in (tmp_path / "m.yaml").read_text()
