"""Inputs of every value type, and column names that clash with llmlabel's own fields: the run pays once,
writes every format, and keeps what the input had (issue 25, items 6, 7, 9 and 14).

In-process through `llmlabel.cli.main.main`, against the in-test fake server (its request counts say what
was paid)."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import math
from decimal import Decimal

import pytest
from conftest import LABELS, one_line_error, read_jsonl, run_main, write_config
from conftest import label_main as label
from fakeserver import FakeLLM, pick

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.usefixtures("quiet_fake_server")

N = 6
TS = dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
TSZ = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def _typed_table():
    return pa.table(
        {
            "id": pa.array(range(10, 10 + N), pa.int64()),
            "text": [f"review {i}: {'good' if i % 2 else 'bad'} product" for i in range(N)],
            "ts": pa.array([TS] * N, pa.timestamp("us")),
            "tsz": pa.array([TSZ] * N, pa.timestamp("ms", tz="UTC")),
            "day": pa.array([dt.date(2024, 1, 2)] * N, pa.date32()),
            "raw": pa.array([b"\x00\xff", b"ab"] * (N // 2), pa.binary()),
            "price": pa.array([Decimal("1.10"), None] * (N // 2), pa.decimal128(10, 2)),
            "tags": pa.array([[1, 2], []] * (N // 2), pa.list_(pa.int64())),
            "meta": pa.array([{"a": 1, "b": "x"}] * N),
            "score": pa.array([1.5, math.nan, None] * (N // 3), pa.float64()),
            "_i": pa.array([99] * N, pa.int64()),
            "label": ["gold"] * N,
        }
    )


@pytest.fixture
def fake():
    s = FakeLLM().start()
    yield s
    s.stop()


def _cfg(tmp_path, fake, **extra):
    return write_config(tmp_path / "c.yaml", fake.base_url, **extra)


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_parquet_input_of_every_type_is_labeled_once_and_kept(tmp_path, fake, capsys, ext):
    inp = tmp_path / "in.parquet"
    pq.write_table(_typed_table(), inp)
    out = tmp_path / f"out.{ext}"
    rc, err = label(capsys, str(inp), "-c", str(_cfg(tmp_path, fake)), "-o", str(out))
    assert rc == 0, err
    assert fake.requests == N  # paid once: no crash after paying
    rc, err = label(capsys, str(inp), "-c", str(_cfg(tmp_path, fake)), "-o", str(out))
    assert rc == 0 and fake.requests == N, err  # a rerun pays nothing

    if ext == "parquet":
        t = pq.read_table(out)
        want = _typed_table().schema
        for name in ("ts", "tsz", "day", "raw", "price", "tags", "meta", "score"):
            assert t.schema.field(name).type == want.field(name).type, name
        assert t.schema.field("id").type == pa.int64()  # the int id stays an int
        assert t.schema.field("_i_input").type == pa.int64() and t.schema.field("label_input").type == pa.string()
        rows = t.to_pylist()
        assert [r["id"] for r in rows] == list(range(10, 10 + N))  # input order
        r0 = rows[0]
        assert r0["ts"] == TS and r0["tsz"] == TSZ and r0["day"] == dt.date(2024, 1, 2)
        assert r0["raw"] == b"\x00\xff" and r0["price"] == Decimal("1.10") and r0["tags"] == [1, 2]
        assert r0["meta"] == {"a": 1, "b": "x"} and r0["score"] == 1.5 and rows[1]["score"] is None
        assert r0["_i_input"] == 99 and r0["label_input"] == "gold"
        assert all(r["label"] in LABELS for r in rows)
        return
    if ext == "jsonl":
        text = out.read_text()
        assert "NaN" not in text  # not JSON
        rows = read_jsonl(out)
    else:
        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh))
    assert [str(r["id"]) for r in rows] == [str(i) for i in range(10, 10 + N)]
    r0, r1 = rows[0], rows[1]
    assert r0["ts"] == TS.isoformat() and r0["tsz"] == TSZ.isoformat() and r0["day"] == "2024-01-02"
    assert base64.b64decode(r0["raw"]) == b"\x00\xff" and r0["price"] == "1.10"
    assert str(r0["_i_input"]) == "99" and r0["label_input"] == "gold"
    if ext == "jsonl":
        assert r0["tags"] == [1, 2] and r0["meta"] == {"a": 1, "b": "x"} and r1["score"] is None
        assert r1["price"] is None
    else:
        assert json.loads(r0["tags"]) == [1, 2] and json.loads(r0["meta"]) == {"a": 1, "b": "x"}
        assert r1["score"] == ""


def test_jsonl_nan_is_written_as_null(tmp_path, fake, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "text": "good", "x": NaN}\n{"id": "b", "text": "bad", "x": Infinity}\n')
    out = tmp_path / "out.jsonl"
    rc, err = label(capsys, str(inp), "-c", str(_cfg(tmp_path, fake)), "-o", str(out))
    assert rc == 0, err
    assert [r["x"] for r in read_jsonl(out)] == [None, None]  # json.loads would have read NaN back


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.slow
def test_an_input_column_named_like_an_internal_field_is_kept(tmp_path, fake, capsys, fmt):
    inp = tmp_path / f"in.{fmt}"
    rows = [{"_i": 100 - i, "text": f"text number {i}", "label_input": f"x{i}", "label": "y"} for i in range(8)]
    if fmt == "csv":
        with open(inp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    rc, err = label(capsys, str(inp), "-c", str(_cfg(tmp_path, fake)), "-o", str(out))
    assert rc == 0, err
    assert fake.requests == 8
    got = read_jsonl(out)
    assert [r["id"] for r in got] == [str(i) for i in range(8)]  # input order, numbered by position
    assert [str(r["_i_input"]) for r in got] == [str(100 - i) for i in range(8)]
    # `label` -> `label_input`, which the input already has: `label_input_input`; neither is lost.
    assert [r["label_input"] for r in got] == [f"x{i}" for i in range(8)]
    assert all(r["label_input_input"] == "y" and r["label"] in LABELS for r in got)
    assert all(r["text"] == f"text number {i}" for i, r in enumerate(got))


def test_blank_texts_are_not_paid(tmp_path, fake, capsys):
    inp = tmp_path / "in.jsonl"
    texts = ["\x00", "\x00\x00 \t", "\u200b", " ", "real text"]
    lines = [json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)]
    lines.append('{"id": "nan", "text": NaN}\n')  # pandas' missing text: not the word "nan"
    inp.write_text("".join(lines))
    out = tmp_path / "out.jsonl"
    rc, err = label(capsys, str(inp), "-c", str(_cfg(tmp_path, fake)), "-o", str(out))
    assert rc == 0, err
    assert fake.requests == 1  # only the real text
    got = read_jsonl(out)
    assert [r["error"] is None for r in got] == [False, False, False, False, True, False]
    assert all(r["error"].startswith("empty text") for r in got if r["id"] != "r4")


def test_list_and_dict_texts_are_sent_as_json(tmp_path, fake, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "text": ["good", "day"]}\n{"id": "b", "text": {"title": "bad"}}\n')
    rc, err = label(capsys, str(inp), "-c", str(_cfg(tmp_path, fake)), "-o", str(tmp_path / "o.jsonl"))
    assert rc == 0, err
    sent = "\n".join(b["messages"][-1]["content"] for b in fake.bodies)
    assert '["good","day"]' in sent and '{"title":"bad"}' in sent
    assert "['good'" not in sent and "{'title'" not in sent


def test_csv_header_with_a_column_twice_is_refused_before_paying(tmp_path, fake, capsys):
    inp = tmp_path / "in.csv"
    inp.write_text("id,text,other,text\n1,first,x,second\n")
    rc, err = label(capsys, str(inp), "-c", str(_cfg(tmp_path, fake)), "-o", str(tmp_path / "o.jsonl"))
    one_line_error(rc, err, "column 'text' twice", "columns 2 and 4")
    assert fake.requests == 0


# -- shards -----------------------------------------------------------------------------------------------------


def _three_judges(n_rows):
    servers = [FakeLLM().start() for _ in range(3)]
    judges = [
        {"name": n, "model": f"fake-{n}", "base_url": s.base_url, "concurrency": 4, "timeout": 5}
        for n, s in zip("abc", servers)
    ]
    return servers, judges


@pytest.mark.slow
def test_parquet_shards_merge_with_structures_and_dawid_skene(tmp_path, capsys):
    servers, judges = _three_judges(N)
    try:
        inp = tmp_path / "in.parquet"
        pq.write_table(_typed_table(), inp)
        cfg = write_config(tmp_path / "c.yaml", None, judges=judges, aggregate="dawid_skene")
        for i in range(2):
            rc, err = label(
                capsys, str(inp), "-c", str(cfg), "-o", str(tmp_path / f"s.{i}.parquet"), "--shard", f"{i}/2"
            )
            assert rc == 0, err
        paid = sum(s.requests for s in servers)
        assert paid == 3 * N
        for ext in ("jsonl", "parquet"):
            merged = tmp_path / f"m.{ext}"
            rc, _, err = run_main(capsys, "merge", str(tmp_path / "s.*.parquet"), "-o", str(merged))
            assert rc == 0, err
        recs = read_jsonl(tmp_path / "m.jsonl")
        assert [r["id"] for r in recs] == [str(i) for i in range(10, 10 + N)]
        assert all(isinstance(r["judges"], dict) and set(r["judges"]) == {"a", "b", "c"} for r in recs)
        assert all(isinstance(r["probs"], dict) for r in recs)
        assert recs[0]["ts"] == TS.isoformat() and recs[0]["tags"] == [1, 2]
        t = pq.read_table(tmp_path / "m.parquet")
        assert t.schema.field("ts").type == pa.timestamp("us") and t.schema.field("id").type == pa.int64()
        assert t.column("id").to_pylist() == list(range(10, 10 + N))
        assert sum(s.requests for s in servers) == paid  # merging pays nothing
    finally:
        for s in servers:
            s.stop()


@pytest.mark.slow
def test_a_reordered_shard_is_refused(tmp_path, capsys):
    servers, judges = _three_judges(20)
    try:
        inp = tmp_path / "in.jsonl"
        inp.write_text("".join(json.dumps({"id": f"r{i}", "text": f"text {i}"}) + "\n" for i in range(20)))
        cfg = write_config(tmp_path / "c.yaml", None, judges=judges)
        for i in range(2):
            rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(tmp_path / f"s.{i}.jsonl"), "--shard", f"{i}/2")
            assert rc == 0, err
        shard = tmp_path / "s.0.jsonl"
        lines = shard.read_text().splitlines(keepends=True)
        assert len(lines) > 2
        shard.write_text("".join(reversed(lines)))
        rc, _, err = run_main(capsys, "merge", str(tmp_path / "s.*.jsonl"), "-o", str(tmp_path / "m.jsonl"))
        one_line_error(rc, err, str(shard), "not the ones, in the order")
        assert not (tmp_path / "m.jsonl").exists()
        shard.write_text("".join(lines))  # restored: merges
        rc, _, err = run_main(capsys, "merge", str(tmp_path / "s.*.jsonl"), "-o", str(tmp_path / "m.jsonl"))
        assert rc == 0, err
        assert [r["id"] for r in read_jsonl(tmp_path / "m.jsonl")] == [f"r{i}" for i in range(20)]
    finally:
        for s in servers:
            s.stop()


def test_labels_of_the_fake_are_unaffected(tmp_path, fake, capsys):
    """The typed columns change nothing in what is asked: the labels are the fake's for each text."""
    inp = tmp_path / "in.parquet"
    pq.write_table(_typed_table(), inp)
    out = tmp_path / "out.jsonl"
    rc, err = label(capsys, str(inp), "-c", str(_cfg(tmp_path, fake)), "-o", str(out))
    assert rc == 0, err
    texts = _typed_table().column("text").to_pylist()
    assert [r["label"] for r in read_jsonl(out)] == [pick(t, LABELS) for t in texts]


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda run: run["judges"]["a"].update(requests="many"), "judge 'a' requests is 'many'"),
        (lambda run: run["judges"]["a"].update(input_tokens=-5), "judge 'a' input_tokens is -5"),
        (lambda run: run.update(rows_done=[1]), "rows_done is [1]"),
        (lambda run: run.update(judges=[1, 2]), "is not a run this llmlabel wrote"),
    ],
)
def test_a_shard_ledger_with_odd_counts_is_one_line(tmp_path, fake, capsys, edit, needle):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"r{i}", "text": f"text {i}"}) + "\n" for i in range(10)))
    cfg = _cfg(tmp_path, fake)
    for i in range(2):
        rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(tmp_path / f"s.{i}.jsonl"), "--shard", f"{i}/2")
        assert rc == 0, err
    led = tmp_path / "s.1.jsonl.ledger.json"
    data = json.loads(led.read_text())
    edit(data["runs"][0])
    led.write_text(json.dumps(data))
    rc, _, err = run_main(capsys, "merge", str(tmp_path / "s.*.jsonl"), "-o", str(tmp_path / "m.jsonl"))
    one_line_error(rc, err, str(led), needle)


