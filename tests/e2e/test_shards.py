"""`label --shard I/N` and `merge`: N shards joined equal one run (rows, order, labels, Dawid-Skene fitted on
every row), the ledgers sum, and wrong sets of shards are refused with one line.

In-process through `llmlabel.cli.main.main`, against the in-test fake server."""

from __future__ import annotations

import json

import pytest
from conftest import LABELS, one_line_error, read_jsonl, run_main, write_config, write_corpus
from conftest import label_main as label
from fakeserver import FakeLLM, pick

from llmlabel.io.shard_spec import Shard, shard_of

N_ROWS = 60

pytestmark = pytest.mark.usefixtures("quiet_fake_server")


@pytest.fixture
def noisy(tmp_path):
    """Three judges that disagree on some rows (two of them flip a different subset), so that Dawid-Skene
    has something to fit; one server each."""
    rows = write_corpus(tmp_path / "in.csv", N_ROWS)
    flip = {"positive": "negative", "negative": "positive"}
    texts = [r["text"] for r in rows]
    servers = [
        FakeLLM().start(),
        FakeLLM(answers={t: flip[pick(t, LABELS)] for i, t in enumerate(texts) if i % 5 == 0}).start(),
        FakeLLM(answers={t: flip[pick(t, LABELS)] for i, t in enumerate(texts) if i % 4 == 1}).start(),
    ]
    judges = [
        {"name": n, "model": f"fake-{n}", "base_url": s.base_url, "concurrency": 4, "timeout": 5}
        for n, s in zip("abc", servers)
    ]
    yield judges, servers
    for s in servers:
        s.stop()


def _config(tmp_path, judges, name="c.yaml", cache="cache", **extra):
    cfg = write_config(tmp_path / name, None, judges=judges, aggregate="dawid_skene", **extra)
    data = cfg.read_text().replace(str(tmp_path / "cache"), str(tmp_path / cache))
    cfg.write_text(data)
    return cfg


def test_shard_hash_is_stable_and_partitions():
    assert shard_of("r1", 4) == int.from_bytes(__import__("hashlib").sha256(b"r1").digest()[:8], "big") % 4
    ids = [f"r{i}" for i in range(1000)]
    parts = [{i for i in ids if Shard(k, 3).has(i)} for k in range(3)]
    assert set().union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)
    assert all(250 < len(p) < 420 for p in parts)  # spread, not all in one
    assert Shard.parse(" 1 / 3 ") == Shard(1, 3) and str(Shard(1, 3)) == "1/3"


@pytest.mark.slow
@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_two_shards_merged_equal_one_run(tmp_path, noisy, capsys, ext):
    judges, servers = noisy
    inp = tmp_path / "in.csv"
    one = _config(tmp_path, judges, "one.yaml", cache="cache-one")
    rc, err = label(capsys, str(inp), "-c", str(one), "-o", str(tmp_path / f"one.{ext}"))
    assert rc == 0, err
    paid_one = sum(s.requests for s in servers)
    assert paid_one == 3 * N_ROWS

    cfg = _config(tmp_path, judges, cache="cache-shards")  # a cache of its own: the shards pay again
    for i in range(2):
        rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(tmp_path / f"out.{i}.{ext}"), "--shard", f"{i}/2")
        assert rc == 0, err
    assert sum(s.requests for s in servers) == 2 * paid_one  # each row in exactly one shard
    shard_ids = (
        [[r["id"] for r in read_jsonl(tmp_path / f"out.{i}.jsonl")] for i in range(2)] if ext == "jsonl" else None
    )
    if shard_ids:
        assert set(shard_ids[0]).isdisjoint(shard_ids[1]) and len(shard_ids[0]) + len(shard_ids[1]) == N_ROWS
        assert all(shard_of(i, 2) == 0 for i in shard_ids[0])

    rc, out, err = run_main(capsys, "merge", str(tmp_path / f"out.*.{ext}"), "-o", str(tmp_path / f"merged.{ext}"))
    assert rc == 0, err
    assert f"wrote {N_ROWS} rows" in err
    a, b = (tmp_path / f"one.{ext}").read_bytes(), (tmp_path / f"merged.{ext}").read_bytes()
    assert a == b  # same rows, order, labels, confidences and judges' answers: byte for byte
    if ext == "jsonl":
        recs = read_jsonl(tmp_path / "merged.jsonl")
        # Dawid-Skene over all rows overrules the noisy judges where a shard alone might not: check it ran.
        assert {r["label"] for r in recs} <= set(LABELS) and any(r["confidence"] < 1 for r in recs)
        # Each shard alone fits its own Dawid-Skene: the merge re-fits over every row (other posteriors).
        per_shard = {r["id"]: r["probs"] for i in range(2) for r in read_jsonl(tmp_path / f"out.{i}.jsonl")}
        assert any(per_shard[r["id"]] != r["probs"] for r in recs)

    ledger = json.loads((tmp_path / f"merged.{ext}.ledger.json").read_text())
    assert ledger["total"]["requests"] == 3 * N_ROWS
    assert {n: j["requests"] for n, j in ledger["merged"]["judges"].items()} == {"a": N_ROWS, "b": N_ROWS, "c": N_ROWS}
    assert ledger["merged"]["rows_done"] == N_ROWS and ledger["merged"]["quality"]["method"] == "dawid_skene"
    assert len(ledger["runs"]) == 2 and not (tmp_path / f"merged.{ext}.part").exists()


