"""`llmlabel audit` at its edges: gold labels outside the label set, gold rows without a label error, and
an audit too small to estimate judge accuracies (issue 25, items 12 and 14)."""

from __future__ import annotations

import json

import pytest
from conftest import LABELS, one_line_error, run_main, write_config

pytestmark = pytest.mark.usefixtures("quiet_fake_server")


def _corpus(tmp_path, n):
    path = tmp_path / "in.csv"
    path.write_text("id,text,given\n" + "".join(f"t{i},text number {i},{LABELS[i % 2]}\n" for i in range(n)))
    return path


def _audit(capsys, tmp_path, fake, n, *extra):
    inp = _corpus(tmp_path, n)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    out = tmp_path / "audit.jsonl"
    return run_main(capsys, "audit", str(inp), "-c", str(cfg), "-o", str(out), "--label-column", "given", *extra)


def test_gold_labels_outside_the_set_are_refused_before_paying(tmp_path, fake, capsys):
    gold = tmp_path / "gold.csv"
    gold.write_text("id,label\n" + "".join(f"t{i},neutral\n" for i in range(20)))
    rc, _, err = _audit(capsys, tmp_path, fake, 20, "--gold", str(gold))
    one_line_error(rc, err, f"gold file {gold}", "'neutral' (20 rows)", "task.labels")
    assert fake.requests == 0 and not (tmp_path / "audit.jsonl").exists()


@pytest.mark.slow
def test_gold_without_label_errors_says_why_there_is_no_auroc(tmp_path, fake, capsys):
    gold = tmp_path / "gold.csv"
    gold.write_text("id,label\n" + "".join(f"t{i},{LABELS[i % 2]}\n" for i in range(30)))
    rc, _, err = _audit(capsys, tmp_path, fake, 30, "--gold", str(gold))
    assert rc == 0, err
    assert "nan" not in err.lower() and "AUROC n/a" in err and "needs both right and wrong" in err
    summary = (tmp_path / "audit.jsonl.summary.json").read_text()
    assert "NaN" not in summary and json.loads(summary)["gold"]["combined"]["auroc"] is None


def test_a_one_row_audit_prints_no_judge_accuracy(tmp_path, fake, capsys):
    rc, _, err = _audit(capsys, tmp_path, fake, 1)
    assert rc == 0, err
    assert "not estimated: 1 row" in err and "judges (estimated accuracy)" not in err
    summary = json.loads((tmp_path / "audit.jsonl.summary.json").read_text())
    assert summary["judges"]["a"]["accuracy"] is None and summary["est_given_label_accuracy"] is None
