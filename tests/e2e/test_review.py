"""`llmlabel review` end to end: label with the fake server, pick rows, answer them as a human would, merge."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest
from conftest import label_main, one_line_error, read_jsonl, run_main, write_config, write_corpus

from llmlabel.review.records import HumanAnswer


def truth(text: str) -> str:
    return "positive" if "great" in text else "negative"


@pytest.fixture
def labeled(tmp_path: Path, fake, capsys) -> tuple[Path, Path]:
    corpus = tmp_path / "in.csv"
    write_corpus(corpus, 60)
    cfg = write_config(tmp_path / "cfg.yaml", fake.base_url)
    out = tmp_path / "out.jsonl"
    rc, err = label_main(capsys, str(corpus), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    return out, cfg


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def fill(sheet: Path, dest: Path, answer=lambda r: truth(r["text"])) -> None:
    rows = read_csv(sheet)
    with open(dest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "human_label": answer(r)})


def test_review_round_trip(labeled, tmp_path: Path, capsys) -> None:
    out, cfg = labeled
    before = out.read_bytes()
    sheet = tmp_path / "sheet.csv"
    args = [str(out), "-c", str(cfg)]
    rc, _, err = run_main(
        capsys,
        "review",
        *args,
        "--budget",
        "30",
        "--validation",
        "20",
        "--round-size",
        "5",
        "--target-accuracy",
        "0.99",
        "-o",
        str(sheet),
    )
    assert rc == 0, err
    rows = read_csv(sheet)
    assert len(rows) == 25 and list(rows[0]) == ["id", "text", "label", "confidence", "why", "human_label"]
    assert all(r["why"] and r["human_label"] == "" for r in rows)
    assert "random for the estimate" in err
    # Asked again before answering: the same rows, not a new draw.
    rc, _, err = run_main(capsys, "review", *args, "-o", str(tmp_path / "again.csv"))
    assert rc == 0, err
    assert [r["id"] for r in read_csv(tmp_path / "again.csv")] == [r["id"] for r in rows]
    filled = tmp_path / "filled.csv"
    fill(sheet, filled)
    # A filled sheet is never written over before its answers are merged.
    one_line_error(*run_main(capsys, "review", *args, "-o", str(filled))[::2], "not merged yet")
    final = tmp_path / "final.jsonl"
    rc, _, err = run_main(capsys, "review", *args, "--answers", str(filled), "-o", str(final))
    assert rc == 0, err
    recs = read_jsonl(final)
    assert len(recs) == 60 and out.read_bytes() == before
    human = {r["id"]: r for r in recs if r["label_source"] == "human"}
    assert len(human) == 25 and all(r["label"] == truth(r["text"]) for r in human.values())
    assert {r["label_source"] for r in recs} == {"human", "model"}
    summary = json.loads((tmp_path / "final.jsonl.summary.json").read_text())
    for k in ("estimated_accuracy", "ci_low", "ci_high", "human_labels", "accepted_rows", "target_met", "per_label"):
        assert k in summary
    assert summary["human_labels"] == 25 and summary["target_met"] is False and summary["budget_left"] == 5
    assert summary["ci_low"] <= summary["estimated_accuracy"] <= summary["ci_high"]
    # Target not met, budget left: the next round's rows, never one already answered.
    nxt = tmp_path / "final.jsonl.round2.csv"
    assert "5 more rows to review written to" in err and nxt.is_file()
    assert not {r["id"] for r in read_csv(nxt)} & set(human)
    fill(nxt, tmp_path / "filled2.csv")
    rc, _, err = run_main(capsys, "review", *args, "--answers", str(tmp_path / "filled2.csv"), "-o", str(final))
    assert rc == 0, err
    summary = json.loads((tmp_path / "final.jsonl.summary.json").read_text())
    assert summary["human_labels"] == 30 and summary["budget_left"] == 0 and "next_round" not in summary
    assert "budget spent" in err
    # Round 1's sheet again changes nothing: the answers are the same.
    rc, _, err = run_main(capsys, "review", *args, "--answers", str(filled), "-o", str(final))
    assert rc == 0 and "0 new answers" in err


def test_review_errors_are_one_line(labeled, tmp_path: Path, capsys) -> None:
    out, cfg = labeled
    args = [str(out), "-c", str(cfg)]
    final = tmp_path / "final.jsonl"
    one_line_error(
        *run_main(capsys, "review", *args, "--answers", str(tmp_path / "x.csv"), "-o", str(final))[::2],
        "no review was started",
    )
    one_line_error(*run_main(capsys, "review", *args, "-o", str(tmp_path / "s.csv"))[::2], "--budget")
    one_line_error(*run_main(capsys, "review", *args, "--budget", "10", "-o", str(out))[::2], "choose another -o")
    one_line_error(*run_main(capsys, "review", *args, "--budget", "10", "-o", str(cfg))[::2])
    sheet = tmp_path / "sheet.csv"
    assert run_main(capsys, "review", *args, "--budget", "10", "-o", str(sheet))[0] == 0
    one_line_error(*run_main(capsys, "review", *args, "--budget", "11", "-o", str(sheet))[::2], "other settings")
    rows = read_csv(sheet)
    bad = tmp_path / "bad.csv"
    fill(sheet, bad, answer=lambda r: "neutral")
    one_line_error(*run_main(capsys, "review", *args, "--answers", str(bad), "-o", str(final))[::2], "'neutral'")
    with open(bad, "w", newline="") as fh:
        fh.write("id,human_label\nnot-a-row,positive\n")
    one_line_error(*run_main(capsys, "review", *args, "--answers", str(bad), "-o", str(final))[::2], "not-a-row")
    one_line_error(*run_main(capsys, "review", *args, "--answers", str(bad), "-o", str(bad))[::2], "choose another")
    assert not final.exists()
    good = tmp_path / "good.csv"
    fill(sheet, good)
    assert run_main(capsys, "review", *args, "--answers", str(good), "-o", str(final))[0] == 0
    flip = tmp_path / "flip.csv"
    fill(sheet, flip, answer=lambda r: "negative" if truth(r["text"]) == "positive" else "positive")
    one_line_error(*run_main(capsys, "review", *args, "--answers", str(flip), "-o", str(final))[::2], "never replaced")
    assert len(rows) == 10


def test_review_through_label_studio_stand_in(labeled, tmp_path: Path, capsys, monkeypatch) -> None:
    """The Label Studio path through a stand-in for llmlabel.review.labelstudio (its own tests are its module's)."""
    out, cfg = labeled
    pushed: list = []
    mod = types.ModuleType("llmlabel.review.labelstudio")

    def push(url, token, items, labels, project=None, **kw):
        pushed.append((url, token, [it.id for it in items], labels, project, kw))
        return project or 7

    def pull(url, token, project):
        return [HumanAnswer(i, "positive", annotator="ann@example.com", source="labelstudio") for i in pushed[0][2]]

    mod.push, mod.pull, mod.read_export = push, pull, lambda p: []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llmlabel.review.labelstudio", mod)
    args = [str(out), "-c", str(cfg), "--labelstudio", "http://ls.example"]
    one_line_error(*run_main(capsys, "review", *args, "--budget", "8")[::2], "LABEL_STUDIO_API_KEY")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "tok-123")
    rc, _, err = run_main(capsys, "review", *args, "--budget", "8", "--validation", "8", "--from-name", "sentiment")
    assert rc == 0 and "project 7" in err, err
    assert pushed[0][5] == {"text_key": "text", "from_name": "sentiment", "to_name": "text"}
    assert pushed[0][1] == "tok-123" and len(pushed[0][2]) == 8 and pushed[0][3] == ["positive", "negative"]
    final = tmp_path / "final.jsonl"
    rc, _, err = run_main(capsys, "review", *args, "-o", str(final))  # the project the rows went to
    assert rc == 0, err
    assert "tok-123" not in err
    recs = [r for r in read_jsonl(final) if r["label_source"] == "human"]
    assert len(recs) == 8 and all(r["annotator"] == "ann@example.com" for r in recs)
    one_line_error(*run_main(capsys, "review", *args, "--project", "9", "-o", str(final))[::2], "project 7")


