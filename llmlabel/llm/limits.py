"""What may be sent, and when: a judge's concurrency and rate limits, and the run's budget."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiolimiter import AsyncLimiter

from llmlabel.config import Judge
from llmlabel.errors import BudgetExhausted
from llmlabel.llm.ledger import JudgeLedger


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


class Limits:
    """One judge's concurrency, requests-per-minute and tokens-per-minute limits."""

    def __init__(self, judge: Judge) -> None:
        self._sem = asyncio.Semaphore(judge.concurrency)
        self._rpm = AsyncLimiter(judge.requests_per_minute, 60) if judge.requests_per_minute else None
        self._tpm_max = judge.tokens_per_minute
        self._tpm = AsyncLimiter(judge.tokens_per_minute, 60) if judge.tokens_per_minute else None

    async def send(self, req: dict[str, Any], post: Callable[[], Awaitable[bytes]], admit: Callable[[], None]) -> bytes:
        """`post()` (which sends `req`) within a concurrency slot and its share of the rate limits. `admit()`
        (the budget check, which counts the request) runs last: nothing awaits between it and the request."""
        async with self._sem:
            if self._rpm:
                await self._rpm.acquire()
            if self._tpm:
                est = sum(len(m["content"]) for m in req["messages"]) // 4 + req.get("max_tokens", 64)
                await self._tpm.acquire(min(est, self._tpm_max or est))
            admit()
            return await post()
