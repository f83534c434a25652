"""Per-label judges (`per_label: true`): one Yes/No question per label a row, each cached under its own key, the
labels' P(Yes) normalized as the judge's distribution, and every question counted, planned and paid once."""

from __future__ import annotations

import json
import math
import re
import signal
import time
from typing import Any

import pytest
import yaml
from conftest import (
    label_main,
    one_line_error,
    read_jsonl,
    run_cli,
    run_main,
    start_cli,
    start_when_busy,
    write_config,
    write_corpus,
)
from fakebatch import FakeBatch
from fakeserver import TEXT, FakeLLM

from llmlabel.config import load_config
from llmlabel.ensemble.calibration import CONTENT_FREE
from llmlabel.llm.cache import open_cache
from llmlabel.pipeline.batch import BatchOptions, run_batch
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.run import run_job

LABEL = re.compile(r"^Label: ([^:\n]+)", re.M)
LABELS = {"positive": "happy", "negative": "unhappy", "mixed": "both"}


class YesNoFake(FakeLLM):
    """Answers a per-label question Yes with P(Yes) 0.8 for the text's label (`great` reviews: positive, else
    negative), 0.3 for the others; `no_to_all`: texts answered No to every label, without logprobs."""

    def __init__(self, no_to_all: frozenset[str] = frozenset(), **kw: Any) -> None:
        super().__init__(**kw)
        self.no_to_all = no_to_all

    def handle(self, req: dict[str, Any], headers: dict[str, str]) -> tuple[int | None, Any, dict[str, str]]:
        status, payload, h = super().handle(req, headers)
        last = req["messages"][-1]["content"]
        asked, text = LABEL.search(last), TEXT.search(last)
        if status != 200 or asked is None or text is None:
            return status, payload, h
        truth = "positive" if "great" in text.group(1) else "negative"
        p = 0.8 if asked.group(1) == truth else 0.3
        word = "Yes" if p >= 0.5 else "No"
        top = [{"token": "Yes", "logprob": math.log(p)}, {"token": "No", "logprob": math.log(1 - p)}]
        choice = payload["choices"][0]
        choice["message"]["content"], choice["finish_reason"] = word, "length"
        payload["usage"] = {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101}
        if text.group(1) in self.no_to_all:
            choice["message"]["content"] = "No"
            choice.pop("logprobs", None)
        else:
            lp = top[word == "No"]["logprob"]
            choice["logprobs"] = {"content": [{"token": word, "logprob": lp, "top_logprobs": top}]}
        return status, payload, h


@pytest.fixture
def yesno():
    server = YesNoFake().start()
    yield server
    server.stop()


def _config(tmp_path, url: str, task: dict[str, Any] | None = None, **extra: Any):
    judge = {"name": "a", "model": "m", "base_url": url, "logprobs": True, "per_label": True, **extra}
    cfg = write_config(tmp_path / "c.yaml", url, judges=[judge])
    data = yaml.safe_load(cfg.read_text())
    data["task"].update(labels=LABELS, **(task or {}))
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def test_one_question_per_label_then_a_rerun_is_free(tmp_path, yesno, capsys, quiet_fake_server):
    write_corpus(tmp_path / "in.csv", 6)
    # A JSON-schema judge: its per-label questions still ask one token, with logprobs and no response format.
    cfg = _config(tmp_path, yesno.base_url, response_format="json_schema", max_tokens=64)
    out = tmp_path / "o.jsonl"
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    assert yesno.requests == 6 * 3
    assert all(b["max_tokens"] == 1 and b["logprobs"] and "response_format" not in b for b in yesno.bodies)
    # The system message is the same for every label, and the user message starts with the text: a server's
    # prompt cache reuses both; only the label line differs.
    row0 = [b["messages"] for b in yesno.bodies if "review number 0:" in b["messages"][-1]["content"]]
    assert len({json.dumps(m[0]) for m in row0}) == 1 and len(row0) == 3
    assert all(m[-1]["content"].startswith("<text>\nreview number 0:") for m in row0)
    assert sorted(LABEL.search(m[-1]["content"]).group(1) for m in row0) == sorted(LABELS)
    assert "Label: mixed: both" in "".join(m[-1]["content"] for m in row0)
    got = read_jsonl(out)
    for g in got:
        truth = "positive" if "great" in g["text"] else "negative"
        odds, other = 0.8 / 0.2, 0.3 / 0.7  # each label's P(Yes) / P(No)
        others = other / (odds + 2 * other)
        assert g["label"] == truth and g["error"] is None
        assert g["judges"]["a"]["probs"] == pytest.approx(
            {**dict.fromkeys(LABELS, others), truth: odds / (odds + 2 * other)}, abs=1e-4
        )
    run = json.loads((tmp_path / "o.jsonl.ledger.json").read_text())["runs"][-1]
    assert run["judges"]["a"]["requests"] == run["judges"]["a"]["responses"] == 18
    # A rerun pays nothing: every question is answered from the cache.
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    assert yesno.requests == 18 and read_jsonl(out) == got
    run = json.loads((tmp_path / "o.jsonl.ledger.json").read_text())["runs"][-1]
    assert run["judges"]["a"]["requests"] == 0 and run["judges"]["a"]["cache_hits"] == 18


