"""A small OpenAI-compatible chat-completions server for tests, on 127.0.0.1 in a background thread.

It labels the text found between <text> and </text> with a deterministic label (from `answers`, else a
hash of the text), follows the request's response_format, and can inject faults."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXT = re.compile(r"<text>\n(.*)\n</text>", re.S)


def pick(text: str, labels: list[str]) -> str:
    h = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    return labels[h % len(labels)]


class _Server(ThreadingHTTPServer):
    # A client opening more connections at once than the default backlog (5) holds, as a benchmark's judges at
    # concurrency 32 do, would see some refused and retry them after a back-off: seconds to minutes a run.
    request_queue_size = 256


class LocalServer:
    """An HTTP server on a free 127.0.0.1 port, answering from a daemon thread (FakeLLM, FakeBatch)."""

    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = _Server(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        # A short poll: stop() (`shutdown`) waits for the serving loop to look, 0.5 s by default, once per test.
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


class FakeLLM(LocalServer):
    def __init__(
        self,
        answers: dict[str, str] | None = None,
        labels: list[str] | None = None,
        faults: float = 0.0,
        fault_kinds: tuple[str, ...] = ("429", "500", "drop", "garbage", "length"),
        latency: float = 0.0,
        slow_seconds: float = 3.0,
        seed: int = 0,
        reject_schema: bool = False,
        status: int | None = None,
        fail_after: int | None = None,
        echo_key: bool = False,
        throttle_at: int | None = None,
        paths: dict[str, list[str]] | None = None,
    ) -> None:
        self.answers = answers or {}
        self.paths = paths or {}  # a taxonomy row's path: answered at whichever level the asked labels name
        self.labels = labels or ["positive", "negative"]
        self.faults, self.fault_kinds, self.latency, self.slow_seconds = faults, fault_kinds, latency, slow_seconds
        self.reject_schema, self.status, self.fail_after = reject_schema, status, fail_after
        self.throttle_at = throttle_at  # this request (1-based) is answered 429 with Retry-After: 2
        self.echo_key = echo_key  # answer with the API key it was sent (a leaky server): never to be written
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.completions = 0  # 200 answers
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.fault_counts: dict[str, int] = {}
        self.bodies: list[dict[str, Any]] = []
        self.times: list[float] = []  # time.monotonic() of each request's arrival
        self.headers: list[dict[str, str]] = []
        # Called with each request's number (1-based) as it arrives, before it is answered (outside the lock):
        # tests act on an event of the run (cancel after the 3rd request, a cache server stopped after the
        # 20th) instead of racing a clock.
        self.on_request: Callable[[int], None] | None = None

    def hold(self, first: int) -> "Hold":
        """Requests from the `first`-th (1-based) on wait unanswered until the test calls `release()` on the
        returned Hold: a run that cannot finish, or get its answers, before the test has acted."""
        held = Hold(first)
        self.on_request = held
        return held

    def start(self) -> "FakeLLM":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload, headers = fake.handle(json.loads(raw), dict(self.headers))
                if status is None:
                    self.close_connection = True
                    self.connection.close()
                    return
                self._send(status, payload, headers)

        self.serve(Handler)
        return self

    def handle(self, req: dict[str, Any], headers: dict[str, str]) -> tuple[int | None, Any, dict[str, str]]:
        with self.lock:
            self.requests += 1
            self.times.append(time.monotonic())
            self.bodies.append(req)
            self.headers.append(headers)
            fault = self.rng.choice(self.fault_kinds) if self.faults and self.rng.random() < self.faults else None
            if self.requests == self.throttle_at:
                return 429, {"error": {"message": "rate limited"}}, {"Retry-After": "2"}
            if fault:
                self.fault_counts[fault] = self.fault_counts.get(fault, 0) + 1
            count = self.requests
        if self.on_request is not None:
            self.on_request(count)
        if self.latency:
            time.sleep(self.latency)
        key = (headers.get("Authorization") or headers.get("authorization") or "").removeprefix("Bearer ")
        if self.status:
            # Real servers often echo what they were sent: the client must not print it back.
            return self.status, {"error": {"message": f"simulated {self.status} for key {key}"}}, {}
        if self.fail_after is not None and self.requests > self.fail_after:
            return 503, {"error": {"message": "service unavailable"}}, {}
        rf = req.get("response_format") or {}
        if self.reject_schema and rf.get("type") == "json_schema":
            return 400, {"error": {"message": "response_format json_schema is not supported"}}, {}
        if fault == "429":
            return 429, {"error": {"message": "rate limited"}}, {"Retry-After": "0.1"}
        if fault == "500":
            return 500, {"error": {"message": "boom"}}, {}
        if fault == "drop":
            return None, None, {}
        if fault == "slow":
            time.sleep(self.slow_seconds)
        last = req["messages"][-1]["content"]
        m = TEXT.search(last) or TEXT.search("\n".join(x["content"] for x in req["messages"]))
        text = m.group(1) if m else last
        schema = (rf.get("json_schema") or {}).get("schema") or {}
        props = schema.get("properties", {})
        # Without a schema, the labels a logprob prompt lists as codes ("- A = name"), else the server's own.
        listed = [x.strip() for x in re.findall(r"^- \w{1,2} = ([^:\n]+)", last, re.M)]
        labels = (props.get("label") or {}).get("enum") or listed or self.labels
        label = key if self.echo_key else (self.answers.get(text) or pick(text, labels))
        if text in self.paths and not self.echo_key:
            label = next((x for x in self.paths[text] if x in labels), pick(text, labels))
        if label not in labels and "none of these" in labels:  # a shortlist without the right label
            label = "none of these"
        if "labels" in props:  # a multi-label schema: `answers` may hold a set joined by "|" ("" = none)
            got = self.answers.get(text)
            chosen = [x for x in got.split("|") if x] if got is not None else [pick(text, self.labels)]
            content = json.dumps({"labels": chosen})
        elif "candidates" in props:
            other = pick(text + "#", labels)
            content = json.dumps({"candidates": sorted({label, other}, key=labels.index), "label": label})
        elif rf.get("type") in ("json_schema", "json_object"):
            content = json.dumps({"label": label})
        else:
            content = label
        finish = "stop"
        if fault == "garbage":
            content = content[: len(content) // 2] + "}{oops"
        elif fault == "length":
            content, finish = content[: len(content) // 3], "length"
        pt = sum(len(x["content"]) for x in req["messages"]) // 4 + 1
        ct = len(content) // 4 + 1
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish,
        }
        if req.get("logprobs"):
            top = [{"token": label, "logprob": math.log(0.9)}] + [
                {"token": l, "logprob": math.log(0.1 / max(1, len(labels) - 1))} for l in labels if l != label
            ]
            choice["logprobs"] = {"content": [{"token": label, "logprob": math.log(0.9), "top_logprobs": top}]}
        if fault != "slow":  # the client gave up on slow answers: they are never received, never billed here
            with self.lock:
                self.completions += 1
                self.prompt_tokens += pt
                self.completion_tokens += ct
        return (
            200,
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": req.get("model"),
                "choices": [choice],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
            },
            {},
        )


class Hold:
    """See FakeLLM.hold. `reached` is set once the first held request has arrived."""

    GUARD = 120.0  # a held request is answered after this many seconds anyway: a deadlock guard for the test

    def __init__(self, first: int) -> None:
        self.first = first
        self.reached = threading.Event()
        self._released = threading.Event()

    def __call__(self, n: int) -> None:
        if n >= self.first:
            self.reached.set()
            self._released.wait(self.GUARD)

    def release(self) -> None:
        self._released.set()

    @property
    def released(self) -> bool:
        return self._released.is_set()
