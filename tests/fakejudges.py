"""Judges that answer when the test says: an httpx transport (RunOptions.transport) under the real JudgeClient,
so a run's limits, budget, retries and cache are the production ones. Each request waits as an `Ask` until the
test answers it (`ask.answer()`), or is answered at once in `auto` mode. The replies are the fake server's
(tests/fakeserver.py), built without a server."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from typing import Any

import httpx
from fakeserver import TEXT, FakeLLM


@dataclass
class Ask:
    """One request that reached the judges' endpoint and waits for its answer."""

    model: str
    text: str
    body: dict[str, Any] = field(repr=False)
    labels: list[str] = field(repr=False)
    reply: asyncio.Future[httpx.Response] = field(repr=False)

    def answer(self, label: str | None = None, p: float | None = None) -> None:
        """Answer with `label` (default: the fake server's answer for the text), with probability `p` on it
        in the logprobs (default: the fake server's 0.9)."""
        fake = FakeLLM(answers={self.text: label} if label else None, labels=self.labels)
        status, payload, headers = fake.handle(self.body, {})
        assert status == 200, payload
        lp = payload["choices"][0].get("logprobs")
        if lp:  # the answered label's probability, the rest spread over the other labels
            step = lp["content"][0]
            p = 0.9 if p is None else p
            rest = math.log((1 - p) / (len(self.labels) - 1)) if p < 1 else -100.0
            step["logprob"] = math.log(p)
            step["top_logprobs"] = [{"token": step["token"], "logprob": math.log(p)}] + [
                {"token": lab, "logprob": rest} for lab in self.labels if lab != step["token"]
            ]
        self.reply.set_result(httpx.Response(200, json=payload, headers=headers))

    def fail(self, status: int, message: str = "no") -> None:
        self.reply.set_result(httpx.Response(status, json={"error": {"message": message}}))

    def refuse(self) -> None:
        """No answer: the connection is refused (a dead server)."""
        self.reply.set_exception(httpx.ConnectError("connection refused"))

    @property
    def done(self) -> bool:
        return self.reply.done()


class FakeJudges(httpx.AsyncBaseTransport):
    """The endpoint of every judge of a run (the request's `model` says which judge asked)."""

    def __init__(self, labels: list[str], auto: bool = False) -> None:
        self.labels = labels  # the task's labels, as the replies name them
        self.auto = auto  # answer every request at once (the fake server's answer)
        self.asks: list[Ask] = []  # every request that arrived, in order
        self.most_waiting = 0  # the most requests ever waiting for their answer at once

    @property
    def waiting(self) -> list[Ask]:
        return [a for a in self.asks if not a.done]

    def asked(self, model: str) -> list[str]:
        """The texts that judge `model` was asked, in order."""
        return [a.text for a in self.asks if a.model == model]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        last = body["messages"][-1]["content"]
        m = TEXT.search(last)
        loop = asyncio.get_running_loop()
        ask = Ask(body["model"], m.group(1) if m else last, body, self.labels, loop.create_future())
        self.asks.append(ask)
        self.most_waiting = max(self.most_waiting, len(self.waiting))
        if self.auto:
            ask.answer()
        return await ask.reply
