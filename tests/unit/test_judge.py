"""The judge client against respx-mocked endpoints: retries, errors, formats, re-asks and the cache."""

import asyncio
import json
import math

import fakeclock
import httpx
import pytest
import respx

from llmlabel.config import Judge
from llmlabel.errors import BudgetExhausted, JudgeError
from llmlabel.llm.cache import ResponseCache
from llmlabel.llm.encoding import cache_key
from llmlabel.llm.judge import Budget, JudgeClient
from llmlabel.llm.ledger import JudgeLedger

URL = "http://llm.test/v1"
LABELS = ["pos", "neg"]
MSGS = [{"role": "system", "content": "s"}, {"role": "user", "content": "<text>\nhi\n</text>"}]


def completion(content: str, finish: str = "stop", pt: int = 10, ct: int = 3) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
        },
    )


def make(tmp_path, budget=None, **kw):
    j = Judge(name="a", model="m", base_url=URL, max_attempts=kw.pop("max_attempts", 4), http_backend="sdk", **kw)
    led = JudgeLedger("a", "m", 1.0, 2.0)
    cache = ResponseCache(str(tmp_path / "cache"))
    b = budget or Budget(ledgers=(led,))
    b.ledgers = (led,)
    return JudgeClient(j, cache, led, b, LABELS, api_key="sk-test-123456"), led, cache


def ask(client, msgs=MSGS, kind="label"):
    async def go():
        try:
            return await client.ask(msgs, kind)
        finally:
            await client.aclose()

    return fakeclock.run(go())  # retries' backoffs take no real time


@respx.mock
def test_answer_is_cached_and_sdk_retries_are_off(tmp_path):
    route = respx.post(f"{URL}/chat/completions").mock(return_value=completion('{"label": "pos"}'))
    c, led, cache = make(tmp_path)
    assert ask(c).label == "pos"
    assert route.call_count == 1 and led.requests == 1 and led.input_tokens == 10
    c2, led2, _ = make(tmp_path)
    assert ask(c2).label == "pos"
    assert route.call_count == 1 and led2.cache_hits == 1 and led2.requests == 0
    body = json.loads(route.calls[0].request.content)
    assert body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == LABELS
    assert route.calls[0].request.headers["authorization"] == "Bearer sk-test-123456"


@respx.mock
def test_429_honours_retry_after_then_succeeds(tmp_path):
    route = respx.post(f"{URL}/chat/completions").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "0.3"}, json={"error": {"message": "slow down"}}),
            completion('{"label": "neg"}'),
        ]
    )
    c, led, _ = make(tmp_path)

    async def go():
        t = fakeclock.now()
        try:
            return await c.ask(MSGS, "label"), fakeclock.now() - t
        finally:
            await c.aclose()

    ans, waited = fakeclock.run(go())  # the loop's clock: the wait the client chose, whatever the machine's load
    assert ans.label == "neg" and 0.3 <= waited <= 0.55  # Retry-After plus up to 0.25 s of jitter
    assert route.call_count == 2 and led.retries == 1


@respx.mock
def test_5xx_and_dropped_connections_are_retried(tmp_path):
    route = respx.post(f"{URL}/chat/completions").mock(
        side_effect=[
            httpx.Response(500, json={"error": {"message": "boom"}}),
            httpx.ConnectError("reset"),
            httpx.ReadTimeout("slow"),
            completion('{"label": "pos"}'),
        ]
    )
    c, led, _ = make(tmp_path)
    assert ask(c).label == "pos"
    assert route.call_count == 4 and led.retries == 3


@respx.mock
def test_retries_are_bounded_and_end_with_a_clear_error(tmp_path):
    route = respx.post(f"{URL}/chat/completions").mock(return_value=httpx.Response(503, json={}))
    c, _, _ = make(tmp_path, max_attempts=3)
    with pytest.raises(JudgeError, match="kept failing .503. after 3 attempts"):
        ask(c)
    assert route.call_count == 3


@pytest.mark.parametrize(
    "status, expected", [(401, "rejected the API key"), (404, "model 'm' not found"), (403, "access denied")]
)
@respx.mock
def test_client_errors_stop_without_retry(tmp_path, status, expected):
    route = respx.post(f"{URL}/chat/completions").mock(
        return_value=httpx.Response(status, json={"error": {"message": "bad key sk-test-123456"}})
    )
    c, _, _ = make(tmp_path)
    with pytest.raises(JudgeError, match=expected) as e:
        ask(c)
    assert route.call_count == 1
    assert "sk-test-123456" not in str(e.value)


