"""Many labels (task.shortlist): each text is shown only the labels nearest to it, and the next ones on
"none of these". Against an in-test server that knows each text's label and answers "none of these" when the
label it knows is not on the list it was shown."""

from __future__ import annotations

import csv
import itertools

import pytest
import yaml
from conftest import label_main, one_line_error, read_jsonl
from fakeserver import FakeLLM

VERBS = ["book", "cancel", "change", "check", "find", "pay", "report", "reset"]
NOUNS = ["flight", "hotel", "card", "password", "order", "bill"]
LABELS = {f"{v}_{n}": f"the user wants to {v} a {n}" for v, n in itertools.product(VERBS, NOUNS)}  # 48 labels


def _rows() -> list[tuple[str, str, str]]:
    rows = [
        (f"r{i}", f"could you {v} my {n} please", f"{v}_{n}")
        for i, (v, n) in enumerate(itertools.product(VERBS, NOUNS))
    ]
    # Words no label shares: its label is not on the first shortlist; "none of these" finds it on a later one.
    rows.append(("odd", "zzz qqq xxx", "reset_bill"))
    return rows


@pytest.fixture
def server():
    s = FakeLLM(answers={text: gold for _, text, gold in _rows()}, labels=list(LABELS)).start()
    yield s
    s.stop()


def _cfg(tmp_path, server, **task_extra):
    with open(tmp_path / "in.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerows([[rid, text] for rid, text, _ in _rows()])
    cfg = {
        "task": {"name": "intents", "labels": LABELS, **task_extra},
        "judges": [{"name": "a", "model": "m", "base_url": server.base_url}],
        "cache_dir": str(tmp_path / "cache"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "in.csv", tmp_path / "c.yaml"


@pytest.mark.slow
def test_shortlist_asks_few_labels_and_moves_on_when_none_fits(tmp_path, capsys, server):
    inp, cfg = _cfg(tmp_path, server, shortlist=6, shortlist_rounds=8)
    out = tmp_path / "out.jsonl"
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    got = {r["id"]: r for r in read_jsonl(out)}
    gold = {rid: g for rid, _, g in _rows()}
    assert all(got[rid]["label"] == g for rid, g in gold.items()), [
        (r, got[r]["label"], g) for r, g in gold.items() if got[r]["label"] != g
    ]
    systems = {b["messages"][0]["content"] for b in server.bodies}
    assert len(systems) == 1  # the shared prefix: one system message for every row and shortlist
    first = server.bodies[0]
    enum = first["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"]
    assert len(enum) == 7 and enum[-1] == "none of these"  # six labels and the escape, not 48
    assert first["messages"][-1]["content"].count("\n- ") == 7
    # Every row whose words name its label is answered from its first list: one request; the odd one needed more.
    assert server.requests > len(gold) and server.requests <= len(gold) + 7
    # A rerun reads every answer from the cache (the bulk pass follows each row's shortlists).
    before = server.requests
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(tmp_path / "again.jsonl"))
    assert rc == 0, err
    assert server.requests == before
    assert [r["label"] for r in read_jsonl(tmp_path / "again.jsonl")] == [got[rid]["label"] for rid, _, _ in _rows()]


@pytest.mark.slow
def test_shortlist_with_label_codes(tmp_path, capsys, server):
    """A logprob judge is asked one code among its list's (and "none of these"), its distribution over them."""
    inp, cfg = _cfg(tmp_path, server, shortlist=6)
    data = yaml.safe_load(cfg.read_text())
    data["judges"][0]["logprobs"] = True
    cfg.write_text(yaml.safe_dump(data))
    out = tmp_path / "out.jsonl"
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    got = {r["id"]: r for r in read_jsonl(out)}
    assert got["r0"]["label"] == "book_flight" and got["r0"]["probs"]["book_flight"] > 0.5
    body = server.bodies[0]
    assert body["max_tokens"] == 1 and "G = none of these" in body["messages"][-1]["content"]


@pytest.mark.slow
def test_shortlist_rounds_run_out(tmp_path, capsys, server):
    """Every list shown said "none of these": the row has no label and says why (a rerun asks nothing new)."""
    inp, cfg = _cfg(tmp_path, server, shortlist=6, shortlist_rounds=1)
    out = tmp_path / "out.jsonl"
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    got = {r["id"]: r for r in read_jsonl(out)}
    assert got["r0"]["label"] == "book_flight"
    assert got["odd"]["label"] is None and "none of the shortlisted labels fits" in got["odd"]["error"]


@pytest.mark.slow
def test_pinned_labels_are_on_every_shortlist(tmp_path, capsys, server):
    """A catch-all label pinned to every list: the odd row finds it on its first list (one round), and each
    list shows five ranked labels, the pinned one and the escape."""
    inp, cfg = _cfg(tmp_path, server, shortlist=6, shortlist_rounds=1, shortlist_pinned=["reset_bill"])
    out = tmp_path / "out.jsonl"
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    got = {r["id"]: r for r in read_jsonl(out)}
    assert got["odd"]["label"] == "reset_bill" and got["r0"]["label"] == "book_flight"
    enums = [b["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] for b in server.bodies]
    assert all(len(e) == 7 and e[-2:] == ["reset_bill", "none of these"] for e in enums)
    assert server.requests == len(_rows())


def test_pinned_labels_must_be_labels(tmp_path, capsys, server):
    inp, cfg = _cfg(tmp_path, server, shortlist=6, shortlist_pinned=["nope"])
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    one_line_error(rc, err, "'nope' is not in task.labels")
