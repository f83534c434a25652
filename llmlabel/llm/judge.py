"""One judge: an OpenAI-compatible endpoint asked for answers, each paid at most once.

`JudgeClient` composes the parts: request encoding and cache keys (encoding.py), limits and the budget
(limits.py), retries (retry.py), response formats (formats.py), the transport (transport.py), the cache
(cache.py) and answer parsing (answers.py); what it adds is the request itself and the re-asks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmlabel.config import Judge
from llmlabel.errors import CacheError, JudgeError
from llmlabel.llm.answers import InvalidAnswer, JudgeAnswer, parse_answer, probs_from_logprobs, read_completion
from llmlabel.llm.cache import CacheBackend
from llmlabel.llm.encoding import Messages, RequestEncoder
from llmlabel.llm.formats import Formats, format_rejected
from llmlabel.llm.ledger import JudgeLedger
from llmlabel.llm.limits import Budget, Limits
from llmlabel.llm.memo import Memo
from llmlabel.llm.prompts import FITS_CODES, NO, YES, fits_label, label_codes, offered, shortlist_choices
from llmlabel.llm.retry import BREAKER, RowFailed, give_up, retry_after, retryable, row_failure, with_retries
from llmlabel.llm.transport import AioHttpTransport, SDKTransport, StatusError, TransportError
from llmlabel.redaction import one_line, redact, register

__all__ = ["Budget", "JudgeClient", "NO_KEY", "Tally"]

NO_KEY = "sk-no-key-required"
# A 400 with one of these words is about the prompt's size: the row records it, the run goes on.
_TOO_LONG = ("context", "too long", "maximum")
_YES_NO = [YES, NO]


@dataclass(eq=False)
class Tally:
    """One run's share of a judge client: that judge's ledger in the run, the run's budget, and a cache failure
    the run's calls met. A long-lived client answers several runs at once (the server's concurrent requests):
    each call counts into the tally it is given (pipeline.run_state.RunState makes one per judge)."""

    ledger: JudgeLedger
    budget: Budget
    # The cache failed (disk full, its server gone): answers still reach their rows, the run starts no new row.
    cache_error: CacheError | None = None
    # Told of the first one (RunState), so a run reads its cache failure in one field, not by scanning its
    # tallies: the drive asks before each row it starts (~50 bytecodes a request, results_model.md).
    on_cache_error: Callable[[CacheError], None] | None = None

    def cache_failed(self, e: CacheError) -> None:
        """The cache failed on one of this tally's calls (the first failure is kept)."""
        if self.cache_error is None:
            self.cache_error = e
            if self.on_cache_error is not None:
                self.on_cache_error(e)


