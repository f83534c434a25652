"""The scheduler (pipeline/drive.py) with judges that answer when the test says (tests/fakejudges.py) on a loop
whose clock moves only when every task waits (tests/fakeclock.py): the window, the drain, halts (a cancel,
Ctrl-C, a second Ctrl-C, a dead judge), the budget and the cascade's probe. Nothing here sleeps in real time
or races a clock: each step waits for an event of the run (a request arrived, the stop landed)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fakeclock import now, run, until
from fakejudges import FakeJudges

from llmlabel.config import parse_config
from llmlabel.errors import BudgetExhausted, JudgeError
from llmlabel.pipeline.drive import drive
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.row_labeler import RowLabeler

LABELS = ["pos", "neg"]
TIMEOUT = 7.0  # the judges' timeout: a graceful stop waits at most this long (< 30 s) for answers in flight


class MemoryCache:
    """A response cache in a dict (the cache is not what these tests look at; SQLite's writer thread would
    let the fake clock jump while a write is on its way)."""

    shared = False

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.meta: dict[str, Any] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        return {k: self.data[k] for k in keys if k in self.data}

    def set(self, key: str, value: dict[str, Any]) -> None:
        self.data[key] = value

    async def aset(self, key: str, value: dict[str, Any]) -> None:
        self.data[key] = value

    async def leased(self, key: str, call: Any) -> tuple[dict[str, Any], bool]:
        return await call(), False

    def get_meta(self, name: str) -> Any:
        return self.meta.get(name)

    def set_meta(self, name: str, value: Any) -> None:
        self.meta[name] = value

    def __len__(self) -> int:
        return len(self.data)

    def close(self) -> None:
        pass


class Sink:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def append(self, rec: dict[str, Any]) -> None:
        self.rows.append(rec)

    def append_lines(self, lines: list[bytes]) -> None:
        self.rows += [json.loads(line) for line in lines]

    def texts(self) -> list[str]:
        return sorted(r["text"] for r in self.rows)


class Input:
    """Rows for `drive`, counting how many it has taken."""

    def __init__(self, n: int, prefix: str = "text") -> None:
        self.n, self.prefix, self.taken = n, prefix, 0

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for i in range(self.n):
            self.taken += 1
            yield i, {"id": f"{self.prefix}{i}", "text": f"{self.prefix} {i}"}


def make_labeler(
    fake: FakeJudges, judges: int = 1, concurrency: int = 4, logprobs: bool = False, attempts: int = 2, **extra: Any
) -> tuple[RowLabeler, RunOptions]:
    opts_keys = {"max_cost", "max_requests", "cancel"}
    opts = RunOptions(progress=False, transport=fake, **{k: v for k, v in extra.items() if k in opts_keys})
    cfg = parse_config(
        {
            "task": {"name": "t", "instructions": "Classify.", "labels": {"pos": "good", "neg": "bad"}},
            "judges": [
                {
                    "name": name,
                    "model": name,
                    "base_url": "http://judges.test/v1",
                    "concurrency": concurrency,
                    "timeout": TIMEOUT,
                    "logprobs": logprobs,
                    "max_attempts": attempts,
                    "price_per_million": {"input": 1.0, "output": 2.0},
                }
                for name in "abc"[:judges]
            ],
            "cache_dir": "unused",
            **{k: v for k, v in extra.items() if k not in opts_keys},
        }
    )
    return RowLabeler(cfg, cfg.judges, opts, cache=MemoryCache()), opts


def start(labeler: RowLabeler, rows: Input, sink: Sink) -> asyncio.Task[str | None]:
    return asyncio.ensure_future(drive(labeler, rows, sink, rows.n))


async def answer_all(fake: FakeJudges, run: asyncio.Task[Any]) -> None:
    """Answer every request as it comes, until the run ends."""
    while not run.done():
        for a in fake.waiting:
            a.answer()
        await asyncio.sleep(0.01)


# -- the window ---------------------------------------------------------------------------------------------
def test_window_bounds_the_rows_in_flight():
    """Rows waiting for their judges hold the window: the scheduler takes no more input than it bounds (64
    rows here), however long the judges take, and takes more as rows finish."""
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, concurrency=2)
    rows, sink = Input(300), Sink()

    async def main() -> None:
        run = start(labeler, rows, sink)
        await until(lambda: len(fake.asks) == 2)
        await asyncio.sleep(60)  # a minute of the loop's time: nothing more may start
        assert len(fake.waiting) == 2  # the judge's concurrency
        assert rows.taken <= 64 + 1  # the window, and the one row that waits for it
        held = rows.taken
        while not run.done():
            for a in fake.waiting:
                a.answer()
            await asyncio.sleep(1)
            assert rows.taken - len(sink.rows) <= 64 + 1
        assert await run is None
        assert held <= 65 and rows.taken == 300

    run(main())
    assert len(sink.rows) == 300 and all(r["label"] in LABELS for r in sink.rows)
    assert fake.most_waiting == 2


# -- the drain ----------------------------------------------------------------------------------------------
def test_drain_waits_for_every_row_in_flight():
    """Once the input is all started, the run ends when its last row is answered: after any time, in any order."""
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, concurrency=10)
    rows, sink = Input(10), Sink()

    async def main() -> None:
        run = start(labeler, rows, sink)
        await until(lambda: len(fake.asks) == 10)
        for k, a in enumerate(reversed(fake.asks)):
            await asyncio.sleep(100)  # longer than any timeout of the scheduler
            assert not run.done() and len(sink.rows) == k
            a.answer()
        assert await run is None

    run(main())
    assert sink.texts() == sorted(f"text {i}" for i in range(10))
    assert labeler.fatal is None and labeler.ledger.rows_done == 10


# -- halts --------------------------------------------------------------------------------------------------
def test_cancel_sends_nothing_new_and_keeps_the_answers_in_flight():
    cancel = threading.Event()
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, concurrency=3, cancel=cancel)
    rows, sink = Input(20), Sink()

    async def main() -> None:
        run = start(labeler, rows, sink)
        await until(lambda: len(fake.asks) == 3)
        cancel.set()  # the service's cancel button (from any thread)
        await until(lambda: labeler.budget.max_requests == 0)  # the run saw it: the budget is halted
        await asyncio.sleep(1)
        for a in fake.asks:
            a.answer()
        assert await run == "cancelled"

    run(main())
    assert len(fake.asks) == 3  # nothing sent after the cancel
    assert len(sink.rows) == 3 and all(r["label"] in LABELS and r["error"] is None for r in sink.rows)
    assert labeler.fatal is None  # a cancel's halted budget is not the user's
    assert labeler.ledger.requests == labeler.ledger.judges["a"].responses == 3


def test_a_cancel_not_yet_seen_by_the_run_sends_nothing_more():
    """The cancel flag is set from another thread (the service's cancel, a Labeler's Ctrl-C) and the run looks
    at it every 0.1 s; an answer arriving meanwhile frees a slot, and the ask taking it reads the flag before
    it sends: nothing is sent after the cancel."""
    cancel = threading.Event()
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, concurrency=3, cancel=cancel)
    rows, sink = Input(20), Sink()

    async def main() -> None:
        run = start(labeler, rows, sink)
        await until(lambda: len(fake.asks) == 3)
        cancel.set()
        fake.asks[0].answer()  # before the run's next look at the flag
        await until(lambda: labeler.budget.max_requests == 0)
        for a in fake.waiting:
            a.answer()
        assert await run == "cancelled"

    run(main())
    assert len(fake.asks) == 3  # nothing sent after the cancel
    assert len(sink.rows) == 3 and all(r["label"] in LABELS for r in sink.rows) and labeler.fatal is None


async def _cancel_at_the_first_prompt(fake: FakeJudges, cancel: threading.Event, run: asyncio.Future) -> object:
    """Cancel once the first content-free prompt is asked, answer whatever else is asked until `run` ends, and
    return what it returned."""
    await until(lambda: len(fake.asks) == 1)
    cancel.set()
    while not run.done():
        for a in fake.waiting:
            a.answer("pos", 0.5)
        await asyncio.sleep(0.01)
    return await run


def test_a_cancel_during_calibration_stops_the_run_as_cancelled():
    """The calibration's next request reads the cancel before the run's poll does: nothing more is sent, and
    the run stops as cancelled (not with the halted budget's BudgetExhausted)."""
    cancel = threading.Event()
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, logprobs=True, cancel=cancel)
    rows, sink = Input(5), Sink()

    async def main() -> None:
        run = start(labeler, rows, sink)
        assert await _cancel_at_the_first_prompt(fake, cancel, run) == "cancelled"

    run(main())
    assert len(fake.asks) == 1 and sink.rows == [] and labeler.fatal is None