@pytest.mark.slow
def test_wrong_shards_are_refused(tmp_path, noisy, capsys):
    judges, _ = noisy
    inp = tmp_path / "in.csv"
    cfg = _config(tmp_path, judges)
    outs = [tmp_path / f"out.{i}.jsonl" for i in range(3)]
    for i, o in enumerate(outs):
        rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(o), "--shard", f"{i}/3")
        assert rc == 0, err
    merged = str(tmp_path / "m.jsonl")

    rc, _, err = run_main(capsys, "merge", str(outs[0]), str(outs[1]), "-o", merged)
    one_line_error(rc, err, "missing shards 2/3")
    rc, _, err = run_main(capsys, "merge", str(outs[0]), str(outs[1]), str(outs[1]), str(outs[2]), "-o", merged)
    one_line_error(rc, err, "shard 1/3 is given twice")

    other = _config(tmp_path, judges, "other.yaml", task={"name": "s", "instructions": "Other?", "labels": LABELS})
    rc, err = label(capsys, str(inp), "-c", str(other), "-o", str(tmp_path / "x.2.jsonl"), "--shard", "2/3")
    assert rc == 0, err
    rc, _, err = run_main(capsys, "merge", str(outs[0]), str(outs[1]), str(tmp_path / "x.2.jsonl"), "-o", merged)
    one_line_error(rc, err, "shards of different jobs", "task.instructions")

    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(tmp_path / "y.2.jsonl"), "--shard", "0/2")
    assert rc == 0, err
    rc, _, err = run_main(capsys, "merge", str(outs[0]), str(outs[1]), str(tmp_path / "y.2.jsonl"), "-o", merged)
    one_line_error(rc, err, "different numbers of parts")

    (tmp_path / "plain.jsonl").write_text(outs[0].read_text())
    rc, _, err = run_main(capsys, "merge", str(tmp_path / "plain.jsonl"), "-o", merged)
    one_line_error(rc, err, "not a finished shard output")
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.parametrize("spec", ["2/2", "x", "1/0", "-1/2"])
def test_bad_shard_spec_is_one_line(tmp_path, fake, capsys, spec):
    write_corpus(tmp_path / "in.csv", 5)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    rc, err = label(
        capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"), f"--shard={spec}"
    )
    one_line_error(rc, err, "--shard")
    assert fake.requests == 0


def test_another_shard_on_the_same_output_is_refused(tmp_path, fake, capsys):
    inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    write_corpus(inp, 40)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out), "--shard", "0/2", "--max-requests", "5")
    assert rc == 3, err
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out), "--shard", "1/2")
    one_line_error(rc, err, "shard", "--restart")
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    one_line_error(rc, err, "shard", "--restart")
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(out), "--shard", "0/2")
    assert rc == 0, err
    ids = [r["id"] for r in read_jsonl(out)]
    assert ids and all(shard_of(i, 2) == 0 for i in ids) and fake.requests == len(ids)


def test_more_shards_than_rows_and_a_shard_output_relabeled_whole(tmp_path, fake, capsys):
    """Empty shards still finish and merge; an output relabeled without --shard is no longer a shard."""
    inp = tmp_path / "in.jsonl"
    write_corpus(inp, 3, fmt="jsonl")
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    for i in range(8):
        rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(tmp_path / f"o.{i}.jsonl"), "--shard", f"{i}/8")
        assert rc == 0, err
    rc, _, err = run_main(
        capsys, "merge", *(str(tmp_path / f"o.{i}.jsonl") for i in range(8)), "-o", str(tmp_path / "m.jsonl")
    )
    assert rc == 0, err
    assert [r["id"] for r in read_jsonl(tmp_path / "m.jsonl")] == ["r0", "r1", "r2"] and fake.requests == 3
    rc, err = label(capsys, str(inp), "-c", str(cfg), "-o", str(tmp_path / "o.0.jsonl"), "--restart")
    assert rc == 0, err
    rc, _, err = run_main(
        capsys, "merge", *(str(tmp_path / f"o.{i}.jsonl") for i in range(8)), "-o", str(tmp_path / "m.jsonl")
    )
    one_line_error(rc, err, "not a finished shard output")