def test_audit_spot_check_states_flag_precision(tmp_path: Path, capsys) -> None:
    labels = ["positive", "negative"]
    cfg = write_config(tmp_path / "cfg.yaml", None)
    recs = []
    for i in range(80):
        flagged = i < 20
        given = labels[i % 2]
        recs.append(
            {
                "id": f"a{i}",
                "text": f"t{i}",
                "given_label": given,
                "suggested_label": labels[(i + 1) % 2] if flagged else given,
                "score": 0.1 if flagged else 0.9,
                "flagged": flagged,
                "probs": {},
                "judges": {},
            }
        )
    audit = tmp_path / "audit.jsonl"
    audit.write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "audit.jsonl.summary.json").write_text(json.dumps({"est_precision": 0.9}))
    sheet = tmp_path / "sheet.csv"
    rc, _, err = run_main(
        capsys, "review", str(audit), "-c", str(cfg), "--budget", "30", "--validation", "10", "-o", str(sheet)
    )
    assert rc == 0, err
    rows = read_csv(sheet)
    assert "given_label" in rows[0] and sum("flagged by the audit" in r["why"] for r in rows) >= 20

    # The truth: every other flag is right (the given label is wrong on even rows).
    def answer(r):
        i = int(r["id"][1:])
        return r["label"] if (i < 20 and i % 2 == 0) else r["given_label"]

    filled = tmp_path / "filled.csv"
    fill(sheet, filled, answer)
    final = tmp_path / "final.jsonl"
    rc, _, err = run_main(capsys, "review", str(audit), "-c", str(cfg), "--answers", str(filled), "-o", str(final))
    assert rc == 0, err
    s = json.loads((tmp_path / "final.jsonl.summary.json").read_text())
    fp = s["flag_precision"]
    assert fp["checked"] == 20 and fp["estimate"] == 0.5 and fp["ci_low"] == fp["ci_high"] == 0.5
    assert fp["audit_estimate"] == 0.9 and "the audit estimated 0.900" in err
    out = {r["id"]: r for r in read_jsonl(final)}
    assert out["a0"]["label"] == "negative" and out["a0"]["label_source"] == "human"
    assert out["a79"]["label_source"] == "given"