@respx.mock
def test_schema_rejected_falls_back_to_json_object_then_text(tmp_path):
    def answer(request):
        body = json.loads(request.content)
        rf = body.get("response_format")
        if rf and rf["type"] in ("json_schema", "json_object"):
            return httpx.Response(400, json={"error": {"message": f"response_format {rf['type']} unsupported"}})
        return completion("neg")

    route = respx.post(f"{URL}/chat/completions").mock(side_effect=answer)
    c, _, cache = make(tmp_path)
    assert ask(c).label == "neg"
    assert route.call_count == 3 and c.fmt == "text"
    # The choice is remembered: the next client goes straight to plain text.
    c2, _, _ = make(tmp_path)
    assert c2.fmt == "text"


@respx.mock
def test_invalid_label_is_reasked_once_with_the_error(tmp_path):
    route = respx.post(f"{URL}/chat/completions").mock(
        side_effect=[completion('{"label": "maybe"}'), completion('{"label": "pos"}')]
    )
    c, led, cache = make(tmp_path)
    assert ask(c).label == "pos"
    reask = json.loads(route.calls[1].request.content)["messages"]
    assert "not one of: pos, neg" in reask[-1]["content"] and reask[-2]["role"] == "assistant"
    assert led.reasks == 1
    # The original question is now answered from the cache: a rerun pays nothing.
    c2, led2, _ = make(tmp_path)
    assert ask(c2).label == "pos" and route.call_count == 2


@respx.mock
def test_a_label_outside_the_set_is_never_accepted(tmp_path):
    route = respx.post(f"{URL}/chat/completions").mock(return_value=completion('{"label": "spam"}'))
    c, led, cache = make(tmp_path)
    ans = ask(c)
    assert ans.label is None and "not one of" in ans.error
    assert route.call_count == 2 and len(cache) == 0


@respx.mock
def test_truncated_and_garbage_answers_are_asked_again_and_never_cached(tmp_path):
    route = respx.post(f"{URL}/chat/completions").mock(
        side_effect=[
            completion('{"lab', finish="length"),
            completion('{"label": "po}{'),
            completion('{"label": "pos"}'),
        ]
    )
    c, led, cache = make(tmp_path)
    assert ask(c).label == "pos"
    assert route.call_count == 3
    assert led.input_tokens == 30  # every billed answer is in the ledger, broken ones too


@respx.mock
def test_max_requests_budget(tmp_path):
    respx.post(f"{URL}/chat/completions").mock(return_value=completion('{"label": "pos"}'))
    c, led, _ = make(tmp_path, budget=Budget(max_requests=0))
    with pytest.raises(BudgetExhausted):
        ask(c)
    assert led.requests == 0


@respx.mock
def test_logprobs_give_a_distribution(tmp_path):
    import math

    resp = completion("A")
    data = json.loads(resp.content)
    data["choices"][0]["logprobs"] = {
        "content": [
            {
                "token": "A",
                "logprob": math.log(0.7),
                "top_logprobs": [{"token": "A", "logprob": math.log(0.7)}, {"token": "B", "logprob": math.log(0.3)}],
            }
        ]
    }
    route = respx.post(f"{URL}/chat/completions").mock(return_value=httpx.Response(200, json=data))
    c, _, _ = make(tmp_path, logprobs=True)
    ans = ask(c)
    assert ans.label == "pos" and ans.probs == pytest.approx({"pos": 0.7, "neg": 0.3})
    body = json.loads(route.calls[0].request.content)
    assert body["logprobs"] is True and body["max_tokens"] == 1 and "response_format" not in body


def test_cache_key_is_canonical_and_keyless():
    a = cache_key("http://x/v1", {"model": "m", "messages": MSGS, "temperature": 0})
    b = cache_key("http://x/v1", {"temperature": 0, "messages": MSGS, "model": "m"})
    assert a == b
    assert cache_key("http://y/v1", {"model": "m", "messages": MSGS, "temperature": 0}) != a
    assert cache_key("http://x/v1", {"model": "m", "messages": MSGS, "temperature": 0.5}) != a
    assert cache_key("http://x/v1", {"model": "m", "messages": MSGS, "temperature": 0, "seed": 1}) != a


