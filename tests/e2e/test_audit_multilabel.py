"""`llmlabel audit` on a multi-label task: given label sets, suspects per (row, label), missing and extra labels,
cleanlab's multi-label method beside the judges, set-aware exports; a taxonomy refused in one line.

Three judges on their own in-test servers, each wrong on a few rows in its own way; the given sets carry
injected errors (a label dropped on some rows, one added on others) that the audit must find."""

from __future__ import annotations

import csv
import json
import random

import pytest
import yaml
from conftest import one_line_error, read_jsonl, run_main
from fakeserver import FakeLLM

LABELS = ["joy", "anger", "fear", "sadness", "surprise"]
WORDS = {
    "joy": ["delighted", "happy", "glad"],
    "anger": ["furious", "livid", "mad"],
    "fear": ["scared", "afraid", "terrified"],
    "sadness": ["gloomy", "sad", "tearful"],
    "surprise": ["astonished", "amazed", "stunned"],
}
N = 120
DROPPED = {f"r{i}" for i in range(3, N, 15)}  # 8 rows: one true label left out of the given set
ADDED = {f"r{i}" for i in range(7, N, 15)}  # 8 rows: a label that does not apply added


def _truth() -> dict[str, list[str]]:
    r = random.Random(3)
    return {f"r{i}": r.sample(LABELS, r.choice([1, 1, 2, 2, 3])) for i in range(N)}


def _text(rid: str, labs: list[str]) -> str:
    r = random.Random(rid)
    return f"comment {rid}: " + " and ".join(r.choice(WORDS[lab]) for lab in labs)


def _given(truth: dict[str, list[str]]) -> tuple[dict[str, list[str]], set[tuple[str, str]], set[tuple[str, str]]]:
    """The given sets, and the injected (row, label) errors: missing ones, extra ones."""
    r = random.Random(5)
    given, missing, extra = {}, set(), set()
    for rid, s in truth.items():
        s = list(s)
        if rid in DROPPED:
            lab = s.pop(r.randrange(len(s)))
            missing.add((rid, lab))
        elif rid in ADDED:
            lab = r.choice([x for x in LABELS if x not in s])
            s.append(lab)
            extra.add((rid, lab))
        given[rid] = s
    return given, missing, extra


def _judge(truth: dict[str, list[str]], seed: int) -> dict[str, str]:
    """A judge's answers by text: the true set, with one label dropped or added on about a tenth of the rows."""
    r = random.Random(seed)
    out = {}
    for rid, s in truth.items():
        s = list(s)
        if r.random() < 0.1:
            if len(s) > 1 and r.random() < 0.5:
                s.pop()
            else:
                s.append(r.choice([x for x in LABELS if x not in s]))
        out[_text(rid, truth[rid])] = "|".join(s)
    return out