def test_a_cancel_during_the_ray_drivers_calibration_stops_it_as_cancelled(tmp_path):
    """The Ray engine calibrates in its driver (no scheduler there): a cancel read by the calibration's next
    request stops it as cancelled, before any actor starts (without Ray: it is not reached)."""
    from llmlabel.distributed.driver import RayExecutor
    from llmlabel.io.output import PartFile
    from llmlabel.pipeline.executors import RowSource

    cancel = threading.Event()
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, logprobs=True, cancel=cancel)

    async def main() -> None:
        source = RowSource(lambda: iter(()), 5, spec=("unused",))
        run = asyncio.ensure_future(RayExecutor(None, 2).execute(labeler, source, PartFile(tmp_path / "out.part")))
        assert await _cancel_at_the_first_prompt(fake, cancel, run) == "cancelled"

    run(main())
    assert len(fake.asks) == 1 and labeler.fatal is None


def test_graceful_stop_waits_for_answers_in_flight_at_most_the_judges_timeout():
    """A cancel keeps the answers in flight, but waits for them no longer than the judges' timeout (under 30
    s): an answer that never comes leaves its row for the next run."""
    cancel = threading.Event()
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, concurrency=3, cancel=cancel)
    rows, sink = Input(20), Sink()

    async def main() -> float:
        run = start(labeler, rows, sink)
        await until(lambda: len(fake.asks) == 3)
        cancelled = now()
        cancel.set()
        await until(lambda: labeler.budget.max_requests == 0)
        fake.asks[1].answer()
        assert await run == "cancelled"
        return now() - cancelled

    waited = run(main())
    assert TIMEOUT <= waited <= TIMEOUT + 0.2  # (the run looks at the cancel flag every 0.1 s)
    assert sink.texts() == [fake.asks[1].text] and len(fake.asks) == 3


