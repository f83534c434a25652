"""One judge: an OpenAI-compatible endpoint asked for answers, each paid at most once.

`JudgeClient` composes the parts: request encoding and cache keys (encoding.py), limits and the budget
(limits.py), retries (retry.py), response formats (formats.py), the transport (transport.py), the cache
(cache.py) and answer parsing (answers.py); what it adds is the request itself and the re-asks."""

from __future__ import annotations

from typing import Any

from llmlabel.config import Judge
from llmlabel.errors import JudgeError
from llmlabel.llm.answers import InvalidAnswer, JudgeAnswer, parse_answer, probs_from_logprobs, read_completion
from llmlabel.llm.cache import ResponseCache
from llmlabel.llm.encoding import Messages, RequestEncoder
from llmlabel.llm.formats import Formats, format_rejected
from llmlabel.llm.ledger import JudgeLedger
from llmlabel.llm.limits import Budget, Limits
from llmlabel.llm.memo import Memo
from llmlabel.llm.prompts import label_codes
from llmlabel.llm.retry import give_up, one_line, with_retries
from llmlabel.llm.transport import AioHttpTransport, SDKTransport, StatusError
from llmlabel.secrets import register

__all__ = ["Budget", "JudgeClient", "NO_KEY"]

NO_KEY = "sk-no-key-required"
# A 400 with one of these words is about the prompt's size: the row records it, the run goes on.
_TOO_LONG = ("context", "too long", "maximum")


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
        self.limits = Limits(judge)
        # logprobs with response_format auto/text: one 1-token call answering a label code (A, B, ...);
        # with an explicit JSON format: the JSON answer, and the distribution read where the label starts.
        self.codes = label_codes(labels) if judge.logprobs and judge.response_format in ("auto", "text") else None
        self.formats = Formats(judge, labels, self.endpoint, cache, code_mode=self.codes is not None)
        self.encoder = RequestEncoder(judge.cache_as or self.endpoint, self.request)
        # Without logprobs, equal replies parse to one shared answer (the pipeline's row memo relies on that).
        self._parsed: Memo[tuple[Any, Any, str], JudgeAnswer] = Memo(4096)

    @property
    def fmt(self) -> str:
        """The response format requests use now."""
        return self.formats.current

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
    def request(self, messages: Messages, kind: str) -> dict[str, Any]:
        """The request body (without model credentials): also what the cache key is made of."""
        j = self.judge
        req: dict[str, Any] = {"model": j.model, "messages": messages, "temperature": j.temperature}
        if self.codes:
            req.update(max_tokens=j.max_tokens or 1, logprobs=True, top_logprobs=min(20, max(5, len(self.labels))))
        else:
            if j.logprobs:
                req.update(logprobs=True, top_logprobs=min(20, max(5, len(self.labels))))
            req["max_tokens"] = j.max_tokens or (64 + 16 * len(self.labels) if kind == "candidates" else 64)
            rf = self.formats.field(kind)
            if rf:
                req["response_format"] = rf
        if j.seed is not None:
            req["seed"] = j.seed
        return req

    def encode(self, messages: Messages, kind: str) -> tuple[dict[str, Any], bytes, str]:
        """The request for `messages`, its body (canonical JSON) and its cache key."""
        return self.encoder.encode(messages, kind, self.formats.current)

    def key_for(self, messages: Messages, kind: str) -> str:
        """The cache key of the first request `ask(messages, kind)` would send (without building it)."""
        return self.encoder.key_for(messages, kind, self.formats.current)

    def _admit(self) -> None:
        """The budget check before a paid request, which it counts (ledger and budget may be swapped between
        runs of one client: read them here)."""
        self.budget.check()
        self.ledger.requests += 1

    async def _send(self, req: dict[str, Any], data: bytes) -> dict[str, Any]:
        """One attempt: the payload of the server's answer, counted in the ledger."""
        body = await self.limits.send(req, lambda: self._post(req, data), self._admit)
        payload = read_completion(body, self.codes is not None)
        self.ledger.responses += 1
        self.ledger.input_tokens += payload["usage"].get("prompt_tokens", 0)
        self.ledger.output_tokens += payload["usage"].get("completion_tokens", 0)
        return payload

    async def _complete(self, req: dict[str, Any], data: bytes) -> dict[str, Any]:
        def count_retry() -> None:
            self.ledger.retries += 1

        try:
            return await with_retries(lambda: self._send(req, data), self.judge.max_attempts, count_retry)
        except Exception as e:  # noqa: BLE001 - give_up returns anything it does not word itself
            failure = give_up(self.judge, self.endpoint, e)
            if failure is e:
                raise
            raise failure from None

    # -- answers -----------------------------------------------------------------------------
    def cached_answer(self, payload: dict[str, Any], kind: str) -> JudgeAnswer | None:
        """The answer from a cached payload found by `key_for` (as `ask` would give it), or None to ask.
        The caller counts the cache hit once it uses the answer."""
        try:
            return self._parse(payload, kind)
        except InvalidAnswer:
            return None

    def _parse(self, payload: dict[str, Any], kind: str) -> JudgeAnswer:
        if not self.judge.logprobs:
            # Answers repeat (a handful of labels): one parsed object per distinct reply. Answers are
            # never modified after parsing, so rows can share them.
            pkey = (payload.get("content"), payload.get("finish_reason"), kind)
            ans = self._parsed.get(pkey)
            if ans is None:
                ans = self._parsed.put(pkey, parse_answer(pkey[0], pkey[1], kind, self.labels, self.codes))
            return ans
        ans = parse_answer(payload.get("content"), payload.get("finish_reason"), kind, self.labels, self.codes)
        ans.probs = probs_from_logprobs(payload.get("top_logprobs"), self.labels, self.codes)
        return ans

    async def _cached_complete(self, messages: Messages, kind: str) -> tuple[str, dict[str, Any], bool]:
        req, data, key = self.encode(messages, kind)
        hit = self.cache.get(key)
        if hit is not None:
            return key, hit, True
        return key, await self._complete(req, data), False

    def _rejected(self, e: StatusError) -> JudgeAnswer:
        """A 4xx (or a format 500) the format cannot fix: a too-long prompt is the row's error, else the run's."""
        text = one_line(e.server_message)
        if any(w in text.lower() for w in _TOO_LONG):
            return JudgeAnswer(error=f"request rejected: {text}")
        raise JudgeError(
            f"judge '{self.judge.name}': the server rejected the request ({e.status}: {text}); "
            "check the judge's model and options"
        ) from None

    def _reask(self, messages: Messages, content: str | None, bad: InvalidAnswer) -> Messages:
        return messages + [
            {"role": "assistant", "content": (content or "")[:500]},
            {
                "role": "user",
                "content": f"That answer was invalid: {bad.reason}. Answer again, following the required format, "
                f"using only these labels: {', '.join(self.labels)}.",
            },
        ]

    async def ask(self, messages: Messages, kind: str) -> JudgeAnswer:
        """One judge's answer for one prompt. Paid at most once: answers are cached as soon as they are valid."""
        msgs, first_key, corrupt = messages, None, 0
        while True:
            sent = self.formats.current
            try:
                key, payload, cached = await self._cached_complete(msgs, kind)
            except StatusError as e:
                if e.status not in (400, 422) and not format_rejected(e):
                    raise
                if self.formats.step_down(e, sent):
                    msgs, first_key, corrupt = messages, None, 0
                    continue
                return self._rejected(e)
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
                if corrupt >= (self.judge.max_attempts if bad.transient else 2):
                    self.ledger.failed_rows += 1
                    return JudgeAnswer(error=f"invalid answer: {bad.reason}")
                if msgs is messages:
                    msgs = self._reask(messages, payload.get("content"), bad)
                continue
            if not cached:
                await self.cache.aset(key, payload)
            if key != first_key:
                await self.cache.aset(first_key, payload)  # the original question now has a valid answer
            return ans
