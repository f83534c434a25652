"""Reruns never merge a stale run or pay twice; one writer per output; every column survives; clear errors.

In-process through `llmlabel.cli.main.main` (a subprocess adds nothing here), against the fake server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import disk_full, one_line_error, part_file_on_a_full_disk, read_jsonl, write_config, write_corpus
from conftest import label_main as label

pytestmark = pytest.mark.usefixtures("quiet_fake_server")


@pytest.fixture
def interrupted(tmp_path, fake, capsys):
    """A 40-row run stopped by --max-requests after 15 rows: its part file holds them."""
    inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    write_corpus(inp, 40)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out), "--max-requests", "15")
    assert rc == 3, err
    assert len(read_jsonl(tmp_path / "o.jsonl.part")) == 15
    return inp, cfg, out


def test_changed_input_is_refused_then_restart_starts_over(interrupted, tmp_path, fake, capsys):
    inp, cfg, out = interrupted
    inp.write_text("id,text\n" + "".join(f"n{i},a new text {i}\n" for i in range(20)))
    paid = fake.requests
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    one_line_error(rc, err, "input", "--restart", "not merged")
    assert fake.requests == paid and not out.exists()
    assert len(read_jsonl(tmp_path / "o.jsonl.part")) == 15  # kept: the user may restore the input
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out), "--restart")
    assert rc == 0, err
    assert [r["id"] for r in read_jsonl(out)] == [f"n{i}" for i in range(20)]


def test_changed_labels_are_refused(interrupted, tmp_path, fake, capsys):
    inp, cfg, out = interrupted
    write_config(cfg, fake.base_url, task={"instructions": "Mood?", "labels": ["happy", "sad"]})
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    one_line_error(rc, err, "task.labels", "--restart")
    assert not out.exists()


def test_reaggregation_reuses_the_answers(interrupted, tmp_path, fake, capsys):
    inp, cfg, out = interrupted
    write_config(cfg, fake.base_url, aggregate="dawid_skene")
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    assert len(read_jsonl(out)) == 40 and fake.requests == 40  # the 15 finished rows were not asked again


def test_limit_after_an_interrupted_run_writes_only_the_first_rows(interrupted, tmp_path, fake, capsys):
    inp, cfg, out = interrupted
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out), "--limit", "10")
    assert rc == 0, err
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(10)]


def test_part_file_without_fingerprint_is_refused(interrupted, tmp_path, capsys):
    inp, cfg, out = interrupted
    (tmp_path / "o.jsonl.part.json").unlink()
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    one_line_error(rc, err, "no fingerprint", "--restart")


@pytest.mark.slow
def test_part_line_of_unexpected_shape_is_redone_from_the_cache(interrupted, tmp_path, fake, capsys):
    inp, cfg, out = interrupted
    part = tmp_path / "o.jsonl.part"
    lines = part.read_text().splitlines(keepends=True)
    lines[3] = '{"_i":3,"id":["r3"],"error":7}\n'  # valid JSON, not a row this code wrote
    lines.insert(5, "[1, 2]\n")
    part.write_text("".join(lines))
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(40)]
    assert fake.requests == 40  # the dropped rows came from the cache


def _mixed_rows(path: Path) -> None:
    rows = [{"id": "a", "text": "one", "n": 1}, {"id": "b", "text": "two", "n": "x", "late": "kept"}]
    rows += [{"id": f"z{i}", "text": f"t{i}", "n": None, "sparse": None} for i in range(5)]
    rows.append({"id": "last", "text": "end", "n": 2.5, "sparse": 42})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_late_keys_and_mixed_types_survive(tmp_path, fake, capsys, fmt):
    inp, out = tmp_path / "in.jsonl", tmp_path / f"o.{fmt}"
    _mixed_rows(inp)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    if fmt == "csv":
        import csv

        got = list(csv.DictReader(open(out, newline="")))
    else:
        import pyarrow.parquet as pq

        got = pq.read_table(out).to_pylist()
    assert len(got) == 8
    assert got[1]["late"] == "kept" and got[0]["late"] in ("", None)
    assert [str(g["n"]) for g in got[:2]] == ["1", "x"] and str(got[-1]["n"]) == "2.5"
    assert str(got[-1]["sparse"]) == "42" and got[-1]["label"] in ("positive", "negative")


def test_invalid_answers_are_not_paid_again_unless_asked(tmp_path, capsys):
    from fakeserver import FakeLLM

    inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    rows = write_corpus(inp, 20)
    fake = FakeLLM(answers={rows[3]["text"]: "maybe", rows[7]["text"]: "maybe"}).start()
    try:
        cfg = write_config(tmp_path / "c.yaml", fake.base_url)
        args = [str(inp), "-c", str(cfg), "-o", str(out)]
        rc, err = label(capsys, *args)
        assert rc == 0, err
        assert sum(r["error"] is not None for r in read_jsonl(out)) == 2
        paid = fake.requests
        rc, err = label(capsys, *args)
        assert rc == 0, err
        assert fake.requests == paid and "2 rows" in err and "--retry-errors" in err
        assert sum(r["error"] is not None for r in read_jsonl(out)) == 2 and len(read_jsonl(out)) == 20
        rc, err = label(capsys, *args, "--retry-errors")
        assert rc == 0, err
        assert fake.requests > paid and len(read_jsonl(out)) == 20
    finally:
        fake.stop()


@pytest.mark.slow
def test_second_writer_on_one_output_is_refused(tmp_path, capsys):
    import subprocess
    import sys
    import time

    from fakeserver import FakeLLM

    fake = FakeLLM(latency=0.05).start()
    try:
        inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
        write_corpus(inp, 60)
        judges = [{"name": "a", "model": "m", "base_url": fake.base_url, "concurrency": 2}]
        cfg = write_config(tmp_path / "c.yaml", None, judges=judges)
        args = [str(inp), "-c", str(cfg), "-o", str(out)]
        first = subprocess.Popen([sys.executable, "-m", "llmlabel", "label", *args, "-q"], stderr=subprocess.PIPE)
        part = tmp_path / "o.jsonl.part"
        deadline = time.time() + 60
        while not (part.exists() and part.read_bytes().count(b"\n") >= 2) and time.time() < deadline:
            time.sleep(0.02)
        rc, err = label(capsys, *args)
        one_line_error(rc, err, str(out), f"pid {first.pid}")
        assert first.wait(timeout=120) == 0, first.stderr.read()
        assert len(read_jsonl(out)) == 60 and fake.requests == 60  # every row paid once
        assert not (tmp_path / "o.jsonl.lock").exists()
        rc, err = label(capsys, *args)  # the lock went with its holder
        assert rc == 0, err
    finally:
        fake.stop()


def test_output_that_is_a_directory_is_refused_before_any_call(tmp_path, fake, capsys):
    inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    write_corpus(inp, 5)
    out.mkdir()
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    one_line_error(rc, err, str(out), "is a directory")
    assert fake.requests == 0


def test_decode_error_names_the_real_line(tmp_path, capsys):
    inp = tmp_path / "in.csv"
    body = "".join(f"r{i},review number {i} with some words to fill the blocks\n" for i in range(1, 4000))
    inp.write_bytes(b"id,text\n" + body.encode() + b"r4000,caf\xe9\n")  # a latin-1 byte on line 4001
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9/v1")
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    one_line_error(rc, err, "at line 4001", "UTF-8")


def test_empty_id_numbered_like_another_rows_id(tmp_path, capsys):
    inp = tmp_path / "in.csv"
    inp.write_text("id,text\n1,first\n,second\n2,third\n")  # row 2 has no id: it is numbered 1, like row 1
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9/v1")
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    one_line_error(rc, err, "row 2 has an empty 'id'", "numbered '1'", "row 1")


def test_text_column_template_error_is_one_line(tmp_path, fake, capsys):
    inp = tmp_path / "in.csv"
    write_corpus(inp, 5)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url, task={"labels": ["a", "b"], "text_column": "{{ 1/0 }}"})
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    one_line_error(rc, err, "task.text_column template '{{ 1/0 }}'", "ZeroDivisionError", "row 1")
    assert fake.requests == 0


def test_disk_full_on_the_part_file(tmp_path, fake, capsys, monkeypatch):
    inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    write_corpus(inp, 10)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    part_file_on_a_full_disk(monkeypatch)
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    one_line_error(rc, err, f"cannot write {tmp_path / 'o.jsonl.part'}", "No space left", "safe")
    monkeypatch.undo()
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0 and len(read_jsonl(out)) == 10, err


def test_disk_full_on_the_output(tmp_path, fake, capsys, monkeypatch):
    from llmlabel.pipeline import lifecycle

    inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    write_corpus(inp, 10)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    monkeypatch.setattr(lifecycle, "write_jsonl_lines", disk_full)
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    one_line_error(rc, err, f"cannot write {out}", "No space left", "finished rows are safe in")
    monkeypatch.undo()
    paid = fake.requests
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0 and len(read_jsonl(out)) == 10 and fake.requests == paid, err


@pytest.mark.slow
def test_kept_errors_survive_an_interrupted_rerun(tmp_path, capsys):
    from fakeserver import FakeLLM

    inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    rows = write_corpus(inp, 30)
    fake = FakeLLM(answers={rows[1]["text"]: "maybe"}).start()
    try:
        cfg = write_config(tmp_path / "c.yaml", fake.base_url)
        args = [str(inp), "-c", str(cfg), "-o", str(out)]
        assert label(capsys, *args)[0] == 0
        (tmp_path / "cache").rename(tmp_path / "cache.old")  # answers gone: the rerun would pay each row
        rc, err = label(capsys, *args, "--max-requests", "5")
        assert rc == 3, err
        paid = fake.requests
        rc, err = label(capsys, *args)
        assert rc == 0, err
        got = read_jsonl(out)
        assert [g["id"] for g in got] == [r["id"] for r in rows] and got[1]["error"]
        assert fake.requests - paid == 30 - 1 - 5  # the kept error row is not asked, nor the 5 done rows
    finally:
        fake.stop()


@pytest.mark.slow
def test_pacing_and_price_changes_continue_the_run(interrupted, tmp_path, fake, capsys):
    inp, cfg, out = interrupted
    judge = {"name": "a", "model": "fake-a", "base_url": fake.base_url, "concurrency": 2, "timeout": 9}
    write_config(cfg, None, judges=[{**judge, "price_per_million": {"input": 5.0, "output": 5.0}}])
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    assert len(read_jsonl(out)) == 40 and fake.requests == 40


def test_edited_examples_file_between_stop_and_resume_is_refused(tmp_path, fake, capsys):
    """task.examples_file's rows are the prompts' demonstrations: editing it (same path) between a stopped run and
    its resume would merge rows made with the old demonstrations and rows made with the new (issue 25, item 5)."""
    inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    write_corpus(inp, 40)
    pool = tmp_path / "pool.csv"
    pool.write_text("text,label\nthe product is awful,negative\nthe product is great,positive\n")
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    cfg.write_text(cfg.read_text().replace("task:\n", "task:\n  examples_file: pool.csv\n"))
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out), "--max-requests", "15")
    assert rc == 3, err
    pool.write_text("text,label\nthe product is awful,positive\nthe product is great,negative\n")
    paid = fake.requests
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    one_line_error(rc, err, "task.examples_file content", "--restart")
    assert fake.requests == paid and not out.exists()
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out), "--restart")
    assert rc == 0, err
    assert len(read_jsonl(out)) == 40