def test_no_key_for_the_default_endpoint_is_a_clear_error(tmp_path):
    j = Judge(name="a", model="m")
    led = JudgeLedger("a", "m")
    with pytest.raises(JudgeError, match=r"no API key: set \$OPENAI_API_KEY"):
        JudgeClient(j, ResponseCache(str(tmp_path / "c")), led, Budget(), LABELS)


@respx.mock
def test_logprobs_with_json_answers_read_the_label_position(tmp_path):
    import math

    resp = completion('{"label": "neg"}')
    data = json.loads(resp.content)
    tok = lambda t, p, top=None: {
        "token": t,
        "logprob": math.log(p),
        "top_logprobs": top or [{"token": t, "logprob": math.log(p)}],
    }
    data["choices"][0]["logprobs"] = {
        "content": [
            tok('{"', 0.99),
            tok("label", 0.99),
            tok('":', 0.99),
            tok(' "', 0.99),
            tok(
                "neg",
                0.6,
                [
                    {"token": "neg", "logprob": math.log(0.6)},
                    {"token": "pos", "logprob": math.log(0.3)},
                    {"token": "The", "logprob": math.log(0.1)},
                ],
            ),
            tok('"}', 0.99),
        ]
    }
    route = respx.post(f"{URL}/chat/completions").mock(return_value=httpx.Response(200, json=data))
    c, _, _ = make(tmp_path, logprobs=True, response_format="json_object_schema")
    ans = ask(c)
    assert ans.label == "neg" and ans.probs == pytest.approx({"pos": 1 / 3, "neg": 2 / 3})
    body = json.loads(route.calls[0].request.content)
    assert body["logprobs"] is True and body["response_format"]["type"] == "json_object"
    assert body["response_format"]["schema"]["properties"]["label"]["enum"] == LABELS


# llama-cpp-python's server (0.3.x) answers a response_format it does not know with this 500.
LLAMA_CPP_500 = {
    "error": {
        "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
        "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
        "'ctx': {'expected': \"'text' or 'json_object'\"}}\n",
        "type": "internal_server_error",
        "param": None,
        "code": None,
    }
}


@respx.mock
def test_llama_cpp_python_500_for_a_format_moves_to_the_next_format(tmp_path):
    def answer(request):
        rf = json.loads(request.content).get("response_format") or {}
        if rf.get("type") == "json_schema":
            return httpx.Response(500, json=LLAMA_CPP_500)
        return completion('{"label": "neg"}')

    route = respx.post(f"{URL}/chat/completions").mock(side_effect=answer)
    c, led, _ = make(tmp_path)
    assert ask(c).label == "neg"
    assert route.call_count == 2 and led.retries == 0 and c.fmt == "json_object"


@respx.mock
def test_a_format_500_with_an_explicit_format_stops_without_retries(tmp_path):
    route = respx.post(f"{URL}/chat/completions").mock(return_value=httpx.Response(500, json=LLAMA_CPP_500))
    c, _, _ = make(tmp_path, response_format="json_schema")
    with pytest.raises(JudgeError, match=r"rejected the request \(500: 1 validation error"):
        ask(c)
    assert route.call_count == 1


@respx.mock
def test_other_500s_are_still_outages(tmp_path):
    route = respx.post(f"{URL}/chat/completions").mock(
        return_value=httpx.Response(500, json={"error": {"message": "validation of the KV cache failed"}})
    )
    c, _, _ = make(tmp_path, max_attempts=2)
    with pytest.raises(JudgeError, match="kept failing .500. after 2 attempts"):
        ask(c)
    assert route.call_count == 2 and c.fmt == "json_schema"


@respx.mock
def test_a_one_token_code_answer_cut_at_max_tokens_is_the_answer(tmp_path):
    """llama.cpp reports finish_reason "length" for the 1-token code answer (max_tokens 1): it is complete."""
    import math

    data = json.loads(completion("B", finish="length", ct=1).content)
    data["choices"][0]["logprobs"] = {
        "content": [
            {
                "token": "B",
                "logprob": math.log(0.8),
                "top_logprobs": [{"token": "B", "logprob": math.log(0.8)}, {"token": "A", "logprob": math.log(0.2)}],
            }
        ]
    }
    route = respx.post(f"{URL}/chat/completions").mock(return_value=httpx.Response(200, json=data))
    c, led, cache = make(tmp_path, logprobs=True)
    ans = ask(c)
    assert ans.label == "neg" and ans.probs == pytest.approx({"pos": 0.2, "neg": 0.8})
    assert route.call_count == 1 and led.reasks == 0 and len(cache) == 1