class JudgeClient:
    def __init__(
        self,
        judge: Judge,
        cache: CacheBackend,
        ledger: JudgeLedger,
        budget: Budget,
        labels: list[str],
        api_key: str | None = None,
        transport: Any = None,
        multi_label: bool = False,
    ) -> None:
        self.judge, self.cache, self.labels = judge, cache, labels
        self.tally = Tally(ledger, budget)  # the calls' tally when `ask` is given none
        self.endpoint = judge.base_url or "https://api.openai.com/v1"
        key = api_key or judge.api_key()
        if not key:
            problem = judge.key_error()
            if problem:
                raise JudgeError(problem)
            key = NO_KEY
        register(key)
        self._key = key
        self._http_transport = transport  # an httpx transport (tests): forces the SDK path
        self._transport: AioHttpTransport | SDKTransport | None = None
        self.limits = Limits(judge)
        # logprobs with response_format auto/text: one 1-token call answering a label code (A, B, ...);
        # with an explicit JSON format: the JSON answer, and the distribution read where the label starts.
        # A multi-label answer is a set: no one-token code, and a first token's distribution says nothing of it.
        self.multi_label = multi_label
        code_mode = judge.logprobs and judge.response_format in ("auto", "text") and not multi_label
        self.codes = label_codes(labels) if code_mode else None
        self.per_label = judge.per_label  # its questions' kinds are per-label ones, answered Yes or No (FITS_CODES)
        self.formats = Formats(judge, labels, self.endpoint, cache, code_mode=self.codes is not None)
        self.encoder = RequestEncoder(judge.cache_as or self.endpoint, self.request)
        # Without logprobs, equal replies parse to one shared answer (the pipeline's row memo relies on that).
        self._parsed: Memo[tuple[Any, Any, str], JudgeAnswer] = Memo(4096)
        # Requests sent and not yet cached, by cache key: an identical request waits for the answer instead.
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._fails = 0  # requests failed in a row, across rows (the circuit breaker's count)
        self._answered = False  # whether the endpoint has answered once

    @property
    def ledger(self) -> JudgeLedger:
        return self.tally.ledger

    @property
    def budget(self) -> Budget:
        return self.tally.budget

    @property
    def cache_error(self) -> CacheError | None:
        return self.tally.cache_error

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
    def request(self, messages: Messages, kind: str, sample: int = 0) -> dict[str, Any]:
        """The request body (without model credentials): also what the cache key is made of. Sample i of a
        self-consistency judge asks with seed + i (when a seed is set), so seeded servers vary it too."""
        j = self.judge
        req: dict[str, Any] = {"model": j.model, "messages": messages, "temperature": j.temperature}
        codes = self.codes_for(kind)
        if codes:
            # (a Yes/No answer is one token whatever the judge's max_tokens: more would be an explanation)
            tokens = 1 if codes is FITS_CODES else j.max_tokens or 1
            req.update(max_tokens=tokens, logprobs=True, top_logprobs=min(20, max(5, len(codes))))
        else:
            if j.logprobs and not self.multi_label:
                req.update(logprobs=True, top_logprobs=min(20, max(5, len(self.labels))))
            sets = kind in ("candidates", "multilabel")
            req["max_tokens"] = j.max_tokens or (64 + 16 * len(self.labels) if sets else 64)
            rf = self.formats.field(kind)
            if rf:
                req["response_format"] = rf
        if j.seed is not None:
            req["seed"] = j.seed + sample
        return req

    def encode(self, messages: Messages, kind: str, sample: int = 0) -> tuple[dict[str, Any], bytes, str]:
        """The request for `messages` (its `sample`-th copy), its body (canonical JSON) and its cache key."""
        return self.encoder.encode(messages, kind, self.formats.current, sample)

    def key_for(self, messages: Messages, kind: str, sample: int = 0) -> str:
        """The cache key of the first request `ask(messages, kind, sample)` would send (without building it)."""
        return self.encoder.key_for(messages, kind, self.formats.current, sample)

    def keys_for(
        self, batch: list[Messages], kind: str, tails: list[bytes] | None = None, sample: int = 0
    ) -> list[str]:
        """`key_for` of each of a batch of requests (see RequestEncoder.keys_for)."""
        return self.encoder.keys_for(batch, kind, self.formats.current, tails, sample)

    def _worst(self, req: dict[str, Any], data: bytes, led: JudgeLedger) -> float:
        """A request's worst-case cost, reserved from a --max-cost budget before it is sent: every byte of its
        body as an input token (no tokenizer makes a token of less than a byte, and the body's JSON framing
        outweighs any chat template's tokens) plus max_tokens out, at the judge's prices."""
        return (len(data) * led.price_input + req.get("max_tokens", 0) * led.price_output) / 1e6

    async def _send(self, req: dict[str, Any], data: bytes, tally: Tally, code_mode: bool) -> dict[str, Any]:
        """One attempt: the payload of the server's answer, counted in the ledger. The budget check (which
        reserves the worst case and counts the request) runs last before sending: nothing awaits between them.
        (The ledger and budget are the run's, `tally`: runs of one client may overlap.)"""
        budget, ledger = tally.budget, tally.ledger
        capped = budget.max_cost is not None
        worst = self._worst(req, data, ledger) if capped else 0.0
        admitted = False

        def admit() -> None:
            nonlocal admitted
            budget.check(worst)
            ledger.requests += 1
            admitted = True

        try:
            body = await self.limits.send(req, lambda: self._post(req, data), admit, budget.wait)
        except StatusError as e:
            if capped:
                budget.settle(worst, answered=True)  # an error status is not billed
            self._fails += retryable(e)
            if e.status == 429:
                self.limits.throttled(retry_after(e) or 1.0)
            raise
        except BaseException as e:
            if capped and admitted:
                budget.settle(worst, answered=False)  # no answer: the server may have billed it
            self._fails += isinstance(e, (TransportError, asyncio.TimeoutError))
            raise
        # The server's usage is not trusted: counts beyond what this request can have used are cut to that
        # (the worst case reserved above), unusable ones count as it, so the ledger and --max-cost hold.
        payload = read_completion(body, code_mode, (len(data), int(req.get("max_tokens") or 0) or None))
        if payload["content"]:
            payload["content"] = redact(payload["content"])  # a server that echoes the key: never cached/written
        ledger.responses += 1
        ledger.input_tokens += payload["usage"].get("prompt_tokens", 0)
        ledger.output_tokens += payload["usage"].get("completion_tokens", 0)
        ledger.odd_usage += payload["usage"].pop("unusable", 0)
        if capped:
            budget.settle(worst, answered=True)
        self._fails, self._answered = 0, True
        return payload

    async def _complete(self, req: dict[str, Any], data: bytes, tally: Tally, code_mode: bool) -> dict[str, Any]:
        def count_retry() -> None:
            tally.ledger.retries += 1

        try:
            send = lambda: self._send(req, data, tally, code_mode)  # noqa: E731
            return await with_retries(send, self.judge.max_attempts, count_retry, tally.budget.sleep)
        except Exception as e:  # noqa: BLE001 - give_up returns anything it does not word itself
            if retryable(e) and not self._down():
                raise RowFailed(row_failure(self.judge, e)) from None  # one unlucky row: its error, not the run's
            failure = give_up(self.judge, self.endpoint, e, self._fails)
            if failure is e:
                raise
            raise failure from None

    def _down(self) -> bool:
        """The circuit breaker: the endpoint counts as down (the run stops) when it has not answered once in
        this process, or when the last BREAKER requests across rows all failed. Otherwise a row whose attempts
        ran out is that row's error, retried on the next run. (At 30% faults, 16 failures in a row: ~4e-9.)"""
        return not self._answered or self._fails >= BREAKER

    # -- answers -----------------------------------------------------------------------------
    def cached_answer(self, payload: dict[str, Any], kind: str) -> JudgeAnswer | None:
        """The answer from a cached payload found by `key_for` (as `ask` would give it), or None to ask.
        The caller counts the cache hit once it uses the answer."""
        try:
            return self._parse(payload, kind)
        except InvalidAnswer:
            return None

    def code_mode(self, kind: str) -> bool:
        """Whether a request of `kind` is answered in one token (a code, or Yes/No): its reply is read there."""
        return self.codes_for(kind) is not None

    def codes_for(self, kind: str) -> dict[str, str] | None:
        """The label codes a request of `kind` asks for (a shortlist's: its few labels and "none of these"; a
        taxonomy level's: the node's children; a per-label question's: Yes and No)."""
        if self.per_label and fits_label(kind) is not None:
            return FITS_CODES
        if not self.codes:  # a judge without codes (most) skips parsing the kind: twice a request, ~170 bytecodes
            return self.codes
        listed = offered(kind)
        return self.codes if listed is None else label_codes(listed)

    def _parse(self, payload: dict[str, Any], kind: str) -> JudgeAnswer:
        codes = self.codes_for(kind)
        if codes is FITS_CODES:  # a per-label question: Yes or No, and P(Yes) from its one token's logprobs
            yn = parse_answer(payload.get("content"), payload.get("finish_reason"), kind, _YES_NO, codes)
            yn.probs = probs_from_logprobs(payload.get("top_logprobs"), _YES_NO, codes, yn.label)
            return yn
        if not self.judge.logprobs:
            # Answers repeat (a handful of labels): one parsed object per distinct reply. Answers are
            # never modified after parsing, so rows can share them.
            pkey = (payload.get("content"), payload.get("finish_reason"), kind)
            ans = self._parsed.get(pkey)
            if ans is None:
                ans = self._parsed.put(pkey, parse_answer(pkey[0], pkey[1], kind, self.labels, codes))
            return ans
        ans = parse_answer(payload.get("content"), payload.get("finish_reason"), kind, self.labels, codes)
        path = payload.get("label_path")
        steps = [(s[0], s[1], s[2]) for s in path] if path else None
        choices = shortlist_choices(kind)
        if choices is None:
            ans.probs = probs_from_logprobs(payload.get("top_logprobs"), self.labels, codes, ans.label, steps)
        elif ans.label in choices:
            # Over the listed labels only: "none of these" lost, and labels not listed were never offered.
            ans.probs = probs_from_logprobs(
                payload.get("top_logprobs"), choices, codes and {c: codes[c] for c in choices}, ans.label, steps
            )
        return ans

    async def _cached_complete(
        self, messages: Messages, kind: str, sample: int, tally: Tally
    ) -> tuple[str, dict[str, Any], bool]:
        """The payload for `messages`: from the cache, from an identical request already in flight (awaited,
        not sent again), or sent. Returns (key, payload, whether someone else paid for it). A key sent here
        stays in `_inflight` until `ask` has cached its answer (or found it invalid), so no duplicate slips in between."""
        req, data, key = self.encode(messages, kind, sample)
        try:
            hit = self.cache.get(key)
        except CacheError as e:  # a row already started: asked (and kept in its row); no new row starts
            hit = None
            tally.cache_failed(e)
        if hit is not None:
            return key, hit, True
        while (shared := self._inflight.get(key)) is not None:
            try:
                return key, await asyncio.shield(shared), True
            except asyncio.CancelledError:
                if not shared.cancelled():
                    raise  # this ask was cancelled, not the one it waited for (then: ask again)
        fut = self._inflight[key] = asyncio.get_running_loop().create_future()
        code_mode = self.code_mode(kind)  # where the reply carries its label (read as it arrives)
        try:
            if self.cache.shared and tally.cache_error is None:  # other processes ask through this cache: one
                try:  # of them pays, the others wait
                    payload, elsewhere = await self.cache.leased(
                        key, lambda: self._complete(req, data, tally, code_mode)
                    )
                except CacheError as e:  # raised before this process paid: asked without the lease
                    tally.cache_failed(e)
                    payload, elsewhere = await self._complete(req, data, tally, code_mode), False
            else:
                payload, elsewhere = await self._complete(req, data, tally, code_mode), False
        except BaseException as e:
            del self._inflight[key]
            if isinstance(e, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(e)
                fut.exception()  # retrieved: waiters may be none
            raise
        fut.set_result(payload)
        if elsewhere:
            del self._inflight[key]  # already cached by the process that paid: `ask` stores nothing
        return key, payload, elsewhere

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

    async def ask(self, messages: Messages, kind: str, sample: int = 0, tally: Tally | None = None) -> JudgeAnswer:
        """One judge's answer for one prompt (its `sample`-th, for self-consistency), counted in `tally` (the
        run's; the client's own when None). Paid at most once: answers are cached as soon as they are valid."""
        tally = tally or self.tally
        ledger = tally.ledger
        try:
            msgs, first_key, corrupt = messages, None, 0
            while True:
                sent = self.formats.current
                try:
                    key, payload, cached = await self._cached_complete(msgs, kind, sample, tally)
                except RowFailed as e:  # its attempts ran out while the endpoint otherwise answers
                    ledger.failed_rows += 1
                    return JudgeAnswer(error=str(e))
                except StatusError as e:
                    if e.status not in (400, 422) and not format_rejected(e):
                        raise
                    if self.formats.step_down(e, sent):
                        msgs, first_key, corrupt = messages, None, 0
                        continue
                    return self._rejected(e)
                first_key = first_key or key
                if cached:
                    ledger.cache_hits += 1
                try:
                    ans = self._parse(payload, kind)
                except InvalidAnswer as bad:
                    self._inflight.pop(key, None)  # asked again below: that one is sent, not shared
                    corrupt += 1
                    ledger.reasks += 1
                    # Broken or cut-off output is usually a glitch: ask again (bounded). A wrong label is the
                    # model's choice: one re-ask with the error, then the row records the failure.
                    if corrupt >= (self.judge.max_attempts if bad.transient else 2):
                        ledger.failed_rows += 1
                        return JudgeAnswer(error=f"invalid answer: {bad.reason}")
                    if msgs is messages:
                        msgs = self._reask(messages, payload.get("content"), bad)
                    continue
                if not cached:
                    try:
                        await self._store(key, payload, tally)
                    finally:
                        self._inflight.pop(key, None)  # cached now: later asks find it there
                if key != first_key:
                    await self._store(first_key, payload, tally)  # the original question now has a valid answer
                return ans
        except Exception as e:
            # Said as it leaves the client, in the same loop turn as the failure: the run halts before the ask
            # that took the connection slot it freed can send (pipeline.drive).
            if tally.budget.on_error is not None:
                tally.budget.on_error(e)
            raise

    async def _store(self, key: str, payload: dict[str, Any], tally: Tally) -> None:
        """Cache a paid answer. When the cache fails (a full disk, a read-only directory, Redis gone) the answer
        is still returned, so its row keeps it in the part file: a rerun skips the row instead of paying again.
        The run notices the tally's `cache_error`: a file run starts no new row and stops with its line."""
        try:
            await self.cache.aset(key, payload)
        except CacheError as e:
            tally.cache_failed(e)
