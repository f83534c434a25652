"""One judge: an OpenAI-compatible endpoint with limits, retries, response formats, re-asks and the cache."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any

from aiolimiter import AsyncLimiter

from llmlabel.config import Judge
from llmlabel.errors import BudgetExhausted, JudgeError
from llmlabel.llm.answers import InvalidAnswer, JudgeAnswer, parse_answer, probs_from_logprobs
from llmlabel.llm.cache import ResponseCache, cache_key, canonical
from llmlabel.llm.ledger import JudgeLedger
from llmlabel.llm.prompts import label_codes, response_format
from llmlabel.llm.transport import AioHttpTransport, SDKTransport, StatusError, TransportError
from llmlabel.secrets import redact, register

FORMATS = ["json_schema", "json_object", "text"]
_MARKER = {"\x00llmlabel": "frame\x00"}
NO_KEY = "sk-no-key-required"


@dataclass
class Budget:
    """Run-wide limits, checked before every paid request."""

    max_cost: float | None = None
    max_requests: int | None = None
    ledgers: tuple[JudgeLedger, ...] = ()

    def check(self) -> None:
        if self.max_requests is None and self.max_cost is None:
            return
        if self.max_requests is not None and sum(j.requests for j in self.ledgers) >= self.max_requests:
            raise BudgetExhausted(f"--max-requests {self.max_requests} reached")
        if self.max_cost is not None and sum(j.cost for j in self.ledgers) >= self.max_cost:
            raise BudgetExhausted(f"--max-cost ${self.max_cost:g} reached")


def format_rejected(e: StatusError) -> bool:
    """A 500 that is really a rejected response_format: llama-cpp-python's server answers a format it does not
    know (json_schema) with HTTP 500 and the request's validation error in the body, where others send 400."""
    if e.status != 500:
        return False
    msg = e.server_message.lower()
    return "response_format" in msg and "validation" in msg


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, TransportError):
        return True
    if isinstance(exc, StatusError):
        return exc.status in (408, 409, 429) or (exc.status >= 500 and not format_rejected(exc))
    return isinstance(exc, asyncio.TimeoutError)