def test_ids_of_every_type(tmp_path, fake, capsys):
    """Non-text ids in their text form (as the outputs write other such values); NaN, a table's missing
    value, is no id (the row is numbered); a Parquet output gets binary and timestamp ids back as they were."""
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        '{"id": 1.5, "text": "a"}\n{"id": NaN, "text": "b"}\n{"id": {"k": 1}, "text": "c"}\n{"id": [1, 2], "text": "d"}\n'
    )
    out = tmp_path / "o.jsonl"
    rc, err = label(capsys, str(inp), "-c", str(_cfg(tmp_path, fake)), "-o", str(out))
    assert rc == 0, err
    assert [r["id"] for r in read_jsonl(out)] == ["1.5", "1", '{"k":1}', "[1,2]"]

    pin = tmp_path / "in.parquet"
    ids = [b"\x00\x01", b"abcd", b"\xff"]
    pq.write_table(pa.table({"id": pa.array(ids, pa.binary()), "text": ["x", "y", "z"]}), pin)
    for ext in ("jsonl", "parquet"):
        rc, err = label(capsys, str(pin), "-c", str(_cfg(tmp_path, fake)), "-o", str(tmp_path / f"b.{ext}"))
        assert rc == 0, err
    assert [r["id"] for r in read_jsonl(tmp_path / "b.jsonl")] == [base64.b64encode(b).decode() for b in ids]
    assert pq.read_table(tmp_path / "b.parquet").column("id").to_pylist() == ids
    assert fake.requests == 4 + 3