@pytest.fixture
def setup(tmp_path):
    truth = _truth()
    given, missing, extra = _given(truth)
    servers = [FakeLLM(answers=_judge(truth, 10 + k), labels=LABELS).start() for k in range(3)]
    with open(tmp_path / "in.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "emotions"])
        w.writerows([[rid, _text(rid, truth[rid]), "|".join(given[rid])] for rid in truth])
    with open(tmp_path / "gold.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label"])
        w.writerows([[rid, "|".join(s)] for rid, s in truth.items()])
    cfg = {
        "task": {"name": "emotions", "labels": LABELS, "multi_label": True},
        "judges": [{"name": n, "model": "m", "base_url": s.base_url} for n, s in zip("abc", servers)],
        "cache_dir": str(tmp_path / "cache"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    yield tmp_path, truth, given, missing, extra, servers
    for s in servers:
        s.stop()


@pytest.mark.slow  # ~14 s here: 360 answers from in-process servers, a classifier fit, cleanlab
def test_multilabel_audit_finds_missing_and_extra_labels(setup, capsys):
    tmp, truth, given, missing, extra, servers = setup
    out, rep, ls, rev = (tmp / n for n in ("audit.jsonl", "audit.html", "ls.json", "review.csv"))
    rc, _, err = run_main(
        capsys, "audit", str(tmp / "in.csv"), "-c", str(tmp / "c.yaml"), "-o", str(out), "--label-column",
        "emotions", "--gold", str(tmp / "gold.csv"), "--html", str(rep), "--export-labelstudio", str(ls),
        "--export-csv", str(rev), "-q",
    )  # fmt: skip
    assert rc == 0, err
    # The judges were asked for their own sets (the multi-label schema), never shown the given one.
    body = servers[0].bodies[0]
    assert body["response_format"]["json_schema"]["schema"]["properties"]["labels"]["type"] == "array"
    assert "delighted|" not in json.dumps(body) and sum(s.requests for s in servers) == 3 * N
    recs = read_jsonl(out)
    assert len(recs) == N
    assert [r["score"] for r in recs] == sorted(r["score"] for r in recs)  # most suspicious first
    by_id = {r["id"]: r for r in recs}
    assert by_id["r0"]["given_labels"] == given["r0"] and by_id["r0"]["given_label"] == "|".join(given["r0"])
    found_missing = {(r["id"], lab) for r in recs for lab in r["missing"]}
    found_extra = {(r["id"], lab) for r in recs for lab in r["extra"]}
    # Each injected error is found, as the right kind, and little else is flagged.
    assert missing <= found_missing and extra <= found_extra, (missing - found_missing, extra - found_extra)
    wrong = missing | extra
    flagged_pairs = found_missing | found_extra
    assert len(flagged_pairs & wrong) / len(flagged_pairs) >= 0.8, flagged_pairs - wrong
    for r in recs:
        assert r["flagged"] == bool(r["missing"] or r["extra"])
        assert all(0.5 <= p <= 1 for p in [*r["missing"].values(), *r["extra"].values()])
        assert set(r["probs"]) == set(LABELS)
    for rid, lab in missing:  # the suggestion restores a dropped label
        assert lab in by_id[rid]["suggested_labels"]
    # cleanlab's multi-label method ran beside the judges, per row and per label.
    assert all(r["cleanlab_score"] is not None and isinstance(r["cleanlab_suspects"], list) for r in recs)
    summary = json.loads((tmp / "audit.jsonl.summary.json").read_text())
    assert summary["multi_label"] and summary["flagged_missing"] >= len(missing)
    assert summary["signals"]["cleanlab_issues"] is not None
    g = summary["gold"]
    assert g["wrong_pairs"] == len(wrong) and g["combined"]["pairs"]["recall"] == 1.0
    assert "missing" in err and "extra" in err  # the summary lines on stderr
    # Exports carry the suggested set: a choice="multiple" control, the set as the prediction.
    tasks = json.loads(ls.read_text())
    assert len(tasks) == sum(r["flagged"] for r in recs)
    for t in tasks:
        r = by_id[t["data"]["row_id"]]
        assert t["predictions"][0]["result"][0]["value"]["choices"] == r["suggested_labels"]
    assert 'choice="multiple"' in (tmp / "ls.labeling.xml").read_text()
    with open(rev, newline="") as fh:
        sheet = list(csv.DictReader(fh))
    assert {"missing", "extra", "corrected_label"} <= set(sheet[0]) and len(sheet) == len(tasks)
    page = rep.read_text()
    assert "missing labels" in page and "false adds" in page


@pytest.mark.slow
def test_multilabel_audit_in_python_reads_lists(setup):
    """`llmlabel.audit()` on a DataFrame whose given sets are lists: the same flags, set columns added."""
    import pandas as pd

    import llmlabel

    tmp, truth, given, missing, extra, _ = setup
    frame = pd.DataFrame(
        {"id": list(truth), "text": [_text(r, truth[r]) for r in truth], "emotions": list(given.values())}
    )
    got = llmlabel.audit(frame, config=tmp / "c.yaml", label_column="emotions", id_column="id")
    assert {"missing_labels", "extra_labels", "is_label_issue"} <= set(got.columns)
    found = {(rid, lab) for rid, d in zip(got["id"], got["missing_labels"]) for lab in d}
    assert missing <= found
    assert got.attrs["llmlabel_audit"]["multi_label"]


def test_multilabel_audit_errors_are_one_line(setup, capsys):
    tmp, *_, servers = setup
    (tmp / "bad.csv").write_text("id,text,emotions\n1,hello,joy|glee\n2,hi,anger\n")
    rc, _, err = run_main(capsys, "audit", str(tmp / "bad.csv"), "-c", str(tmp / "c.yaml"), "-o", str(tmp / "o.jsonl"),
                          "--label-column", "emotions")  # fmt: skip
    one_line_error(rc, err, "'glee'", "task.labels")
    rc, _, err = run_main(capsys, "audit", str(tmp / "in.csv"), "-c", str(tmp / "c.yaml"), "-o", str(tmp / "o.jsonl"),
                          "--label-column", "emotions", "--verify")  # fmt: skip
    one_line_error(rc, err, "--verify", "drop --verify")
    # A Label Studio project whose control takes one choice cannot hold the suggested sets: refused before paying.
    choices = "".join(f'<Choice value="{lab}"/>' for lab in LABELS)
    xml = f'<View><Text name="text" value="$text"/><Choices name="emo" toName="text">{choices}</Choices></View>'
    (tmp / "ls.xml").write_text(xml)
    rc, _, err = run_main(capsys, "audit", str(tmp / "in.csv"), "-c", str(tmp / "c.yaml"), "-o", str(tmp / "o.jsonl"),
                          "--label-column", "emotions", "--export-labelstudio", str(tmp / "ls.json"),
                          "--ls-config", str(tmp / "ls.xml"))  # fmt: skip
    one_line_error(rc, err, 'choice="multiple"')
    assert not (tmp / "o.jsonl").exists() and sum(s.requests for s in servers) == 0


def test_taxonomy_audit_is_refused_in_one_line(tmp_path, capsys, fake):
    cfg = {
        "task": {"name": "things", "taxonomy": {"animals": ["dog", "cat"], "vehicles": ["car", "bike"]}},
        "judges": [{"name": "a", "model": "m", "base_url": fake.base_url}],
        "cache_dir": str(tmp_path / "cache"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "in.csv").write_text("id,text,label\n1,a dog,dog\n2,a car,car\n")
    out = tmp_path / "o.jsonl"
    rc, _, err = run_main(capsys, "audit", str(tmp_path / "in.csv"), "-c", str(tmp_path / "c.yaml"), "-o", str(out))
    one_line_error(rc, err, "taxonomy", "one level at a time")
    assert fake.requests == 0 and not out.exists()