def _ctrl_c() -> None:
    """Ctrl-C, to the run's handler (without one, it would stop pytest itself)."""
    assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler, "the run handles no Ctrl-C"
    os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_ctrl_c_stops_sending_and_keeps_what_was_answered():
    """The first Ctrl-C is graceful: nothing new is sent, the answers in flight arrive and their rows are kept."""
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, concurrency=4)
    rows, sink = Input(50), Sink()

    async def main() -> None:
        run = start(labeler, rows, sink)
        await until(lambda: len(fake.asks) == 4)
        fake.asks[0].answer()
        await until(lambda: len(fake.asks) == 5)  # its row finished: the next one was sent
        _ctrl_c()
        await until(lambda: labeler.budget.max_requests == 0)
        await asyncio.sleep(1)
        for a in fake.waiting:
            a.answer()
        assert await run == "interrupted (Ctrl-C)"

    run(main())
    assert len(fake.asks) == 5 and len(sink.rows) == 5
    assert all(r["label"] in LABELS for r in sink.rows) and labeler.fatal is None


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_a_second_ctrl_c_stops_at_once():
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, concurrency=4)
    rows, sink = Input(50), Sink()

    async def main() -> float:
        run = start(labeler, rows, sink)
        await until(lambda: len(fake.asks) == 4)
        _ctrl_c()
        await until(lambda: labeler.budget.max_requests == 0)
        fake.asks[2].answer()
        await until(lambda: len(sink.rows) == 1)
        second = now()
        _ctrl_c()  # the other three are not waited for
        assert await run == "interrupted (Ctrl-C)"
        return now() - second

    assert run(main()) < 1  # not the judges' timeout
    assert len(sink.rows) == 1 and len(fake.asks) == 4
    assert all(a.reply.cancelled() for k, a in enumerate(fake.asks) if k != 2)


def test_a_dead_judge_stops_the_run_at_once_keeping_the_rows_answered():
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, concurrency=3)
    rows, sink = Input(20), Sink()

    async def main() -> float:
        run = start(labeler, rows, sink)
        await until(lambda: len(fake.asks) == 3)
        fake.asks[0].answer()
        await until(lambda: len(fake.asks) == 4)
        failed = now()
        fake.asks[1].fail(401, "invalid api key")  # no retry can fix it: the run stops
        assert await run is None
        return now() - failed

    assert run(main()) < 1
    assert isinstance(labeler.fatal, JudgeError)
    assert sink.texts() == [fake.asks[0].text]
    assert len(fake.asks) == 4 and all(a.reply.cancelled() for a in fake.asks[2:])


FATAL = {  # an answer no retry can fix (the run stops at once)
    "401": lambda a: a.fail(401, "invalid api key"),
    "403": lambda a: a.fail(403, "no access to this model"),
    "404": lambda a: a.fail(404, "no such model"),
    # a server that never answered refuses the connection on the request's last attempt (max_attempts 1 here:
    # the retry loop's give-up path, without a backoff that would let other rows take the slots meanwhile)
    "dead server": lambda a: a.refuse(),
}


