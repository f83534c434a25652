"""Multi-label tasks end to end: judges answer label sets, each label is decided on its own, outputs carry the set.

Three judges on their own in-test servers, each wrong in its own way (one drops labels, one adds a label, one
swaps one): the combined sets beat every judge's micro-F1, against a gold file of "a|b" sets."""

from __future__ import annotations

import csv
import json
import random

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import label_main, read_jsonl, run_main
from fakeserver import FakeLLM

LABELS = ["joy", "anger", "fear", "sadness", "surprise"]


def _truth(n: int, seed: int = 1) -> dict[str, list[str]]:
    r = random.Random(seed)
    return {f"t{i}": r.sample(LABELS, r.choice([1, 1, 2, 3])) for i in range(n)}


def _noisy(truth: dict[str, list[str]], how: str, seed: int) -> dict[str, str]:
    """A judge's answers by text: the true set, changed on a third of the rows in this judge's way."""
    r = random.Random(seed)
    out = {}
    for i, (rid, s) in enumerate(truth.items()):
        s = list(s)
        if r.random() < 0.35:
            if how == "drop" and len(s) > 1:
                s.pop(r.randrange(len(s)))
            elif how == "drop":
                s = [r.choice([x for x in LABELS if x not in s])]
            elif how == "add":
                s.append(r.choice([x for x in LABELS if x not in s]))
            else:  # swap
                s[0] = r.choice([x for x in LABELS if x not in s])
        out[f"text {rid}"] = "|".join(s)
    return out


@pytest.fixture
def judges3():
    truth = _truth(120)
    servers = [
        FakeLLM(answers=_noisy(truth, how, k), labels=LABELS).start() for k, how in enumerate(["drop", "add", "swap"])
    ]
    yield truth, servers
    for s in servers:
        s.stop()


def _files(tmp_path, truth, servers, **cfg_extra):
    with open(tmp_path / "in.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "labels"])  # an input column named like the output's `labels`
        w.writerows([[rid, f"text {rid}", "given"] for rid in truth])
    with open(tmp_path / "gold.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label"])
        w.writerows([[rid, "|".join(s)] for rid, s in truth.items()])
    cfg = {
        "task": {"name": "emotions", "labels": LABELS, "multi_label": True},
        "judges": [{"name": n, "model": "m", "base_url": s.base_url} for n, s in zip("abc", servers)],
        "cache_dir": str(tmp_path / "cache"),
        **cfg_extra,
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "in.csv", tmp_path / "c.yaml", tmp_path / "gold.csv"


@pytest.mark.parametrize("aggregate", ["majority", "dawid_skene"])
def test_multilabel_sets_beat_every_judge(tmp_path, capsys, judges3, aggregate):
    truth, servers = judges3
    inp, cfg, gold = _files(tmp_path, truth, servers, aggregate=aggregate)
    out = tmp_path / "out.jsonl"
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    rows = read_jsonl(out)
    assert len(rows) == 120 and sum(s.requests for s in servers) == 360
    body = servers[0].bodies[0]
    assert body["response_format"]["json_schema"]["schema"]["properties"]["labels"]["type"] == "array"
    for r in rows:
        assert r["labels"] and set(r["labels"]) <= set(LABELS)  # never empty: allow_empty is off
        assert r["label"] == "|".join(r["labels"]) and r["labels_input"] == "given"
        assert set(r["probs"]) == set(LABELS) and all(0 <= p <= 1 for p in r["probs"].values())
        assert 0 <= r["confidence"] <= 1
    rc, stdout, err = run_main(capsys, "eval", str(out), "--gold", str(gold))
    assert rc == 0, err
    rep = json.loads((tmp_path / "out.jsonl.eval.json").read_text())
    assert rep["multi_label"] and rep["rows_evaluated"] == 120
    best = max(j["micro_f1"] for j in rep["judges"].values())
    assert rep["micro_f1"] > best, rep
    assert rep["subset_accuracy"] > max(j["subset_accuracy"] for j in rep["judges"].values())
    assert "micro-F1" in stdout and "Hamming" in stdout


def test_multilabel_outputs_keep_lists_and_allow_empty(tmp_path, capsys):
    answers = {"text t0": "joy|fear", "text t1": "", "text t2": "anger"}
    server = FakeLLM(answers=answers, labels=LABELS).start()
    try:
        truth = {"t0": ["joy"], "t1": ["joy"], "t2": ["anger"]}
        inp, cfg, _ = _files(tmp_path, truth, [server])
        data = yaml.safe_load(cfg.read_text())
        data["task"]["allow_empty"] = True
        cfg.write_text(yaml.safe_dump(data))
        out = tmp_path / "out.parquet"
        rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
        assert rc == 0, err
        rows = pq.read_table(out).to_pylist()
        assert [r["labels"] for r in rows] == [["joy", "fear"], [], ["anger"]]  # a list column, the empty set kept
        assert rows[1]["label"] is None and rows[0]["label"] == "joy|fear"
        out_csv = tmp_path / "out.csv"
        rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out_csv))
        assert rc == 0, err
        with open(out_csv, newline="") as fh:
            got = list(csv.DictReader(fh))
        assert got[0]["label"] == "joy|fear"  # the readable joined column
    finally:
        server.stop()


def test_multilabel_config_errors(tmp_path, capsys):
    from conftest import one_line_error

    cfg = {
        "task": {"name": "t", "labels": ["a|b", "c"], "multi_label": True},
        "judges": [{"name": "x", "model": "m", "base_url": "http://127.0.0.1:9/v1"}],
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "in.csv").write_text("id,text\n1,hello\n")
    rc, err = label_main(
        capsys, str(tmp_path / "in.csv"), "-c", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "o.jsonl")
    )
    one_line_error(rc, err, "'|'")
    cfg["task"]["labels"] = ["a", "c"]
    cfg["mode"] = "candidates"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, err = label_main(
        capsys, str(tmp_path / "in.csv"), "-c", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "o.jsonl")
    )
    one_line_error(rc, err, "multi_label")