def test_no_to_every_label_is_the_rows_error(tmp_path, capsys, quiet_fake_server):
    rows = write_corpus(tmp_path / "in.csv", 3)
    server = YesNoFake(no_to_all=frozenset({rows[1]["text"]})).start()
    try:
        cfg = _config(tmp_path, server.base_url)
        rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    finally:
        server.stop()
    assert rc == 0, err  # a row's error, not the run's
    got = {g["id"]: g for g in read_jsonl(tmp_path / "o.jsonl")}
    assert got["r1"]["label"] is None and "answered No to every label" in got["r1"]["judges"]["a"]["error"]
    assert got["r0"]["label"] == "negative" and got["r2"]["label"] == "positive"


def test_plan_counts_a_question_per_label(tmp_path, yesno, capsys):
    write_corpus(tmp_path / "in.csv", 10)
    rc, out, err = run_main(capsys, "plan", str(tmp_path / "in.csv"), "-c", str(_config(tmp_path, yesno.base_url)))
    assert rc == 0, err
    assert "a (m): 30 requests (one per label a row)" in out


@pytest.mark.parametrize(
    ("extra", "task", "needle"),
    [
        ({"logprobs": False}, {}, "per_label reads each label's P(Yes) from logprobs"),
        ({"samples": 2, "temperature": 0.7}, {}, "per_label does not combine with samples > 1"),
        ({"prompt": "label"}, {}, "per_label asks its own Yes/No prompt"),
        ({}, {"multi_label": True}, "per_label asks about every label of one label a text"),
        (
            {},
            {"examples": [{"text": "fine", "label": "positive"}]},
            "per_label's Yes/No questions show no demonstrations",
        ),
    ],
)
def test_what_per_label_cannot_do_is_one_line(tmp_path, yesno, capsys, extra, task, needle):
    write_corpus(tmp_path / "in.csv", 2)
    cfg = _config(tmp_path, yesno.base_url, task, **extra)
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    one_line_error(rc, err, needle)
    assert yesno.requests == 0 and not (tmp_path / "o.jsonl").exists()


def test_the_batch_api_buys_every_labels_question_then_the_run_pays_nothing(tmp_path):
    fb = FakeBatch(llm=YesNoFake()).start()
    try:
        write_corpus(tmp_path / "in.csv", 6)
        cfg = load_config(_config(tmp_path, fb.base_url))
        out = tmp_path / "o.jsonl"
        res = run_batch(cfg, tmp_path / "in.csv", out, RunOptions(progress=False), BatchOptions(poll=0.01))
        assert res.collected == 18 and res.run is not None and res.run.complete and fb.online == 0
        assert len(set(fb.line_keys)) == 18
        for g in read_jsonl(out):
            assert g["label"] == ("positive" if "great" in g["text"] else "negative") and g["error"] is None
    finally:
        fb.stop()


def test_a_verify_run_asks_a_per_label_judge_its_usual_prompt(tmp_path, yesno):
    rows = write_corpus(tmp_path / "in.csv", 4)
    with open(tmp_path / "given.csv", "w") as fh:
        fh.write("id,text,label\n" + "".join(f"{r['id']},{r['text']},positive\n" for r in rows))
    cfg = load_config(_config(tmp_path, yesno.base_url))
    opts = RunOptions(progress=False, kind="verify", given_label_column="label")
    run_job(cfg, tmp_path / "given.csv", tmp_path / "o.jsonl", opts)
    # one verify question a row (and, as for any logprob judge there, the content-free ones), not one per label
    assert yesno.requests == 4 + len(CONTENT_FREE)
    assert all("Label: " not in b["messages"][-1]["content"] for b in yesno.bodies)
    assert len(read_jsonl(tmp_path / "o.jsonl")) == 4


def test_an_unfinished_run_resumes_only_with_the_same_per_label(tmp_path, yesno):
    from llmlabel.pipeline.fingerprint import answers_fingerprint
    from llmlabel.pipeline.row_labeler import RowLabeler

    fps = []
    for on in (False, True):
        cfg = load_config(_config(tmp_path, yesno.base_url, per_label=on))
        labeler = RowLabeler(cfg, cfg.judges, RunOptions(progress=False), open_cache(cfg.cache_dir))
        fps.append(answers_fingerprint(labeler)["judge 'a'"])
        labeler.cache.close()
    assert fps[0] != fps[1]


