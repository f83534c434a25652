"""Retries of one request: which failures are worth another attempt, how long to wait, and the error a user
sees when they run out. One tenacity loop owns every retry decision.

Retried: 408/409/429, 5xx (except a 500 that rejects the response format), timeouts and dropped
connections; exponential backoff with full jitter, never shorter than the server's Retry-After; at most
`max_attempts` attempts. 401/403/404 and other 4xx stop at once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from llmlabel.config import Judge
from llmlabel.errors import JudgeError
from llmlabel.llm.formats import format_rejected
from llmlabel.llm.transport import StatusError, TransportError
from llmlabel.redaction import one_line

T = TypeVar("T")

# The circuit breaker (JudgeClient._down): this many failed requests in a row, across rows, and the endpoint
# counts as down; fewer, and a row whose attempts ran out is only that row's error.
BREAKER = 16


class RowFailed(JudgeError):
    """One row's request failed for good while the endpoint otherwise answers: the row's error, not the run's."""


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, TransportError):
        return True
    if isinstance(exc, StatusError):
        return exc.status in (408, 409, 429) or (exc.status >= 500 and not format_rejected(exc))
    return isinstance(exc, asyncio.TimeoutError)


def retry_after(exc: BaseException | None) -> float | None:
    """The server's Retry-After(-ms) in seconds (at most 5 minutes), if it sent one."""
    headers = getattr(exc, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        v = headers.get(name)
        if v:
            try:
                seconds = float(v) * scale
            except ValueError:
                return None
            # Not trusted: a negative, NaN or infinite wait is no wait asked for; a long one is cut to 5 minutes.
            return min(seconds, 300.0) if seconds >= 0 else None
    return None


def backoff(attempt: int, exc: BaseException | None) -> float:
    """The wait after failed attempt `attempt` (1-based): exponential with full jitter, capped at 30 s,
    never shorter than the server's Retry-After."""
    exp = random.uniform(0, min(30.0, 0.5 * 2 ** (attempt - 1)))
    ra = retry_after(exc)
    return max(exp, ra + random.uniform(0, 0.25)) if ra is not None else exp


def _wait(state: Any) -> float:
    return backoff(state.attempt_number, state.outcome.exception() if state.outcome else None)


async def with_retries(
    send: Callable[[], Awaitable[T]],
    max_attempts: int,
    on_retry: Callable[[], None],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`send()`, attempted up to `max_attempts` times; `on_retry` is called before each new attempt, after
    waiting with `sleep` (the budget's, which a graceful stop cuts short).

    Most requests succeed at once, and a tenacity loop costs ~35 us of CPU a request (over 10% of the
    client's whole cost per request): the loop starts only once the first attempt has failed, and takes that
    failure as its attempt 1, so every retry decision (whether, when, how often) is the loop's."""
    try:
        return await send()
    except Exception as first:  # noqa: BLE001 - the loop below decides what is retried
        failed: BaseException | None = first
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt  # only once a call failed

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(retryable),
        wait=_wait,
        stop=stop_after_attempt(max_attempts),
        reraise=True,
        before_sleep=lambda _: on_retry(),
        sleep=sleep,
    ):
        with attempt:
            if failed is not None:
                error, failed = failed, None
                raise error
            return await send()
    raise AssertionError("unreachable: tenacity returns or re-raises")


def row_failure(judge: Judge, exc: BaseException) -> str:
    """A row's error when its attempts ran out (retried on the next run)."""
    what = (
        f"HTTP {exc.status}"
        if isinstance(exc, StatusError)
        else ("timeout" if getattr(exc, "timeout", True) else "connection error")
    )
    return f"judge '{judge.name}' failed after {judge.max_attempts} attempts ({what}); rerun to retry this row"


def give_up(judge: Judge, endpoint: str, exc: BaseException, in_a_row: int = 0) -> BaseException:
    """The one-line error for a request that failed for good (retries spent, or not worth one); `exc` itself
    for a status the caller handles (other 4xx). `in_a_row`: requests failed in a row across rows."""
    j = judge
    streak = f"; {in_a_row} requests in a row failed" if in_a_row > j.max_attempts else ""
    if isinstance(exc, StatusError):
        if exc.status == 401:
            return JudgeError(
                f"judge '{j.name}': {endpoint} rejected the API key (401); set a valid key in ${j.api_key_env}"
            )
        if exc.status == 403:
            return JudgeError(
                f"judge '{j.name}': access denied (403: {one_line(exc.server_message, 120)}); "
                "check the key's permissions for this model"
            )
        if exc.status == 404:
            return JudgeError(
                f"judge '{j.name}': model '{j.model}' not found at {endpoint} (404); fix judges[].model or base_url"
            )
        if retryable(exc):
            return JudgeError(
                f"judge '{j.name}': {endpoint} kept failing ({exc.status}) after "
                f"{j.max_attempts} attempts{streak}; check the server, then rerun to resume"
            )
        return exc
    if isinstance(exc, (TransportError, asyncio.TimeoutError)):
        what = "timed out" if getattr(exc, "timeout", True) else "cannot be reached"
        return JudgeError(
            f"judge '{j.name}': {endpoint} {what} after {j.max_attempts} attempts{streak}; "
            "check base_url and that the server is up, then rerun to resume"
        )
    return exc