@pytest.mark.parametrize("fatal", FATAL)
def test_a_dead_judge_sends_nothing_after_its_fatal_answer(fatal):
    """The ask waiting for the connection slot that the fatal answer frees is not sent: the run is ending, so
    its answer would be paid for and thrown away (its row is cancelled)."""
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, concurrency=3, attempts=1)
    rows, sink = Input(20), Sink()

    async def main() -> int:
        run = start(labeler, rows, sink)
        await until(lambda: len(fake.asks) == 3)
        sent = len(fake.asks)
        FATAL[fatal](fake.asks[0])
        assert await run is None
        return sent

    sent = run(main())
    assert isinstance(labeler.fatal, JudgeError)
    assert len(fake.asks) == sent  # nothing reached the judge after the fatal answer
    assert sink.rows == [] and all(a.reply.cancelled() for a in fake.asks[1:])


def test_one_judge_of_two_dies_and_neither_judge_sends_after_it():
    """With two judges the run still stops at the first fatal answer (a row needs every judge's), and from that
    moment neither judge sends: not the dead judge's next ask, nor the one taking the slot of the other
    judge's answer that arrives in the same moment. The other judge's answers already in are cached; its
    requests still in flight are cancelled with their rows, as the dead judge's are (left for the next run)."""
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, judges=2, concurrency=2)
    rows, sink = Input(20), Sink()

    async def main() -> int:
        run = start(labeler, rows, sink)
        await until(lambda: len(fake.asks) == 4)  # rows 0 and 1, each to judges a and b
        a0 = next(x for x in fake.asks if x.model == "a")
        b0 = next(x for x in fake.asks if x.model == "b")
        sent = len(fake.asks)
        b0.fail(401, "invalid api key")
        a0.answer()  # in the same moment: judge a's slot frees too
        assert await run is None
        return sent

    sent = run(main())
    assert isinstance(labeler.fatal, JudgeError) and "judge 'b'" in str(labeler.fatal)
    assert len(fake.asks) == sent and sink.rows == []
    assert len(labeler.cache) == 1  # judge a's answer, paid for: the next run finds it


# -- the budget ---------------------------------------------------------------------------------------------
def test_max_requests_stops_at_the_limit_and_keeps_the_rows_in_flight():
    fake = FakeJudges(LABELS)
    labeler, _ = make_labeler(fake, concurrency=3, max_requests=5)
    rows, sink = Input(20), Sink()

    async def main() -> None:
        run = start(labeler, rows, sink)
        await until(lambda: len(fake.asks) == 3)
        for a in fake.asks[:3]:
            a.answer()
        await until(lambda: len(fake.asks) == 5)  # the last two the budget allows
        await asyncio.sleep(TIMEOUT - 1)
        assert len(fake.asks) == 5 and not run.done()  # the budget stopped: the two in flight are waited for
        for a in fake.asks[3:]:
            a.answer()
        assert await run is None

    run(main())
    assert isinstance(labeler.fatal, BudgetExhausted)
    assert len(fake.asks) == 5 and len(sink.rows) == 5 and all(r["label"] in LABELS for r in sink.rows)
    assert labeler.ledger.requests == labeler.ledger.judges["a"].responses == 5


@pytest.mark.parametrize("concurrency", [1, 8])
def test_max_cost_never_pays_past_the_limit(concurrency):
    """Every answer is paid and kept, and what they cost together stays within --max-cost at any concurrency."""
    fake = FakeJudges(LABELS, auto=True)
    limit = 0.002  # a few dozen requests at $1/$2 per million tokens
    labeler, _ = make_labeler(fake, concurrency=concurrency, max_cost=limit)
    rows, sink = Input(500), Sink()
    assert run(drive(labeler, rows, sink, rows.n)) is None
    assert isinstance(labeler.fatal, BudgetExhausted)
    assert 0 < len(sink.rows) == len(fake.asks) == labeler.ledger.judges["a"].responses < 500
    assert labeler.ledger.cost <= limit
    # the next request could have overshot it: the run stopped because it might, not after it did
    worst = max(len(json.dumps(a.body)) for a in fake.asks) * 1e-6 + 64 * 2e-6
    assert labeler.ledger.cost + worst > limit


