"""`llmlabel audit`: scores, sorting, flags, the HTML report, exports and the out-of-set label error."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import read_jsonl, run_cli, run_main, write_config

from llmlabel.auditing.signals import auroc, choose_flags, score_signals

WORDS = {"positive": ["great", "lovely", "superb", "excellent"], "negative": ["awful", "broken", "poor", "terrible"]}
FLIPPED = {"t3", "t10", "t17", "t24", "t31"}


def corpus(tmp_path: Path, n: int = 60, extra: dict[str, str] | None = None) -> tuple[Path, dict[str, str]]:
    """A labeled CSV where the rows in FLIPPED carry the wrong label; returns it and the true labels by text."""
    rows, truth = [], {}
    for i in range(n):
        lab = "positive" if i % 2 else "negative"
        text = f"item {i} was {WORDS[lab][i % 4]} and {WORDS[lab][(i // 4) % 4]} <b>&"
        truth[text] = lab
        given = ("negative" if lab == "positive" else "positive") if f"t{i}" in FLIPPED else lab
        rows.append(
            {
                "id": f"t{i}",
                "text": text,
                "gold_label": given,
                **({"gold_label": extra[f"t{i}"]} if extra and f"t{i}" in extra else {}),
            }
        )
    path = tmp_path / "in.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "gold_label"])
        w.writeheader()
        w.writerows(rows)
    return path, truth


def judges(url: str) -> list[dict[str, object]]:
    return [{"name": n, "model": f"fake-{n}", "base_url": url, "concurrency": 8, "timeout": 5} for n in ("a", "b", "c")]


@pytest.mark.slow
def test_audit_end_to_end(tmp_path, fake):
    inp, truth = corpus(tmp_path)
    fake.answers = truth
    cfg = write_config(tmp_path / "c.yaml", fake.base_url, judges=judges(fake.base_url))
    out, rep, ls, rev = (tmp_path / n for n in ("audit.jsonl", "report.html", "ls.json", "review.csv"))
    gold = tmp_path / "gold.csv"
    gold.write_text("id,label\n" + "".join(f"t{i},{'positive' if i % 2 else 'negative'}\n" for i in range(60)))
    r = run_cli(
        "audit",
        str(inp),
        "-c",
        str(cfg),
        "-o",
        str(out),
        "--label-column",
        "gold_label",
        "-q",
        "--html",
        str(rep),
        "--export-labelstudio",
        str(ls),
        "--export-csv",
        str(rev),
        "--gold",
        str(gold),
    )
    assert r.returncode == 0, r.stderr
    recs = read_jsonl(out)
    assert len(recs) == 60
    for k in (
        "id",
        "text",
        "given_label",
        "suggested_label",
        "score",
        "flagged",
        "judge_score",
        "judge_rank",
        "cleanlab_score",
        "cleanlab_rank",
        "cleanlab_issue",
        "judges",
    ):
        assert k in recs[0], k
    scores = [x["score"] for x in recs]
    assert scores == sorted(scores) and all(0 <= s <= 1 for s in scores)
    assert {x["id"] for x in recs if x["flagged"]} == FLIPPED
    assert [x["id"] for x in recs[:5]] and {x["id"] for x in recs[:5]} == FLIPPED  # most suspicious first
    top = recs[0]
    assert top["suggested_label"] != top["given_label"] and set(top["judges"]) == {"a", "b", "c"}
    summary = json.loads(out.with_name("audit.jsonl.summary.json").read_text())
    assert (
        summary["flagged"] == 5
        and summary["est_precision"] >= 0.8
        and set(summary["per_class"]) == {"positive", "negative"}
    )
    assert summary["gold"]["combined"]["precision"] == 1.0 and summary["gold"]["combined"]["recall"] == 1.0
    page = rep.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "<link" not in page and " src=" not in page  # self-contained: nothing to fetch
    for x in recs:
        assert (f"<td>{x['id']}</td>" in page) == x["flagged"]
        if x["flagged"]:
            assert html.escape(x["text"]) in page
    tasks = json.loads(ls.read_text())
    assert {t["data"]["row_id"] for t in tasks} == FLIPPED
    assert all(t["predictions"][0]["result"][0]["value"]["choices"] == [truth[t["data"]["text"]]] for t in tasks)
    with open(rev, newline="") as fh:
        sheet = list(csv.DictReader(fh))
    assert {s["id"] for s in sheet} == FLIPPED and all(s["corrected_label"] == "" for s in sheet)
    assert "a=" in sheet[0]["votes"]
    # A rerun is served from the cache (no new requests) and gives the same file.
    before = fake.requests
    r = run_cli("audit", str(inp), "-c", str(cfg), "-o", str(out), "--label-column", "gold_label", "-q")
    assert r.returncode == 0, r.stderr
    assert fake.requests == before and read_jsonl(out) == recs


@pytest.mark.slow
def test_audit_verify_csv_output(tmp_path, fake):
    inp, truth = corpus(tmp_path, n=20)
    fake.answers = truth
    cfg = write_config(tmp_path / "c.yaml", fake.base_url, judges=judges(fake.base_url)[:2])
    out = tmp_path / "audit.csv"
    r = run_cli("audit", str(inp), "-c", str(cfg), "-o", str(out), "--label-column", "gold_label", "--verify", "-q")
    assert r.returncode == 0, r.stderr
    assert any("Given label:" in m["content"] for b in fake.bodies for m in b["messages"])
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and float(rows[0]["score"]) <= float(rows[-1]["score"])
    # 20 rows: 10 per class, still enough for the 5-fold classifier.
    assert {r["id"] for r in rows if r["flagged"] == "True"} == FLIPPED & {f"t{i}" for i in range(20)}


def test_out_of_set_labels_are_an_error(tmp_path, fake, capsys):
    inp, truth = corpus(tmp_path, n=12, extra={"t2": "neutral", "t5": "neutral", "t7": ""})
    fake.answers = truth
    cfg = write_config(tmp_path / "c.yaml", fake.base_url, judges=judges(fake.base_url))
    out = tmp_path / "audit.jsonl"
    rc, _, err = run_main(capsys, "audit", str(inp), "-c", str(cfg), "-o", str(out), "--label-column", "gold_label")
    assert rc == 2 and "Traceback" not in err
    line = err.strip()
    assert "\n" not in line and "'neutral' (2 rows)" in line and "task.labels" in line and "can't be audited" in line
    assert not out.exists() and fake.requests == 0
    rc, _, err = run_main(capsys, "audit", str(inp), "-c", str(cfg), "-o", str(out), "--label-column", "nope", "-q")
    assert rc == 2 and "no label column 'nope'" in err


def test_choose_flags_and_auroc():
    # Expected precision of the prefix stays >= target, and no flagged row is more likely right than wrong.
    m, prec = choose_flags(np.array([0.99, 0.95, 0.9, 0.6, 0.4, 0.1]), 0.8)
    assert m == 4 and abs(prec - (0.99 + 0.95 + 0.9 + 0.6) / 4) < 1e-9
    assert choose_flags(np.array([0.99, 0.95, 0.3]), 0.5)[0] == 2
    assert choose_flags(np.array([0.7, 0.6]), 0.9)[0] == 0
    assert auroc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert auroc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5


def test_score_signals_judges_only():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, 300)
    given = true.copy()
    flip = rng.random(300) < 0.1
    given[flip] = (true[flip] + 1) % 3
    votes = np.column_stack([np.where(rng.random(300) < a, true, rng.integers(0, 3, 300)) for a in (0.9, 0.8, 0.75)])
    sig = score_signals(votes, given, 3)
    assert sig.cleanlab_score is None and sig.classifier_note == "disabled"
    assert auroc(-sig.score, flip) > 0.95
    assert np.allclose(sig.post.sum(axis=1), 1) and sig.judge_accuracy.shape == (4,)