def test_more_arrow_types_round_trip_through_a_parquet_output(tmp_path, fake, capsys):
    n = 3
    cols = {
        "text": pa.array(["a good one", "bad", "so so"]),
        "u64": pa.array([2**64 - 1, 0, 5], pa.uint64()),
        "dic": pa.array(["p", "q", "p"]).dictionary_encode(),
        "mp": pa.array([[("k", 1)], [], None], pa.map_(pa.string(), pa.int64())),
        "fsb": pa.array([b"ab", b"cd", b"ef"], pa.binary(2)),
        "t64": pa.array([dt.time(1, 2, 3, 4)] * n, pa.time64("us")),
        "dur": pa.array([dt.timedelta(seconds=1.5)] * n, pa.duration("us")),
        "d256": pa.array([Decimal("1.5")] * n, pa.decimal256(40, 2)),
        "nul": pa.array([None] * n, pa.null()),
        "nest": pa.array([[{"t": dt.datetime(2024, 1, 1)}]] * n),
        "tsns": pa.array([1234567890123456789] * n, pa.timestamp("ns")),
        "date64": pa.array([dt.date(2020, 1, 1)] * n, pa.date64()),
    }
    inp = tmp_path / "in.parquet"
    pq.write_table(pa.table(cols), inp)
    out = tmp_path / "out.parquet"
    rc, err = label(capsys, str(inp), "-c", str(_cfg(tmp_path, fake)), "-o", str(out))
    assert rc == 0, err
    a, b = pq.read_table(inp), pq.read_table(out)
    for c in cols:
        assert b.schema.field(c).type == a.schema.field(c).type, c
        assert b.column(c).to_pylist() == a.column(c).to_pylist(), c
    assert fake.requests == n