def test_one_loop_owns_retries():
    """with_retries: attempt 1 counts as the loop's first; non-retryable errors and max_attempts=1 stop at once."""
    from llmlabel.llm.retry import with_retries
    from llmlabel.llm.transport import StatusError, TransportError

    def run(errors, max_attempts):
        calls, retries = [], []

        async def send():
            calls.append(1)
            if len(calls) <= len(errors):
                raise errors[len(calls) - 1]
            return "ok"

        async def go():
            import llmlabel.llm.retry as r

            r.backoff, saved = (lambda attempt, exc: 0.0), r.backoff
            try:
                return await with_retries(send, max_attempts, lambda: retries.append(1))
            finally:
                r.backoff = saved

        try:
            out = asyncio.run(go())
        except Exception as e:  # noqa: BLE001
            out = e
        return out, len(calls), len(retries)

    drop = TransportError(False)
    assert run([drop, drop], 3) == ("ok", 3, 2)
    out, calls, retries = run([drop, drop, drop], 3)
    assert out is drop and (calls, retries) == (3, 2)
    bad = StatusError(400, {}, {"error": {"message": "no"}})
    assert run([bad], 5)[1:] == (1, 0) and run([drop], 1)[1:] == (1, 0)


@respx.mock
def test_requests_in_flight_when_a_format_is_rejected_step_down_once(tmp_path):
    """Eight asks sent in json_schema at once all get llama-cpp-python's 500: the judge moves to json_object
    once (not once per rejection, down to text and then to an error) and every ask is answered."""

    first_wave: list[int] = []
    all_sent = asyncio.Event()

    async def answer(request):
        rf = json.loads(request.content).get("response_format") or {}
        if rf.get("type") == "json_schema":
            first_wave.append(1)
            if len(first_wave) == 8:
                all_sent.set()
            await all_sent.wait()  # all eight are in flight before the first rejection comes back
            return httpx.Response(500, json=LLAMA_CPP_500)
        return completion('{"label": "pos"}')

    route = respx.post(f"{URL}/chat/completions").mock(side_effect=answer)
    c, _, _ = make(tmp_path, concurrency=8)
    texts = [[MSGS[0], {"role": "user", "content": f"<text>\n{i}\n</text>"}] for i in range(8)]

    async def go():
        try:
            return await asyncio.gather(*(c.ask(m, "label") for m in texts))
        finally:
            await c.aclose()

    assert [a.label for a in asyncio.run(go())] == ["pos"] * 8
    assert c.fmt == "json_object" and route.call_count == 16


def test_a_per_label_question_is_one_token_with_logprobs_whatever_the_format(tmp_path):
    from llmlabel.llm.prompts import fits_kind

    client, _, _ = make(tmp_path, logprobs=True, per_label=True, response_format="json_schema", max_tokens=50)
    req = client.request([{"role": "user", "content": "x"}], fits_kind("pos"))
    assert req["max_tokens"] == 1 and req["logprobs"] and "response_format" not in req
    assert "response_format" in client.request([{"role": "user", "content": "x"}], "label")
    body = {
        "choices": [
            {
                "message": {"role": "assistant", "content": "No"},
                "finish_reason": "length",
                "logprobs": {
                    "content": [
                        {
                            "token": "No",
                            "logprob": -0.5,
                            "top_logprobs": [
                                {"token": "No", "logprob": -0.5},
                                {"token": " yes", "logprob": -1.5},
                                {"token": "Yes", "logprob": -2.0},
                            ],
                        }
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }
    with respx.mock(base_url=URL) as mock:
        mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=body))
        ans = ask(client, kind=fits_kind("pos"))
    p_yes = (math.exp(-1.5) + math.exp(-2.0)) / (math.exp(-1.5) + math.exp(-2.0) + math.exp(-0.5))
    assert ans.label == "No" and ans.probs is not None and abs(ans.probs["Yes"] - p_yes) < 1e-9