def _retry_after(exc: BaseException | None) -> float | None:
    headers = getattr(exc, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        v = headers.get(name)
        if v:
            try:
                return min(float(v) * scale, 300.0)
            except ValueError:
                return None
    return None


_LABEL_START = re.compile(r'"label"\s*:\s*"\s*[^"\s]')


def _label_token(content_lp: list[dict[str, Any]]) -> int | None:
    """Index of the token where a JSON answer's label value starts: its top_logprobs are the label distribution."""
    acc = ""
    for k, t in enumerate(content_lp):
        acc += str(t.get("token") or "")
        if _LABEL_START.search(acc):
            return k
    return None


def _backoff(attempt: int, exc: BaseException | None) -> float:
    """Exponential backoff with full jitter, never shorter than the server's Retry-After."""
    exp = random.uniform(0, min(30.0, 0.5 * 2 ** (attempt - 1)))
    ra = _retry_after(exc)
    return max(exp, ra + random.uniform(0, 0.25)) if ra is not None else exp


def _wait(state: Any) -> float:
    # Attempt 1 ran before tenacity took over (the fast path in `_complete`).
    return _backoff(state.attempt_number + 1, state.outcome.exception() if state.outcome else None)


def _one_line(msg: str, limit: int = 240) -> str:
    return redact(" ".join(str(msg).split()))[:limit]


# (role, content, canonical JSON) of the latest last message, as one tuple: read and replaced in one step,
# so jobs running on several threads never pair one message with another's bytes.
_LAST: list[tuple[Any, Any, bytes]] = [(None, None, b"")]
_STR = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes for a string (C when built)


def _last_json(message: dict[str, str]) -> bytes:
    """canonical(message), remembered for the latest one: the judges of a row send the same user message."""
    role, content = message.get("role"), message.get("content")
    last = _LAST[0]
    if len(message) == 2 and role == last[0] and content == last[1]:
        return last[2]
    if len(message) == 2 and type(role) is str and type(content) is str:
        # canonical() of {"role", "content"} without the general encoder (same bytes: sorted keys, no spaces).
        data = f'{{"content":{_STR(content)},"role":{_STR(role)}}}'.encode("utf-8")
        _LAST[0] = (role, content, data)
        return data
    return canonical(message)


class JudgeClient:
    def __init__(
        self,
        judge: Judge,
        cache: ResponseCache,
        ledger: JudgeLedger,
        budget: Budget,
        labels: list[str],
        api_key: str | None = None,
        transport: Any = None,
    ) -> None:
        self.judge, self.cache, self.ledger, self.budget, self.labels = judge, cache, ledger, budget, labels
        self.endpoint = judge.base_url or "https://api.openai.com/v1"
        key = api_key or judge.api_key()
        if not key:
            if judge.base_url is None:
                raise JudgeError(
                    f"judge '{judge.name}' has no API key: set ${judge.api_key_env} "
                    "(or give the judge a base_url for a server that needs none)"
                )
            key = NO_KEY
        register(key)
        self._key = key
        self._http_transport = transport  # an httpx transport (tests): forces the SDK path
        self._transport: AioHttpTransport | SDKTransport | None = None
        self._sem = asyncio.Semaphore(judge.concurrency)
        self._rpm = AsyncLimiter(judge.requests_per_minute, 60) if judge.requests_per_minute else None
        self._tpm = AsyncLimiter(judge.tokens_per_minute, 60) if judge.tokens_per_minute else None
        # logprobs with response_format auto/text: one 1-token call answering a label code (A, B, ...);
        # with an explicit JSON format: the JSON answer, and the distribution read where the label starts.
        self.codes = label_codes(labels) if judge.logprobs and judge.response_format in ("auto", "text") else None
        fmt_key = f"format:{judge.cache_as or self.endpoint}:{judge.model}"
        self._fmt_key = fmt_key
        self._formats: dict[tuple[str, str], dict[str, Any]] = {}
        self._frames: dict[Any, tuple[bytes, bytes, Any]] = {}
        self._last_frame: tuple[Any, ...] = (None, None, None, None)
        self._key_ns = judge.cache_as or self.endpoint  # what the cache knows this endpoint by
        self._parsed: dict[tuple[Any, Any, str], JudgeAnswer] = {}
        saved = cache.get_meta(fmt_key) if judge.response_format == "auto" else None
        self.fmt = (
            "text"
            if self.codes
            else (saved or ("json_schema" if judge.response_format == "auto" else judge.response_format))
        )

    # -- transport ---------------------------------------------------------------------------
    async def _post(self, req: dict[str, Any], data: bytes) -> bytes:
        if self._transport is None:
            j = self.judge
            if self._http_transport is not None or j.http_backend == "sdk":
                self._transport = SDKTransport(self.endpoint, self._key, j.timeout, j.concurrency, self._http_transport)
            else:
                self._transport = AioHttpTransport(self.endpoint, self._key, j.timeout, j.concurrency)
        return await self._transport.post(req, data)

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    # -- requests ----------------------------------------------------------------------------
    def request(self, messages: list[dict[str, str]], kind: str) -> dict[str, Any]:
        """The request body (without model credentials): also what the cache key is made of."""
        j = self.judge
        req: dict[str, Any] = {"model": j.model, "messages": messages, "temperature": j.temperature}
        if self.codes:
            req.update(max_tokens=j.max_tokens or 1, logprobs=True, top_logprobs=min(20, max(5, len(self.labels))))
        else:
            if j.logprobs:
                req.update(logprobs=True, top_logprobs=min(20, max(5, len(self.labels))))
            req["max_tokens"] = j.max_tokens or (64 + 16 * len(self.labels) if kind == "candidates" else 64)
            rf = self._formats.get((self.fmt, kind))
            if rf is None:
                rf = self._formats[(self.fmt, kind)] = response_format(self.fmt, kind, self.labels, "labels") or {}
            if rf:
                req["response_format"] = rf
        if j.seed is not None:
            req["seed"] = j.seed
        return req

    async def _send(self, req: dict[str, Any], data: bytes) -> dict[str, Any]:
        async with self._sem:
            if self._rpm:
                await self._rpm.acquire()
            if self._tpm:
                est = sum(len(m["content"]) for m in req["messages"]) // 4 + req.get("max_tokens", 64)
                await self._tpm.acquire(min(est, self.judge.tokens_per_minute or est))
            self.budget.check()  # checked last, right before the request: nothing awaits in between
            self.ledger.requests += 1
            content = await self._post(req, data)
        try:
            data = json.loads(content)
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            self.ledger.responses += 1
            return {"content": None, "finish_reason": "invalid_response", "usage": {}, "top_logprobs": None}
        usage = data.get("usage") or {}
        pt, ct = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        self.ledger.responses += 1
        self.ledger.input_tokens += pt
        self.ledger.output_tokens += ct
        top = None
        content_lp = (choice.get("logprobs") or {}).get("content")
        if content_lp:
            at = 0 if self.codes else _label_token(content_lp)
            if at is not None:
                top = [[t.get("token"), t.get("logprob")] for t in (content_lp[at].get("top_logprobs") or [])]
        return {
            "content": message.get("content"),
            "finish_reason": choice.get("finish_reason"),
            "usage": {"prompt_tokens": pt, "completion_tokens": ct},
            "top_logprobs": top,
        }

    async def _complete(self, req: dict[str, Any], data: bytes) -> dict[str, Any]:
        j = self.judge

        def count_retry(_: Any) -> None:
            self.ledger.retries += 1

        try:
            try:
                return await self._send(req, data)  # most calls succeed at once: no retry machinery on that path
            except Exception as first:
                if not _retryable(first) or j.max_attempts == 1:
                    raise
                self.ledger.retries += 1
                await asyncio.sleep(_backoff(1, first))
            from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt  # only once a call failed

            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retryable),
                wait=_wait,
                stop=stop_after_attempt(j.max_attempts - 1),
                reraise=True,
                before_sleep=count_retry,
            ):
                with attempt:
                    return await self._send(req, data)
        except StatusError as e:
            if e.status == 401:
                raise JudgeError(
                    f"judge '{j.name}': {self.endpoint} rejected the API key (401); set a valid key in ${j.api_key_env}"
                ) from None
            if e.status == 403:
                raise JudgeError(
                    f"judge '{j.name}': access denied (403: {_one_line(e.server_message, 120)}); "
                    "check the key's permissions for this model"
                ) from None
            if e.status == 404:
                raise JudgeError(
                    f"judge '{j.name}': model '{j.model}' not found at {self.endpoint} (404); "
                    "fix judges[].model or base_url"
                ) from None
            if _retryable(e):
                raise JudgeError(
                    f"judge '{j.name}': {self.endpoint} kept failing ({e.status}) after "
                    f"{j.max_attempts} attempts; check the server, then rerun to resume"
                ) from None
            raise
        except (TransportError, asyncio.TimeoutError) as e:
            what = "timed out" if getattr(e, "timeout", True) else "cannot be reached"
            raise JudgeError(
                f"judge '{j.name}': {self.endpoint} {what} after {j.max_attempts} attempts; "
                "check base_url and that the server is up, then rerun to resume"
            ) from None
        raise AssertionError("unreachable")

    def _frame(self, head: list[dict[str, str]], kind: str) -> tuple[bytes, bytes, Any] | None:
        """The canonical request around its last message, split at that message, and the hash of the part
        before it (None: this request cannot be split that way).

        Requests of a job differ only in the last message, and everything else (system prompt, examples,
        schema, options) is most of the bytes: that frame is serialised and hashed once, then each request
        only adds its last message. Byte-identical to canonical(request), so keys do not depend on it."""
        last = self._last_frame  # consecutive requests share their frame (same kind and head messages)
        if last[0] == head and last[1] == kind and last[2] == self.fmt:
            return last[3]
        # request() depends only on the messages, the kind and this judge's format: that is the frame's key.
        fkey = (kind, self.fmt, tuple((m["role"], m["content"]) for m in head))
        frame = self._frames.get(fkey)
        if frame is None:
            if len(self._frames) > 64:
                self._frames.clear()  # bounded: a job has a handful of frames (kinds; re-asks are rare)
            parts = canonical(self.request([*head, _MARKER], kind)).split(canonical(_MARKER))
            if len(parts) != 2:
                return None
            hasher = hashlib.sha256(self._key_ns.encode("utf-8") + b"\n" + parts[0])
            frame = self._frames[fkey] = (parts[0], parts[1], hasher)
        self._last_frame = (head, kind, self.fmt, frame)
        return frame

    def encode(self, messages: list[dict[str, str]], kind: str) -> tuple[dict[str, Any], bytes, str]:
        """The request for `messages`, its body (canonical JSON, serialised once: hashed for the key and sent)
        and its cache key."""
        req = self.request(messages, kind)
        frame = self._frame(messages[:-1], kind)
        if frame is None:
            data = canonical(req)
            return req, data, cache_key(self._key_ns, data)
        tail = _last_json(messages[-1])
        h = frame[2].copy()
        h.update(tail)
        h.update(frame[1])
        return req, frame[0] + tail + frame[1], h.hexdigest()

    def key_for(self, messages: list[dict[str, str]], kind: str) -> str:
        """The cache key of the first request `ask(messages, kind)` would send (without building it)."""
        frame = self._frame(messages[:-1], kind)
        if frame is None:
            return self.encode(messages, kind)[2]
        h = frame[2].copy()
        h.update(_last_json(messages[-1]))
        h.update(frame[1])
        return h.hexdigest()

    def cached_answer(self, payload: dict[str, Any], kind: str) -> JudgeAnswer | None:
        """The answer from a cached payload found by `key_for` (as `ask` would give it), or None to ask.
        The caller counts the cache hit once it uses the answer."""
        try:
            return self._parse(payload, kind)
        except InvalidAnswer:
            return None

    async def _cached_complete(self, messages: list[dict[str, str]], kind: str) -> tuple[str, dict[str, Any], bool]:
        req, data, key = self.encode(messages, kind)
        hit = self.cache.get(key)
        if hit is not None:
            return key, hit, True
        return key, await self._complete(req, data), False

    def _parse(self, payload: dict[str, Any], kind: str) -> JudgeAnswer:
        if not self.judge.logprobs:
            # Answers repeat (a handful of labels): one parsed object per distinct reply. Answers are
            # never modified after parsing, so rows can share them.
            pkey = (payload.get("content"), payload.get("finish_reason"), kind)
            ans = self._parsed.get(pkey)
            if ans is None:
                ans = parse_answer(pkey[0], pkey[1], kind, self.labels, self.codes)
                if len(self._parsed) >= 4096:
                    self._parsed.clear()
                self._parsed[pkey] = ans
            return ans
        ans = parse_answer(payload.get("content"), payload.get("finish_reason"), kind, self.labels, self.codes)
        ans.probs = probs_from_logprobs(payload.get("top_logprobs"), self.labels, self.codes)
        return ans

    def _downgrade(self, e: StatusError) -> bool:
        """A 400/422 about the response format (or llama-cpp-python's 500, see `format_rejected`) moves this judge
        to the next format (json_schema > json_object > text)."""
        msg = e.server_message.lower()
        if any(w in msg for w in ("context", "too long", "maximum", "token")) or self.fmt == "text":
            return False
        if self.judge.response_format != "auto":
            return False
        self.fmt = FORMATS[FORMATS.index(self.fmt) + 1]
        self.cache.set_meta(self._fmt_key, self.fmt)
        return True

    async def ask(self, messages: list[dict[str, str]], kind: str) -> JudgeAnswer:
        """One judge's answer for one prompt. Paid at most once: answers are cached as soon as they are valid."""
        msgs, first_key, corrupt = messages, None, 0
        while True:
            try:
                key, payload, cached = await self._cached_complete(msgs, kind)
            except StatusError as e:
                if e.status not in (400, 422) and not format_rejected(e):
                    raise
                if self._downgrade(e):
                    msgs, first_key, corrupt = messages, None, 0
                    continue
                text = _one_line(e.server_message)
                if any(w in text.lower() for w in ("context", "too long", "maximum")):
                    return JudgeAnswer(error=f"request rejected: {text}")
                raise JudgeError(
                    f"judge '{self.judge.name}': the server rejected the request ({e.status}: {text}); "
                    "check the judge's model and options"
                ) from None
            first_key = first_key or key
            if cached:
                self.ledger.cache_hits += 1
            try:
                ans = self._parse(payload, kind)
            except InvalidAnswer as bad:
                corrupt += 1
                self.ledger.reasks += 1
                # Broken or cut-off output is usually a glitch: ask again (bounded). A wrong label is the
                # model's choice: one re-ask with the error, then the row records the failure.
                limit = self.judge.max_attempts if bad.transient else 2
                if corrupt >= limit:
                    self.ledger.failed_rows += 1
                    return JudgeAnswer(error=f"invalid answer: {bad.reason}")
                if msgs is messages:
                    msgs = messages + [
                        {"role": "assistant", "content": (payload.get("content") or "")[:500]},
                        {
                            "role": "user",
                            "content": f"That answer was invalid: {bad.reason}. Answer again, "
                            f"following the required format, using only these labels: "
                            f"{', '.join(self.labels)}.",
                        },
                    ]
                continue
            if not cached:
                await self.cache.aset(key, payload)
            if key != first_key:
                await self.cache.aset(first_key, payload)  # the original question now has a valid answer
            return ans
