"""The service's items run through the local executor as a file's rows do, each request with a run state of its
own: a judge that fails one request stops that request alone (its rows in flight stopped cleanly), and a large
request of cached items gives the server's other clients their turn while its cache pass runs. In-process (the
ASGI app on the test's loop) with judges that answer when the test says (tests/fakejudges.py): every step waits
for an event, none for a clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
from conftest import write_config  # noqa: E402
from fakejudges import FakeJudges  # noqa: E402
from fakeserver import pick  # noqa: E402

from llmlabel.config import load_config  # noqa: E402
from llmlabel.pipeline import drive  # noqa: E402
from llmlabel.service.app import create_app  # noqa: E402

TOKEN = "test-token-0123456789"
H = {"Authorization": f"Bearer {TOKEN}"}
LABELS = ["positive", "negative"]
GUARD = 60.0  # a deadlock guard, never the assertion
pytestmark = pytest.mark.slow  # the app's lifespan and the judges' first request: seconds on a loaded machine


def make_app(tmp_path, fake: FakeJudges, **kw: Any):
    judges = [{"name": "a", "model": "fake-a", "base_url": "http://judge.invalid/v1", "timeout": 5, "max_attempts": 1}]
    task = {"name": "sentiment", "instructions": "Sentiment?", "labels": LABELS}
    cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=judges, task=task))
    return create_app(cfg, token=TOKEN, state_dir=tmp_path / "state", transport=fake, **kw)


def served(app, body: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    """Run `body` with a client of `app` (its lifespan entered) on a fresh event loop."""

    async def go() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
                await asyncio.wait_for(body(c), GUARD)

    asyncio.run(go())


async def until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.005)  # polled: each step waits for an event of the server, never for a time


def items(*texts: str) -> dict[str, Any]:
    return {"items": [{"text": t} for t in texts]}


def test_a_judge_that_fails_one_request_leaves_a_concurrent_one_alone(tmp_path):
    fake = FakeJudges(LABELS)
    app = make_app(tmp_path, fake)

    async def body(c: httpx.AsyncClient) -> None:
        a = asyncio.ensure_future(c.post("/v1/label", json=items("poison", "a fine day"), headers=H))
        b = asyncio.ensure_future(c.post("/v1/label", json=items("sunny", "rainy"), headers=H))
        await until(lambda: len(fake.asks) == 4)  # both requests in flight at once
        asked = {ask.text: ask for ask in fake.asks}
        asked["poison"].fail(401, "invalid api key")  # a judge error that stops request a's run
        ra = await a
        assert ra.status_code == 502 and "401" in ra.json()["detail"], ra.text
        # Request a stopped cleanly: its other row's request was cancelled, not left running unanswered.
        await until(lambda: asked["a fine day"].reply.cancelled())
        assert not b.done()
        for t in ("sunny", "rainy"):
            asked[t].answer()
        rb = await b
        assert rb.status_code == 200, rb.text  # request b never saw request a's failure
        assert [it["label"] for it in rb.json()["items"]] == [pick("sunny", LABELS), pick("rainy", LABELS)]
        # The server still answers (request a's failure was that run's, not the row labeler's).
        again = asyncio.ensure_future(c.post("/v1/label", json=items("cloudy"), headers=H))
        await until(lambda: len(fake.asks) == 5)
        fake.asks[4].answer()
        assert (await again).status_code == 200

    served(app, body)


def test_a_large_cached_request_lets_other_clients_in_while_it_is_answered(tmp_path, monkeypatch):
    fake = FakeJudges(LABELS, auto=True)
    n = 1000
    app = make_app(tmp_path, fake, max_items=n)
    texts = [f"text {i % 10}" for i in range(n)]  # ten distinct texts: cached by the first request
    order: list[str] = []
    turns = 0

    async def body(c: httpx.AsyncClient) -> None:
        nonlocal turns
        warm = await c.post("/v1/label", json=items(*texts[:10]), headers=H)
        assert warm.status_code == 200 and len(fake.asks) == 10

        in_pass = asyncio.Event()
        served_other = asyncio.Event()
        real = drive.yield_to_loop

        async def held() -> None:  # the large request's turn given away: held until /livez was answered
            nonlocal turns
            turns += 1
            in_pass.set()
            await asyncio.wait_for(served_other.wait(), GUARD)
            await real()

        monkeypatch.setattr(drive, "yield_to_loop", held)

        async def other() -> None:
            await in_pass.wait()  # the large request is inside its cache pass
            r = await c.get("/livez")
            assert r.status_code == 200
            order.append("livez")
            served_other.set()

        async def large() -> None:
            r = await c.post("/v1/label", json=items(*texts), headers=H)
            assert r.status_code == 200, r.text
            assert [it["label"] for it in r.json()["items"]] == [pick(t, LABELS) for t in texts]
            order.append("label")

        waiter = asyncio.ensure_future(other())
        await large()
        in_pass.set()  # (if the large request never gave its turn away: /livez goes now, after it)
        await waiter

    served(app, body)
    assert order == ["livez", "label"]
    assert len(fake.asks) == 10  # every item of the large request came from the cache
    # The cache pass gave the loop away after each chunk of at most SERVED_CHUNK rows.
    assert turns >= n // drive.SERVED_CHUNK


def test_long_cached_texts_are_looked_up_a_few_at_a_time(tmp_path, monkeypatch):
    from llmlabel.pipeline.row_labeler import RowLabeler

    fake = FakeJudges(LABELS, auto=True)
    app = make_app(tmp_path, fake)
    long = [f"{i} " + "word " * 8_000 for i in range(6)]  # 40,000 characters each
    chunks: list[int] = []

    async def body(c: httpx.AsyncClient) -> None:
        assert (await c.post("/v1/label", json=items(*long, "short"), headers=H)).status_code == 200
        real = RowLabeler.from_cache

        def counted(self, rows, sink, run=None):  # noqa: ANN001, ANN202
            chunks.append(len(rows))
            return real(self, rows, sink, run)

        monkeypatch.setattr(RowLabeler, "from_cache", counted)
        r = await c.post("/v1/label", json=items(*long, "short"), headers=H)
        assert r.status_code == 200 and len(fake.asks) == 7, r.text  # all from the cache

    served(app, body)
    # A loop turn of the cache pass ends once its texts reach SERVED_CHARS characters (here: two texts).
    assert chunks == [2, 2, 2, 1], chunks
