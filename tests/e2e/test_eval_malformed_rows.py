"""An output row that is not what `llmlabel label` writes: eval, distill and review read every output through
io.records.read_results, so each refuses it in one line naming the file and the row, never with a traceback
from deep inside the tool (before, eval took probs that are no mapping for none and failed inside its
multi-label calibration on a probability that is no number)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import one_line_error, run_main, write_config

GOOD = {"text": "great", "id": "1", "label": "positive", "confidence": 0.9, "probs": {"positive": 0.9}}
SET = {"text": "great", "id": "1", "label": "joy", "labels": ["joy"], "confidence": 0.9, "probs": {"joy": 0.9}}

# (the first row, the second row's bad field and value, words the error holds)
CASES = {
    "probs_no_mapping": (GOOD, {"probs": ["positive", 0.9]}, "probs ['positive', 0.9] is not a mapping"),
    "prob_no_number": (SET, {"probs": {"joy": "high"}}, "probs {'joy': 'high'} is not a mapping of labels to prob"),
    "judges_no_mapping": (GOOD, {"judges": "a said positive"}, "judges 'a said positive' is not a mapping"),
    "candidates_no_list": (GOOD, {"candidates": "positive"}, "candidates 'positive' is not a list of labels"),
    "label_no_label": (GOOD, {"label": {"positive": 1}}, "label {'positive': 1} is not a label"),
    "path_no_list": (GOOD, {"path": 7}, "path 7 is not a list"),
}


def write_rows(path: Path, first: dict, bad: dict) -> None:
    second = {**first, "id": "2", "text": "awful", **bad}
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in (first, second)))
        return
    with open(path, "w", newline="") as fh:  # a CSV output keeps lists and mappings as JSON text
        w = csv.DictWriter(fh, fieldnames=list(second))
        w.writeheader()
        for r in (first, second):
            w.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})


@pytest.mark.parametrize(
    "case, suffix",
    # (a CSV's label cell is text, and any text reads as a label)
    [(c, s) for c in sorted(CASES) for s in (".jsonl", ".csv") if (c, s) != ("label_no_label", ".csv")],
)
def test_eval_names_the_file_and_row_of_a_malformed_output_row(tmp_path: Path, capsys, case: str, suffix: str) -> None:
    first, bad, words = CASES[case]
    if suffix == ".csv" and case == "path_no_list":
        bad = {"path": "a/b"}  # (a CSV cell is text: text that is no JSON list)
        words = "path 'a/b' is not a list"
    out = tmp_path / f"out{suffix}"
    write_rows(out, first, bad)
    gold = tmp_path / "gold.csv"
    gold.write_text(f"id,label\n1,{first['label']}\n2,{first['label']}\n")
    rc, _, err = run_main(capsys, "eval", str(out), "--gold", str(gold))
    line = one_line_error(rc, err, f"{out}: row 2: ", words)
    assert "\n" not in err.strip(), err
    assert line.endswith("pass the output file of `llmlabel label`")


def test_eval_refuses_a_csv_cell_that_is_no_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.csv"
    out.write_text('id,label,confidence,probs\n1,positive,0.9,"{""positive"": 0.9}"\n2,negative,0.8,{oops\n')
    gold = tmp_path / "gold.csv"
    gold.write_text("id,label\n1,positive\n2,negative\n")
    one_line_error(*run_main(capsys, "eval", str(out), "--gold", str(gold))[::2], f"{out}: row 2: probs '{{oops'")


def test_distill_names_the_file_and_row_of_a_malformed_output_row(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.jsonl"
    write_rows(out, GOOD, {"candidates": {"positive": 1}})
    model = tmp_path / "m.skops"
    rc, _, err = run_main(capsys, "distill", str(out), "-o", str(model))
    one_line_error(rc, err, f"{out}: row 2: candidates {{'positive': 1}} is not a list of labels")
    assert not model.exists()


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"probs": [0.9]}, "row 2: probs [0.9] is not a mapping"),
        ({"label": "neutral"}, "row '2' has label 'neutral' outside task.labels (positive, negative)"),
    ],
)
def test_review_names_the_file_and_row_of_a_malformed_output_row(tmp_path: Path, capsys, bad: dict, words: str):
    out = tmp_path / "out.jsonl"
    write_rows(out, GOOD, bad)
    cfg = write_config(tmp_path / "cfg.yaml", None)
    rc, _, err = run_main(capsys, "review", str(out), "-c", str(cfg), "--budget", "2", "-o", str(tmp_path / "s.csv"))
    one_line_error(rc, err, str(out), words)
    assert not (tmp_path / "s.csv").exists()
