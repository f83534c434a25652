"""A single judge that answers one label to most rows of a many-label task is named in a warning (issue 29:
the embedded default said "Sports" to 65% of a four-label news task, with confidences that looked sure)."""

from __future__ import annotations

import csv

import pytest
from conftest import label_main, read_jsonl, write_config
from fakeserver import FakeLLM

from llmlabel.ensemble.combine import refit
from llmlabel.io.records import from_record

TOPICS = {"World": "world news", "Sports": "sport", "Business": "companies", "Sci/Tech": "science"}


def _corpus(path, n):
    rows = [{"id": f"r{i}", "text": f"news item {i}"} for i in range(n)]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text"])
        w.writeheader()
        w.writerows(rows)
    return rows


@pytest.mark.slow
def test_a_single_stuck_judge_is_named(tmp_path, capsys):
    rows = _corpus(tmp_path / "in.csv", 40)
    labels = list(TOPICS)
    # 26 of 40 rows (65%) "Sports", the rest spread over the other labels
    answers = {r["text"]: "Sports" if i < 26 else labels[i % 4] for i, r in enumerate(rows)}
    server = FakeLLM(answers=answers, labels=labels).start()
    try:
        judge = {"name": "tiny", "model": "m", "base_url": server.base_url, "concurrency": 2, "timeout": 5}
        task = {"name": "news", "instructions": "What is the news item about?", "labels": TOPICS}
        cfg = write_config(tmp_path / "c.yaml", None, judges=[judge], task=task)
        out = tmp_path / "o.jsonl"
        rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out))
    finally:
        server.stop()
    assert rc == 0, err
    sports = sum(g["label"] == "Sports" for g in read_jsonl(out))
    assert sports >= 26
    assert f"the judge tiny answered 'Sports' on {sports / 40:.0%} of rows ({sports} of 40, 4 labels)" in err


def test_a_judge_that_spreads_its_answers_or_a_two_label_task_is_not_named():
    labels = list(TOPICS)
    spread = [{"id": str(i), "judges": {"j": {"label": labels[i % 4]}}} for i in range(40)]
    assert refit(lambda: map(from_record, spread), ["j"], labels, "majority", "label")[1].one_label is None
    # two labels: a good judge on imbalanced data (90% ham) answers that way
    ham = [{"id": str(i), "judges": {"j": {"label": "ham" if i % 10 else "spam"}}} for i in range(40)]
    assert refit(lambda: map(from_record, ham), ["j"], ["ham", "spam"], "majority", "label")[1].one_label is None
    # a quarter of the rows on one of 40 intents is named
    intents = [f"intent_{k}" for k in range(40)]
    stuck = [{"id": str(i), "judges": {"j": {"label": intents[0 if i % 3 == 0 else i % 40]}}} for i in range(60)]
    one = refit(lambda: map(from_record, stuck), ["j"], intents, "majority", "label")[1].one_label
    assert one is not None and one.label == "intent_0" and one.share >= 0.33 and one.rows == 60