# A user's hostile moves on a per-label run, each checked by what the server was paid: every question is one
# request, so a row half-asked when the run stopped must cost only its missing questions later.


def _right(got: list[dict[str, Any]], n: int) -> None:
    assert len(got) == n and len({g["id"] for g in got}) == n
    for g in got:
        assert g["error"] is None and g["label"] == ("positive" if "great" in g["text"] else "negative"), g


@pytest.mark.slow
def test_two_processes_at_once_on_one_cache_then_a_third_pays_nothing(tmp_path):
    server = YesNoFake(latency=0.005).start()
    try:
        write_corpus(tmp_path / "in.csv", 60)
        cfg = _config(tmp_path, server.base_url, concurrency=8)
        procs = [
            start_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / f"o{i}.jsonl"), "-q")
            for i in range(2)
        ]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        first = read_jsonl(tmp_path / "o0.jsonl")
        _right(first, 60)
        assert read_jsonl(tmp_path / "o1.jsonl") == first
        paid = server.completions
        assert 180 <= paid <= 2 * 180  # at worst both processes asked a question before either cached it
        r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o2.jsonl"), "-q")
        assert r.returncode == 0, r.stderr
        assert server.completions == paid and read_jsonl(tmp_path / "o2.jsonl") == first
    finally:
        server.stop()


@pytest.mark.slow
def test_ctrl_c_with_a_row_half_asked_then_a_rerun_pays_each_question_once(tmp_path):
    server = YesNoFake().start()
    held = server.hold(23)  # the 23rd question, the middle of a row's three, waits until the signal is in
    try:
        write_corpus(tmp_path / "in.csv", 40)
        cfg = _config(tmp_path, server.base_url, concurrency=4)
        out = tmp_path / "o.jsonl"
        args = ["label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out), "-q"]
        p = start_cli(*args, stdout=None)
        assert held.reached.wait(60)
        p.send_signal(signal.SIGINT)
        held.release()  # the questions in flight are answered, cached and kept
        _, err = p.communicate(timeout=60)
        assert p.returncode == 130 and "Traceback" not in err, err
        assert not out.exists()
        asked = server.completions
        assert 22 <= asked < 120
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
        _right(read_jsonl(out), 40)
        assert server.completions == 120  # 40 rows x 3 labels, each question paid once across both runs
    finally:
        held.release()
        server.stop()


@pytest.mark.slow
def test_ctrl_c_keeps_a_rows_question_in_flight_when_its_sibling_stops_first(tmp_path):
    # The row's first question is rate-limited (429, Retry-After 2 s) and the other two are held at the server.
    # Ctrl-C wakes the first from its backoff, refused at once; the row must still wait for the two already sent
    # (paid for) and cache them, not end and leave them to be cancelled with the run.
    server = YesNoFake(throttle_at=1).start()
    held = server.hold(2)
    try:
        write_corpus(tmp_path / "in.csv", 1)
        cfg = _config(tmp_path, server.base_url, concurrency=4)
        out = tmp_path / "o.jsonl"
        args = ["label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out), "-q"]
        p = start_when_busy(server, 3, *args)
        p.send_signal(signal.SIGINT)
        time.sleep(1)  # time enough for a row that did not wait to end the run (it would, on any machine)
        held.release()
        _, err = p.communicate(timeout=60)
        assert p.returncode == 130 and "Traceback" not in err, err
        assert server.completions == 2
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
        _right(read_jsonl(out), 1)
        assert server.completions == 3  # only the rate-limited question was asked again
    finally:
        held.release()
        server.stop()


@pytest.mark.slow
def test_a_failing_server_costs_questions_and_a_retry_asks_only_the_failed_ones(tmp_path):
    server = YesNoFake(faults=0.3, fault_kinds=("500", "drop"), seed=5).start()
    try:
        write_corpus(tmp_path / "in.csv", 60)
        cfg = _config(tmp_path, server.base_url, concurrency=8, max_attempts=2, timeout=10)
        out = tmp_path / "o.jsonl"
        args = ["label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out), "-q"]
        r = run_cli(*args, timeout=300)
        assert r.returncode == 0, r.stderr
        got = read_jsonl(out)
        failed = [g for g in got if g["error"]]
        assert len(got) == 60 and failed, "seed 5 at 30% faults and 2 attempts leaves some questions unanswered"
        assert all("failed after 2 attempts" in g["judges"]["a"]["error"] for g in failed)
        assert all(g["label"] is None for g in failed)  # a row missing one label's answer has no distribution
        answered = server.completions
        assert answered < 180
        server.faults = 0.0
        r = run_cli(*args, "--retry-errors")
        assert r.returncode == 0, r.stderr
        _right(read_jsonl(out), 60)
        assert server.completions == 180  # the retry asked only the questions no answer was paid for
    finally:
        server.stop()
