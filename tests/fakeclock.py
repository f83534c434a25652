"""A fake clock for asyncio code: an event loop whose time moves only when every task waits, and then jumps to
the next timer at once. Code under test keeps calling `asyncio.sleep`, `asyncio.wait(timeout=...)` and
`loop.time()` (the loop is the clock it reads); a test of a 30 s timeout takes no time, and an assertion on
`loop.time()` says how long the code waited in the loop's time, whatever the machine's load.

`run(main())` runs a coroutine on such a loop. A loop with nothing scheduled waits for a thread or a signal
(really, up to GUARD seconds); a test that waits for something that never comes fails with "deadlock"
instead of hanging: GUARD is a deadlock guard, not a timing assertion."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

GUARD = 60.0  # real seconds a loop with nothing scheduled waits for a thread or a signal
HORIZON = 3600.0  # loop seconds: past this, a test is waiting for something that never happens


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: FakeClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)  # signals and other threads' calls (the loop's self-pipe) first
        if ready or timeout == 0:
            return ready
        if timeout is None:  # nothing scheduled: only a thread or a signal can wake the loop
            ready = super().select(GUARD)
            if not ready:
                raise RuntimeError(f"deadlock: nothing scheduled and nothing woke the loop in {GUARD:g} s")
            return ready
        self._loop.now += timeout  # every task waits: time jumps to the next timer
        if self._loop.now > HORIZON:
            raise RuntimeError(f"deadlock: the loop's clock passed {HORIZON:g} s waiting")
        return []


class FakeClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=FakeClockLoop) as runner:
        return runner.run(main)


def now() -> float:
    return asyncio.get_running_loop().time()


async def until(cond: Callable[[], bool], step: float = 0.01, limit: float = 600.0) -> None:
    """Wait until `cond()` holds, looking every `step` of the loop's time (which moves only when every task
    waits). Past `limit` loop seconds it fails: what the test waits for is not coming (a deadlock guard)."""
    end = now() + limit
    while not cond():
        if now() > end:
            raise AssertionError(f"deadlock: still waiting after {limit:g} s of the loop's time")
        await asyncio.sleep(step)