def test_jsonl_key_given_twice_is_refused_before_paying(tmp_path, fake, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "text": "first", "text": "second"}\n')
    rc, err = label(capsys, str(inp), "-c", str(_cfg(tmp_path, fake)), "-o", str(tmp_path / "o.jsonl"))
    one_line_error(rc, err, "line 1 names column 'text' twice")
    assert fake.requests == 0


def test_an_int_beyond_64_bits_goes_to_parquet_as_text(tmp_path, fake, capsys):
    """Found after paying before (`cannot write ... as Parquet`): the column is written as text instead."""
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "text": "one", "big": 5}\n{"id": "b", "text": "two", "big": 18446744073709551616}\n')
    out = tmp_path / "o.parquet"
    rc, err = label(capsys, str(inp), "-c", str(_cfg(tmp_path, fake)), "-o", str(out))
    assert rc == 0, err
    t = pq.read_table(out)
    assert t.column("big").to_pylist() == ["5", "18446744073709551616"] and t.column("id").to_pylist() == ["a", "b"]
    assert fake.requests == 2


def test_a_service_job_on_a_typed_parquet_upload(tmp_path, fake):
    """The service's batch jobs run the same lifecycle: a typed Parquet upload is labeled once and served."""
    pytest.importorskip("fastapi")
    import functools
    import time

    from fastapi.testclient import TestClient

    from llmlabel.config import load_config
    from llmlabel.service.app import create_app

    token = "test-token-0123456789"
    h = {"Authorization": f"Bearer {token}"}
    inp = tmp_path / "in.parquet"
    pq.write_table(_typed_table(), inp)
    cfg = load_config(_cfg(tmp_path, fake))
    client = functools.partial(TestClient, base_url="http://127.0.0.1:8000")
    with client(create_app(cfg, token=token, state_dir=tmp_path / "s")) as c:
        r = c.post("/v1/jobs", files={"file": ("in.parquet", inp.read_bytes())}, data={"mode": "label"}, headers=h)
        assert r.status_code == 202, r.text
        jid = r.json()["id"]
        for _ in range(1200):
            info = c.get(f"/v1/jobs/{jid}", headers=h).json()
            if info["state"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.05)
        assert info["state"] == "done", info
        served = [json.loads(x) for x in c.get(info["results"], headers=h).text.splitlines()]
    assert fake.requests == N and [r["id"] for r in served] == [str(i) for i in range(10, 10 + N)]
    assert served[0]["ts"] == TS.isoformat() and served[0]["_i_input"] == 99 and served[1]["score"] is None


def test_a_parquet_file_whose_values_decode_to_gigabytes_is_refused(tmp_path, capsys):
    """A few KB of Parquet whose rows share one 10 MB string through the column's dictionary decode to 2 GB:
    refused in one line, read out in bounded slices until then (was 2.2 GB of memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from conftest import label_main, one_line_error, write_config

    from llmlabel.io.rows import iter_rows

    big = "x" * (10 * 2**20)
    text = pa.DictionaryArray.from_arrays(pa.array([0] * 200, pa.int32()), pa.array([big]))  # 10 MB, once
    table = pa.table({"id": [str(i) for i in range(200)], "text": text})
    bomb = tmp_path / "bomb.parquet"
    pq.write_table(table, bomb, compression="zstd")
    assert bomb.stat().st_size < 100_000
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9/v1")
    rc, err = label_main(capsys, str(bomb), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    one_line_error(rc, err, "bomb.parquet", "decode to over")
    # An ordinary file with a repeated label still reads in full.
    ok = tmp_path / "ok.parquet"
    pq.write_table(pa.table({"text": [f"text {i}" for i in range(5000)], "label": ["pos", "neg"] * 2500}), ok)
    assert sum(1 for _ in iter_rows(ok)) == 5000
