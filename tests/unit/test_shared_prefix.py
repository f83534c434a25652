"""Labels that share a first token (intents: pending_transfer / pending_card_payment, card_arrival /
card_delivery_estimate): the mass the model puts on the shared token must reach them (issue 29: it was
dropped, and the label came from tail tokens)."""

import asyncio
import json
import math

import httpx
import pytest
import respx

from llmlabel.config import Judge
from llmlabel.ensemble.calibration import calibrate_answer
from llmlabel.llm.answers import JudgeAnswer, probs_from_logprobs, read_completion
from llmlabel.llm.cache import ResponseCache
from llmlabel.llm.judge import Budget, JudgeClient
from llmlabel.llm.ledger import JudgeLedger

URL = "http://llm.test/v1"
INTENTS = ["pending_transfer", "pending_card_payment", "request_refund", "card_arrival", "card_delivery_estimate"]
MSGS = [{"role": "user", "content": "where is my card?"}]


def lp(p: float) -> float:
    return math.log(p)


def test_the_shared_first_token_goes_to_the_decoded_label():
    """The issue's row: "pending" at logprob -0.007, "request" at -8.36; decoded pending_transfer. Before the
    fix "pending" (a prefix of two labels) was dropped and request_refund came out at 1.0."""
    top = [["pending", -0.007], ["request", -8.36], ["card", -6.0]]
    p = probs_from_logprobs(top, INTENTS, None, decoded="pending_transfer")
    assert p is not None and max(p, key=p.__getitem__) == "pending_transfer"
    assert p["pending_transfer"] > 0.99 and p["request_refund"] < 0.001
    # "card" is shared too, and not on the decoded path: split between its labels, not dropped
    assert p["card_arrival"] == pytest.approx(p["card_delivery_estimate"]) and p["card_arrival"] > 0


def test_without_a_decoded_label_an_ambiguous_token_is_split_not_dropped():
    top = [["pending", lp(0.8)], ["request", lp(0.2)]]
    p = probs_from_logprobs(top, INTENTS, None)
    assert p == pytest.approx(
        {"pending_transfer": 0.4, "pending_card_payment": 0.4, "request_refund": 0.2, "card_arrival": 0.0}
        | {"card_delivery_estimate": 0.0}
    )


def test_the_path_splits_the_shared_mass_by_the_next_tokens():
    """With every token of the decoded label, each label gets the probability of its own token sequence."""
    path = [
        ("card", lp(0.9), [["card", lp(0.9)], ["pending", lp(0.1)]]),
        ("_ar", lp(0.6), [["_ar", lp(0.6)], ["_delivery", lp(0.4)]]),
        ("rival", lp(0.99), [["rival", lp(0.99)]]),
    ]
    p = probs_from_logprobs(path[0][2], INTENTS, None, decoded="card_arrival", path=path)
    assert p is not None
    assert p["card_arrival"] == pytest.approx(0.54) and p["card_delivery_estimate"] == pytest.approx(0.36)
    assert p["pending_transfer"] == pytest.approx(0.05) and p["pending_card_payment"] == pytest.approx(0.05)


def test_the_path_is_read_from_a_json_completion_and_cached(tmp_path):
    """Through the judge: a JSON answer whose label value spans tokens; its distribution comes from them."""

    def tok(t, p, top=None):
        return {"token": t, "logprob": lp(p), "top_logprobs": top or [{"token": t, "logprob": lp(p)}]}

    content = '{"label": "card_arrival"}'
    body = {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": {
                    "content": [
                        tok('{"', 0.99),
                        tok("label", 0.99),
                        tok('":', 0.99),
                        tok(' "', 0.99),
                        tok(
                            "card",
                            0.9,
                            [
                                {"token": "card", "logprob": lp(0.9)},
                                {"token": "pending", "logprob": lp(0.05)},
                                {"token": "request", "logprob": lp(0.05)},
                            ],
                        ),
                        tok("_ar", 0.7, [{"token": "_ar", "logprob": lp(0.7)}, {"token": "_del", "logprob": lp(0.3)}]),
                        tok("rival", 0.99),
                        tok('"}', 0.99),
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 8},
    }
    payload = read_completion(json.dumps(body).encode(), code_mode=False)
    assert [s[0] for s in payload["label_path"]] == ["card", "_ar", "rival", '"}']  # up to the closing quote

    with respx.mock:
        route = respx.post(f"{URL}/chat/completions").mock(return_value=httpx.Response(200, json=body))
        j = Judge(
            name="a", model="m", base_url=URL, http_backend="sdk", logprobs=True, response_format="json_object_schema"
        )
        cache = ResponseCache(str(tmp_path / "c"))
        client = JudgeClient(j, cache, JudgeLedger("a", "m"), Budget(), INTENTS, api_key="sk-test-123456")

        async def go():
            try:
                return await client.ask(MSGS, "label"), await client.ask(MSGS, "label")
            finally:
                await client.aclose()

        ans, again = asyncio.run(go())
    assert route.call_count == 1  # the second answer came from the cache, path included
    for a in (ans, again):
        assert a.label == "card_arrival" and a.probs is not None
        assert a.probs["card_arrival"] == pytest.approx(0.9 * 0.7)
        assert a.probs["card_delivery_estimate"] == pytest.approx(0.9 * 0.3)
        assert a.probs["request_refund"] == pytest.approx(0.05)


def test_a_flat_content_free_bias_keeps_the_decoded_label():
    """Calibration divides by the content-free shares; the decoded label's mass now survives it."""
    top = [["pending", -0.007], ["request", -8.36]]
    ans_probs = probs_from_logprobs(top, INTENTS, None, decoded="pending_transfer")
    ans = JudgeAnswer(label="pending_transfer", probs=ans_probs)
    flat = {lab: 1 / len(INTENTS) for lab in INTENTS}
    assert calibrate_answer(ans, flat).label == "pending_transfer"


AG = ["World", "Sports", "Business", "Sci/Tech"]


def test_a_word_of_a_label_name_counts_for_it():
    """AG News' "Sci/Tech": under constrained decoding the 1.5B can only write "Sci", but on a technology story
    its top tokens are "Business", "World", "Tech", "Sci", "Science" (a cached answer of the news task, rounded).
    "Tech" and "Science" name no label by prefix; they count for the one label with such a word."""
    top = [["Business", -0.33], ["World", -2.17], ["Tech", -2.73], ["Sci", -3.01], ["Science", -3.64]]
    p = probs_from_logprobs(top, AG, None, decoded="Business")
    assert p is not None
    sci = math.exp(-2.73) + math.exp(-3.01) + math.exp(-3.64)
    total = math.exp(-0.33) + math.exp(-2.17) + sci
    assert p["Sci/Tech"] == pytest.approx(sci / total) and p["Business"] == pytest.approx(math.exp(-0.33) / total)
    # before: only "Sci" (a prefix of the name) counted
    assert p["Sci/Tech"] > 2.5 * math.exp(-3.01) / (total - math.exp(-2.73) - math.exp(-3.64))


def test_a_word_that_several_labels_share_counts_for_none():
    """Intents share words ("transfer", "card"): a first token naming a word of several labels is not read as
    any of them (a prefix of a label still is, as above)."""
    labels = ["pending_transfer", "wrong_transfer", "card_arrival"]
    p = probs_from_logprobs([["transfer", lp(0.5)], ["arrival", lp(0.3)], ["card", lp(0.2)]], labels, None)
    assert p == pytest.approx({"pending_transfer": 0.0, "wrong_transfer": 0.0, "card_arrival": 1.0})
