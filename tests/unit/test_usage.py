"""A server's `usage` is not trusted: odd token counts are clamped and counted, never an exception after
paying (issue 25, item 10)."""

import json

import pytest

from llmlabel.llm.answers import MAX_TOKENS, read_completion, read_usage


def _body(usage):
    return json.dumps({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}], "usage": usage}).encode()


@pytest.mark.parametrize(
    "usage, bounds, want",
    [
        ({"prompt_tokens": 10, "completion_tokens": 2}, (100, 5), (10, 2, 0)),
        ({"prompt_tokens": "12", "completion_tokens": 2.0}, (100, 5), (12, 2, 0)),
        (None, (100, 5), (0, 0, 0)),
        ({}, (100, 5), (0, 0, 0)),
        ({"prompt_tokens": "many", "completion_tokens": 1}, (100, 5), (100, 1, 1)),
        ([1, 2], (100, 5), (100, 5, 2)),
        ("lots", (100, 5), (100, 5, 2)),
        ({"prompt_tokens": -200, "completion_tokens": -1}, (100, 5), (100, 5, 2)),
        ({"prompt_tokens": 1e308, "completion_tokens": float("nan")}, (100, 5), (100, 5, 2)),
        ({"prompt_tokens": 10**400, "completion_tokens": True}, (100, 5), (100, 5, 2)),
        ({"prompt_tokens": [3], "completion_tokens": {"a": 1}}, None, (0, 0, 2)),
        ({"prompt_tokens": 1e308, "completion_tokens": 3}, None, (MAX_TOKENS, 3, 1)),
    ],
)
def test_read_usage_clamps_and_counts(usage, bounds, want):
    assert read_usage(usage, bounds) == want


def test_read_completion_never_raises_on_usage():
    for usage in ("many", [1, 2], {"prompt_tokens": "many"}, {"prompt_tokens": {"x": 1}}, -5, 1e308):
        p = read_completion(_body(usage), False, (50, 4))
        assert p["content"] == "x"
        assert 0 <= p["usage"]["prompt_tokens"] <= 50 and 0 <= p["usage"]["completion_tokens"] <= 4


@pytest.mark.parametrize(
    "headers, want",
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "inf"}, 300.0),
        ({"retry-after": "1e308"}, 300.0),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "soon"}, None),
    ],
)
def test_retry_after_is_not_trusted(headers, want):
    from llmlabel.llm.retry import retry_after

    class E(Exception):
        pass

    e = E()
    e.headers = headers  # type: ignore[attr-defined]
    assert retry_after(e) == want


@pytest.mark.parametrize(
    "before",
    [
        {"runs": [1, {"requests": "x", "cost": "y"}, {"requests": 3, "cost": 0.5}]},
        {"runs": {"requests": 3, "cost": 0.5}},
        {"runs": [{"requests": -9, "cost": float("inf")}, {"requests": 3, "cost": 0.5}]},
    ],
)
def test_a_ledger_file_with_odd_values_is_appended_to(tmp_path, before):
    """The ledger file is read back to sum every run: an edited file must not fail a paid run at its end."""
    from llmlabel.llm.ledger import Ledger

    path = tmp_path / "o.jsonl.ledger.json"
    path.write_text(json.dumps(before).replace("Infinity", "1e999"))
    led = Ledger()
    led.add_judge("a", "m", 1.0, 1.0).requests = 2
    led.save(path)
    data = json.loads(path.read_text())
    assert data["total"]["requests"] == 5 and data["total"]["cost"] == 0.5
    assert data["runs"][-1]["requests"] == 2