def test_max_cost_sends_nothing_after_the_request_it_refuses():
    """The budget refuses a long row's request (its worst case does not fit, nothing is in flight to settle):
    the run stops there, and the shorter row waiting for that connection slot, whose worst case would fit, is
    not sent either (the run would keep its answer, but it stopped at the budget: nothing goes out after)."""
    texts = ["short one", "long " * 60, "short two"]
    rows = [(i, {"id": str(i), "text": t}) for i, t in enumerate(texts)]

    def worst(labeler: RowLabeler, text: str) -> float:
        client = labeler.clients["a"]
        req = labeler.plan.request(labeler.judges[0], text, None)
        body, data, _ = client.encode(req.messages, req.kind)
        return client._worst(body, data, client.tally.ledger)

    dry, _ = make_labeler(FakeJudges(LABELS, auto=True))
    run(drive(dry, rows[:1], Sink(), 1))
    w = [worst(dry, t) for t in texts]
    limit = (
        dry.ledger.cost + (w[1] + w[2]) / 2
    )  # after the first answer: the long row does not fit, the short one would
    assert w[0] <= limit and w[2] < w[1]
    fake = FakeJudges(LABELS, auto=True)
    labeler, _ = make_labeler(fake, concurrency=1, max_cost=limit)
    sink = Sink()
    assert run(drive(labeler, rows, sink, 3)) is None
    assert isinstance(labeler.fatal, BudgetExhausted)
    assert [a.text for a in fake.asks] == ["short one"] and sink.texts() == ["short one"]


# -- the cascade's probe ------------------------------------------------------------------------------------
def truth(text: str) -> str:
    """Rows' labels by their number (the calibration's content-free texts: "pos")."""
    last = text.split()[-1] if text.split() else ""
    return LABELS[int(last) % 2] if last.isdigit() else "pos"


def cascade_labeler(fake: FakeJudges) -> RowLabeler:
    labeler, _ = make_labeler(
        fake, judges=2, concurrency=4, logprobs=True, cascade={"threshold": 0.8, "probe_rows": 20}
    )
    return labeler


def row(text: str) -> bool:
    """Whether `text` is an input row's (not one of the calibration's content-free texts)."""
    return text[-1:].isdigit()


async def answer_cascade(fake: FakeJudges, run: asyncio.Task[Any], a_says: Any) -> None:
    """Judge a answers `a_says(text)` = (label, probability), judge b the truth; both answer the calibration's
    content-free texts evenly (no label bias to correct)."""
    while not run.done():
        for ask in fake.waiting:
            if not row(ask.text):
                ask.answer("pos", 0.5)
            elif ask.model == "a":
                ask.answer(*a_says(ask.text))
            else:
                ask.answer(truth(ask.text), 0.9)
        await asyncio.sleep(0.01)


def test_cascade_probe_asks_every_judge_then_escalates_only_the_unsure_rows():
    fake = FakeJudges(LABELS)
    labeler = cascade_labeler(fake)

    async def main() -> None:
        probe, sink = Input(20, "probe"), Sink()
        run = start(labeler, probe, sink)
        await answer_cascade(fake, run, lambda t: (truth(t), 0.95))
        await run
        probed = [t for t in fake.asked("b") if row(t)]
        assert len(probed) == 20 and probed == [t for t in fake.asked("a") if row(t)]  # every judge on the probe
        assert labeler.distrusted == frozenset()
        # Later rows: judge a alone where it is sure (0.95 >= 0.8); b too where it is not (0.6).
        before = len(fake.asks)
        rows = Input(30, "later")
        unsure = {f"later {i}" for i in range(30) if i % 3 == 0}
        run = start(labeler, rows, Sink())
        await answer_cascade(fake, run, lambda t: (truth(t), 0.6 if t in unsure else 0.95))
        await run
        later = fake.asks[before:]
        assert len([a for a in later if a.model == "a"]) == 30
        assert {a.text for a in later if a.model == "b"} == unsure

    run(main())
    assert labeler.ledger.judges["b"].calls_saved == 20


def test_cascade_probe_leaves_out_a_judge_that_says_one_label_to_everything():
    """A sure, stuck first judge found on the probe no longer ends rows: every later row asks the next judge."""
    fake = FakeJudges(LABELS)
    labeler = cascade_labeler(fake)

    async def main() -> None:
        run = start(labeler, Input(20, "probe"), Sink())
        await answer_cascade(fake, run, lambda t: ("pos", 0.99))
        await run
        assert labeler.distrusted == frozenset({"a"})
        before = len(fake.asks)
        run = start(labeler, Input(30, "later"), Sink())
        await answer_cascade(fake, run, lambda t: ("pos", 0.99))
        await run
        assert len([a for a in fake.asks[before:] if a.model == "b"]) == 30

    run(main())
