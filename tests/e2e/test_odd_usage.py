"""A server whose `usage` is garbage (words, lists, negative or huge counts): the paid run finishes, the
ledger stays finite and non-negative, one warning says so, and --max-cost still trips (issue 25, item 10).

In-process through `llmlabel.cli.main.main`; the fake server's request count is what was paid."""

from __future__ import annotations

import json
import math

import pytest
from conftest import label_main as label
from conftest import one_line_error, read_jsonl, write_config, write_corpus
from fakeserver import FakeLLM

pytestmark = pytest.mark.usefixtures("quiet_fake_server")

N = 30


class OddUsage(FakeLLM):
    def __init__(self, usage, **kw):
        super().__init__(**kw)
        self.usage = usage

    def handle(self, req, headers):
        status, payload, hdrs = super().handle(req, headers)
        if status == 200:
            payload = {**payload, "usage": self.usage}
        return status, payload, hdrs


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "many", "completion_tokens": 3},
        [1, 2],
        {"prompt_tokens": -1_000_000_000, "completion_tokens": -5},
        {"prompt_tokens": 1e308, "completion_tokens": 1e308},
        {"prompt_tokens": {"n": 1}, "completion_tokens": None},
    ],
)
@pytest.mark.slow
def test_odd_usage_does_not_abort_a_paid_run(tmp_path, capsys, usage):
    fake = OddUsage(usage).start()
    try:
        write_corpus(tmp_path / "in.csv", N)
        cfg = write_config(tmp_path / "c.yaml", fake.base_url)
        out = tmp_path / "o.jsonl"
        rc, err = label(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out), "--max-cost", "1000")
        assert rc == 0, err
        assert fake.requests == N and len(read_jsonl(out)) == N
        assert err.count("token counts that are not numbers") == 1  # warned once
        run = json.loads((tmp_path / "o.jsonl.ledger.json").read_text())["runs"][-1]
        assert math.isfinite(run["cost"]) and run["cost"] >= 0
        j = run["judges"]["a"]
        assert j["odd_usage"] > 0 and j["input_tokens"] >= 0 and j["output_tokens"] >= 0
        assert j["input_tokens"] < 10_000 * N  # clamped to each request's size, not 1e308
    finally:
        fake.stop()


def test_negative_usage_cannot_defeat_max_cost(tmp_path, capsys):
    fake = OddUsage({"prompt_tokens": -(10**12), "completion_tokens": -(10**12)}).start()
    try:
        write_corpus(tmp_path / "in.csv", 200)
        judges = [
            {
                "name": "a",
                "model": "m",
                "base_url": fake.base_url,
                "concurrency": 1,
                "price_per_million": {"input": 1000.0, "output": 1000.0},
            }
        ]
        cfg = write_config(tmp_path / "c.yaml", None, judges=judges)
        out = tmp_path / "o.jsonl"
        rc, err = label(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out), "--max-cost", "5")
        one_line_error(rc, err, "--max-cost $5 reached")
        assert 0 < fake.requests < 200
        run = json.loads((tmp_path / "o.jsonl.ledger.json").read_text())["runs"][-1]
        assert 0 < run["cost"] <= 5
    finally:
        fake.stop()


class OddBody(FakeLLM):
    """A server whose answer has the right label but odd logprobs or content fields."""

    def __init__(self, edit, **kw):
        super().__init__(**kw)
        self.edit = edit

    def handle(self, req, headers):
        status, payload, hdrs = super().handle(req, headers)
        if status == 200:
            payload = json.loads(json.dumps(payload))
            self.edit(payload["choices"][0])
        return status, payload, hdrs


def _top(choice, value):
    for t in choice["logprobs"]["content"][0]["top_logprobs"]:
        t["logprob"] = value


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: _top(c, "high"),
        lambda c: _top(c, 1000.0),
        lambda c: _top(c, [1]),
        lambda c: c.update(logprobs=[1, 2]),
        lambda c: c.update(logprobs={"content": {"a": 1}}),
        lambda c: c.update(logprobs={"content": ["tok"]}),
    ],
)
@pytest.mark.slow
def test_odd_logprobs_do_not_abort_a_paid_run(tmp_path, capsys, edit):
    fake = OddBody(edit).start()
    try:
        write_corpus(tmp_path / "in.csv", 10)
        judges = [{"name": "a", "model": "m", "base_url": fake.base_url, "logprobs": True, "max_attempts": 2}]
        cfg = write_config(tmp_path / "c.yaml", None, judges=judges)
        out = tmp_path / "o.jsonl"
        rc, err = label(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out))
        assert rc == 0, err
        assert "Traceback" not in err and len(read_jsonl(out)) == 10
        assert fake.requests <= 10 + 10  # calibration's content-free inputs aside, nothing asked twice a row
    finally:
        fake.stop()


def test_a_non_text_content_is_asked_again_not_a_crash(tmp_path, capsys):
    fake = OddBody(lambda c: c["message"].update(content=[{"type": "text", "text": "x"}])).start()
    try:
        write_corpus(tmp_path / "in.csv", 3)
        judges = [{"name": "a", "model": "m", "base_url": fake.base_url, "max_attempts": 2}]
        cfg = write_config(tmp_path / "c.yaml", None, judges=judges)
        rc, err = label(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
        assert "Traceback" not in err, err
    finally:
        fake.stop()


@pytest.mark.parametrize("flag, value", [("--max-cost", "nan"), ("--max-cost", "-1"), ("--max-requests", "-3")])
def test_a_budget_that_could_never_trip_is_refused(tmp_path, fake, capsys, flag, value):
    write_corpus(tmp_path / "in.csv", 5)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    rc, err = label(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"), flag, value)
    one_line_error(rc, err, f"{flag} {float(value) if flag == '--max-cost' else value}")
    assert fake.requests == 0
