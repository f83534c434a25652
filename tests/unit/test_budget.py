"""The budget reserves each request's worst case: a hard limit however many requests are in flight."""

import asyncio

import pytest

from llmlabel.errors import BudgetExhausted
from llmlabel.llm.ledger import JudgeLedger
from llmlabel.llm.limits import Budget, BudgetWait


def test_reservations_count_against_the_cap_until_settled():
    led = JudgeLedger("a", "m", price_input=1e6)  # $1 a token
    b = Budget(max_cost=10.0, ledgers=(led,))
    b.check(4.0)
    b.check(4.0)
    with pytest.raises(BudgetWait):  # 8 reserved + 4 > 10: wait for one in flight
        b.check(4.0)
    led.input_tokens = 1  # the first answer cost $1, not $4
    b.settle(4.0, answered=True)
    b.check(4.0)  # 1 spent + 8 reserved <= 10
    assert b.reserved == 8.0 and b.in_flight == 2


def test_no_request_in_flight_and_no_room_is_the_end_of_the_budget():
    led = JudgeLedger("a", "m", price_input=1e6)
    b = Budget(max_cost=10.0, ledgers=(led,))
    b.check(4.0)
    b.settle(4.0, answered=False)  # never answered: it may have been billed, its worst case stays
    led.input_tokens = 3
    with pytest.raises(BudgetExhausted, match=r"--max-cost \$10 reached"):
        b.check(4.0)  # 3 spent + 4 kept + 4 > 10, and nothing in flight to wait for


def test_halt_wakes_retry_sleeps_and_stops_sending():
    async def main():
        b = Budget()
        sleeper = asyncio.ensure_future(b.sleep(60))
        await asyncio.sleep(0)
        b.halt()
        await asyncio.wait_for(sleeper, 1)
        with pytest.raises(BudgetExhausted):
            b.check()

    asyncio.run(main())
