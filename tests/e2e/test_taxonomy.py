"""A taxonomy (task.taxonomy): labeled top-down, level by level, stopping at the parent when the judges are
unsure. Three in-test servers, one a judge, each knowing its own path for each text (so the judges can be
made to agree or not at each level)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from conftest import label_main, one_line_error, read_jsonl, run_main
from fakeserver import FakeLLM

TREE = {
    "animals": {"mammals": ["dog", "cat"], "birds": ["eagle", "sparrow"]},
    "vehicles": ["car", "bike", "other"],  # "other" is also under misc: two nodes, one name
    "misc": ["other"],  # one child: taken without a question
}
TEXTS = {
    "dog": "a dog barks at night",
    "bird": "a small bird sings",
    "wheels": "something with wheels",
    "misc": "a thing of no kind",
    "vother": "a hovercraft",
}
# Each judge's path for each text: they agree, or not, level by level.
PATHS = {
    "a": {
        "dog": ["animals", "mammals", "dog"],
        "bird": ["animals", "birds", "sparrow"],
        "wheels": ["vehicles", "car"],
        "misc": ["misc", "other"],
        "vother": ["vehicles", "other"],
    },
    "b": {
        "dog": ["animals", "mammals", "dog"],
        "bird": ["animals", "birds", "sparrow"],
        "wheels": ["vehicles", "bike"],
        "misc": ["misc", "other"],
        "vother": ["vehicles", "other"],
    },
    "c": {
        "dog": ["animals", "mammals", "dog"],
        "bird": ["animals", "birds", "eagle"],
        "wheels": ["vehicles", "other"],
        "misc": ["misc", "other"],
        "vother": ["vehicles", "other"],
    },
}
GOLD = {
    "dog": ["animals", "mammals", "dog"],
    "bird": ["animals", "birds", "eagle"],
    "wheels": ["vehicles", "car"],
    "misc": ["misc", "other"],
    "vother": ["vehicles", "other"],
}


@pytest.fixture
def servers():
    ss = {n: FakeLLM(paths={TEXTS[k]: p for k, p in paths.items()}).start() for n, paths in PATHS.items()}
    yield ss
    for s in ss.values():
        s.stop()


def _setup(tmp_path, servers, tree=None, **task_extra):
    with open(tmp_path / "in.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerows(TEXTS.items())
    cfg = {
        "task": {"name": "things", "taxonomy": TREE if tree is None else tree, **task_extra},
        "judges": [{"name": n, "model": "m", "base_url": s.base_url} for n, s in servers.items()],
        "cache_dir": str(tmp_path / "cache"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp_path / "in.csv", tmp_path / "c.yaml"


def _requests(servers) -> int:
    return sum(s.requests for s in servers.values())


def test_labels_top_down_and_stops_at_the_parent_when_unsure(tmp_path, capsys, servers, monkeypatch):
    inp, cfg = _setup(tmp_path, servers)
    out = tmp_path / "out.jsonl"
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    got = {r["id"]: r for r in read_jsonl(out)}
    assert got["dog"]["path"] == ["animals", "mammals", "dog"] and got["dog"]["depth"] == 3
    assert got["dog"]["label"] == "dog" and got["dog"]["level_confidence"] == [1.0, 1.0, 1.0]
    # Two judges of three at the last level: 0.6667 >= 0.5, taken; the row's confidence is the path's.
    assert got["bird"]["path"] == ["animals", "birds", "sparrow"]
    assert got["bird"]["level_confidence"] == [1.0, 1.0, 0.6667] and got["bird"]["confidence"] == 0.6667
    assert got["bird"]["judges"]["c"]["path"] == ["animals", "birds", "eagle"]
    # Three judges, three answers at level 2 (a third each): the row stops at its parent and says so.
    w = got["wheels"]
    assert w["path"] == ["vehicles"] and w["depth"] == 1 and w["label"] == "vehicles"
    assert w["level_confidence"] == [1.0, 0.3333] and w["error"] is None
    # One child: no question; "other" under misc is not "other" under vehicles.
    assert got["misc"]["path"] == ["misc", "other"] and got["vother"]["path"] == ["vehicles", "other"]
    # misc asked one level, the others two (dog and bird three) — three judges each.
    assert _requests(servers) == 3 * (3 + 3 + 2 + 1 + 2)
    bodies = servers["a"].bodies
    top = bodies[0]["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"]
    assert top == ["animals", "vehicles", "misc"]
    second = next(b for b in bodies if "Category so far: animals\n" in b["messages"][-1]["content"])
    assert second["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == ["mammals", "birds"]
    # One system message for every level: the shared prefix servers reuse.
    assert len({b["messages"][0]["content"] for b in bodies}) == 1

    # A rerun pays nothing (the bulk cache pass walks the rows down the tree) and writes the same rows: no
    # row even reaches the per-row path.
    before = _requests(servers)

    async def per_row(*args, **kw):
        raise AssertionError("a cached row was asked on the per-row path")

    monkeypatch.setattr("llmlabel.pipeline.taxonomy.ask", per_row)
    again = tmp_path / "again.jsonl"
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(again))
    assert rc == 0, err
    assert _requests(servers) == before
    assert read_jsonl(again) == read_jsonl(out)

    # A stricter threshold stops the bird at "birds", from the cache alone.
    inp, cfg2 = _setup(tmp_path, servers, taxonomy_threshold=0.7)
    strict = tmp_path / "strict.jsonl"
    rc, err = label_main(capsys, str(inp), "-c", str(cfg2), "-o", str(strict))
    assert rc == 0, err
    assert _requests(servers) == before
    bird = {r["id"]: r for r in read_jsonl(strict)}["bird"]
    assert bird["path"] == ["animals", "birds"] and bird["level_confidence"] == [1.0, 1.0, 0.6667]
    monkeypatch.undo()

    # eval: accuracy, coverage and precision per level, and hierarchical F1, against label_l* columns.
    with open(tmp_path / "gold.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["id", "label_l1", "label_l2", "label_l3"])
        wr.writerows([[k, *p, *[""] * (3 - len(p))] for k, p in GOLD.items()])
    rc, text, err = run_main(capsys, "eval", str(out), "--gold", str(tmp_path / "gold.csv"))
    assert rc == 0, err
    rep = json.loads((tmp_path / "out.jsonl.eval.json").read_text())
    lv = {x["level"]: x for x in rep["levels"]}
    assert lv[1]["accuracy"] == 1.0
    # level 2: all five have one; wheels stopped (coverage 4/5), the four that reached it are right
    assert lv[2]["coverage"] == 0.8 and lv[2]["precision"] == 1.0 and lv[2]["accuracy"] == 0.8
    # level 3: dog right, bird wrong (sparrow)
    assert lv[3]["rows"] == 2 and lv[3]["accuracy"] == 0.5
    # prefixes: predicted 3+3+1+2+2 = 11, gold 3+3+2+2+2 = 12, common 3+2+1+2+2 = 10
    assert rep["hierarchical"]["precision"] == round(10 / 11, 6) and rep["hierarchical"]["recall"] == round(10 / 12, 6)
    assert rep["exact_path_accuracy"] == 0.6
    assert "level 2 (5 rows): accuracy 0.8000, coverage 0.8000, precision 1.0000" in text
    # The same gold as a "/"-joined path column.
    with open(tmp_path / "gold2.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["id", "path"])
        wr.writerows([[k, "/".join(p)] for k, p in GOLD.items()])
    rc, _, err = run_main(capsys, "eval", str(out), "--gold", str(tmp_path / "gold2.csv"), "-o", str(tmp_path / "r"))
    assert rc == 0, err
    assert json.loads((tmp_path / "r").read_text())["levels"] == rep["levels"]


def test_taxonomy_from_a_json_file_with_logprob_codes(tmp_path, capsys, servers):
    """A taxonomy file next to the config; a logprob judge answers one code among the node's children."""
    (tmp_path / "tree.json").write_text(json.dumps(TREE))
    inp, cfg = _setup(tmp_path, {"a": servers["a"]}, tree="tree.json", labels={"misc": "anything else"})
    data = yaml.safe_load(cfg.read_text())
    data["judges"][0]["logprobs"] = True
    cfg.write_text(yaml.safe_dump(data))
    out = tmp_path / "out.jsonl"
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    got = {r["id"]: r for r in read_jsonl(out)}
    assert got["dog"]["path"] == ["animals", "mammals", "dog"]
    assert got["dog"]["level_confidence"] == [0.9, 0.9, 0.9] and got["dog"]["confidence"] == 0.729
    body = servers["a"].bodies[0]
    assert body["max_tokens"] == 1 and "C = misc: anything else" in body["messages"][-1]["content"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"taxonomy": "missing.json"}, "cannot read"),
        ({"taxonomy": {"only": ["one"]}}, "at least two top-level nodes"),
        ({"taxonomy": TREE, "labels": {"fish": "x"}}, "'fish' is not a node of task.taxonomy"),
        ({"taxonomy": TREE, "shortlist": 3}, "task.taxonomy works with one path per text"),
        ({"taxonomy": {"a": ["x", "x"], "b": None}}, "'x' appears twice under a"),
        ({"taxonomy": {"a": 3, "b": None}}, "the children of a must be a list or a mapping"),
        ({"taxonomy": TREE, "aggregate": "dawid_skene"}, "aggregate: dawid_skene is not supported with task.taxonomy"),
    ],
)
def test_taxonomy_config_errors(tmp_path, capsys, extra, needle):
    (tmp_path / "in.csv").write_text("id,text\n1,x\n")
    extra = dict(extra)
    top = {k: extra.pop(k) for k in ("aggregate",) if k in extra}
    cfg = {
        **top,
        "task": {"name": "t", **extra},
        "judges": [{"name": "a", "model": "m", "base_url": "http://127.0.0.1:9"}],
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, err = label_main(
        capsys, str(tmp_path / "in.csv"), "-c", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "o.jsonl")
    )
    one_line_error(rc, err, needle)
    assert not (tmp_path / "o.jsonl").exists()


def test_prompt_and_plan_show_the_top_level_question(tmp_path, capsys, servers):
    inp, cfg = _setup(tmp_path, {"a": servers["a"]})
    rc, out, err = run_main(capsys, "prompt", str(inp), "-c", str(cfg))
    assert rc == 0, err
    shown = json.loads(out)
    assert "Top-level categories:\n- animals\n- vehicles\n- misc" in shown["messages"][-1]["content"]
    assert shown["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == [
        "animals",
        "vehicles",
        "misc",
    ]
    rc, out, err = run_main(capsys, "plan", str(inp), "-c", str(cfg))
    assert rc == 0, err
    assert "Top-level categories:" in out and servers["a"].requests == 0
