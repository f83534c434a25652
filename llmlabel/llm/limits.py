"""What may be sent, and when: a judge's concurrency and rate limits, and the run's budget."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiolimiter import AsyncLimiter

from llmlabel.config import Judge
from llmlabel.errors import BudgetExhausted
from llmlabel.llm.ledger import JudgeLedger


class BudgetWait(Exception):
    """This request's worst case does not fit in the budget until requests in flight settle: wait for one."""


@dataclass
class Budget:
    """Run-wide limits, checked before every paid request. They are hard limits at any concurrency: each
    request reserves its worst-case cost before it is sent (`check(worst)`), and the reservation is settled
    once its answer's real usage is in the ledger (`settle`). A request that got no answer (timed out,
    dropped, cancelled) keeps its reservation as spent: the server may have billed it. A request whose worst
    case does not fit waits while others are in flight (their settling may make room); with none in flight,
    the budget is spent."""

    max_cost: float | None = None
    max_requests: int | None = None
    ledgers: tuple[JudgeLedger, ...] = ()
    # The run's cancel flag (RunOptions.cancel, set from any thread): read before every request, so that none is
    # sent after it, even before the run's own look at it (pipeline.drive polls it).
    cancel: threading.Event | None = None
    # Told of every error that ends an ask, by its judge client as the error leaves it (before any other ask
    # runs): a run that stops at its first error (pipeline.drive) halts here, so the ask taking the connection
    # slot the failed request freed is not sent and then thrown away.
    on_error: Callable[[BaseException], None] | None = field(default=None, repr=False)
    reserved: float = 0.0  # worst cases of requests in flight, and of those sent and never answered
    in_flight: int = 0  # requests holding a reservation
    _settled: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _halted: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def check(self, worst: float = 0.0) -> None:
        if self.cancel is not None and self.cancel.is_set():
            self.halt()
        if self.max_requests is None and self.max_cost is None:
            return
        if self.max_requests is not None and sum(j.requests for j in self.ledgers) >= self.max_requests:
            raise BudgetExhausted(f"--max-requests {self.max_requests} reached")
        if self.max_cost is not None:
            spent = sum(j.cost for j in self.ledgers)
            committed = spent + self.reserved
            if committed >= self.max_cost or committed + worst > self.max_cost:
                if self.in_flight:
                    raise BudgetWait
                raise BudgetExhausted(
                    f"--max-cost ${self.max_cost:g} reached (spent ${spent:.4f}; "
                    f"a request could cost up to ${worst:.4f} more)"
                )
            self.reserved += worst
            self.in_flight += 1

    def settle(self, worst: float, answered: bool) -> None:
        """A reserved request is over: its real cost is in the ledger if `answered`, else it stays reserved."""
        self.in_flight -= 1
        if answered:
            self.reserved -= worst
        self._settled.set()

    def halt(self) -> None:
        """Send nothing more (a graceful stop): requests in flight finish; asks waiting for room in the
        budget or in a retry's backoff wake now and stop (their next check raises BudgetExhausted)."""
        self.max_requests = 0
        self._halted.set()
        self._settled.set()

    async def sleep(self, seconds: float) -> None:
        """A retry's backoff, cut short by `halt`."""
        if not self._halted.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._halted.wait(), seconds)

    async def wait(self) -> None:
        self._settled.clear()
        await self._settled.wait()


class Limits:
    """One judge's concurrency, requests-per-minute and tokens-per-minute limits."""

    def __init__(self, judge: Judge) -> None:
        self._sem = asyncio.Semaphore(judge.concurrency)
        self._rpm = AsyncLimiter(judge.requests_per_minute, 60) if judge.requests_per_minute else None
        self._tpm_max = judge.tokens_per_minute
        self._tpm = AsyncLimiter(judge.tokens_per_minute, 60) if judge.tokens_per_minute else None

    async def send(
        self,
        req: dict[str, Any],
        post: Callable[[], Awaitable[bytes]],
        admit: Callable[[], None],
        budget_wait: Callable[[], Awaitable[None]],
    ) -> bytes:
        """`post()` (which sends `req`) within a concurrency slot and its share of the rate limits. `admit()`
        (the budget check, which counts the request) runs last: nothing awaits between it and the request;
        while the budget has no room yet, `budget_wait()` (the run's budget) waits for a request to settle."""
        async with self._sem:
            await self.pace(req)
            while True:
                try:
                    admit()
                    break
                except BudgetWait:
                    await budget_wait()
            return await post()

    async def pace(self, req: dict[str, Any]) -> None:
        """Wait for the request's share of the rate limits (the Ray engine's workers share them job-wide)."""
        if self._rpm:
            await self._rpm.acquire()
        if self._tpm:
            await self._tpm.acquire(self.tokens(req))

    def tokens(self, req: dict[str, Any]) -> float:
        """The request's tokens as the tokens-per-minute limit counts them (an estimate made before sending)."""
        est = sum(len(m["content"]) for m in req["messages"]) // 4 + req.get("max_tokens", 64)
        return min(est, self._tpm_max or est)

    def throttled(self, seconds: float) -> None:
        """The server answered 429 (asking for `seconds` of rest): this request's retry already waits; the Ray
        engine's workers also pause every other worker's sends to the judge."""
