#!/usr/bin/env python3
"""A lean OpenAI-compatible chat-completions server for throughput runs: every request is answered after a
fixed latency with a valid label (the first of the request's JSON-schema enum, else "A"), nothing else.

fakellm simulates annotators (it reads the texts, picks noisy labels, injects faults) and spends ~0.4 ms of
CPU a request; on a 2-core machine that CPU is taken from the client being measured. This server is a bare
asyncio protocol on uvloop (a few tens of microseconds a request), so a throughput sweep against it measures
the client, not the testbed. Endpoints: POST .../chat/completions, GET /health, GET /stats ({"requests": N}).

    python benchmarks/lean_server.py --port 8000 --latency 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import json

STATS = {"requests": 0}


def _answer(body: bytes) -> bytes:
    # The label enum is found in the raw body (llmlabel sends canonical JSON, no spaces): no parsing.
    label = b"A"
    at = body.find(b'"enum":["')
    if at >= 0:
        label = body[at + 9 : body.find(b'"', at + 9)]
    content = json.dumps(json.dumps({"label": label.decode()}))
    tokens = len(body) // 4
    return (
        b'{"id":"lean","object":"chat.completion","model":"lean","choices":[{"index":0,"finish_reason":"stop",'
        b'"message":{"role":"assistant","content":'
        + content.encode()
        + b'}}],"usage":{"prompt_tokens":'
        + str(tokens).encode()
        + b',"completion_tokens":5,"total_tokens":'
        + str(tokens + 5).encode()
        + b"}}"
    )


def _response(payload: bytes, status: str = "200 OK") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )


class Handler(asyncio.Protocol):
    latency = 0.1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            at = head.lower().find(b"content-length:")
            size = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + size:
                return
            body, self.buf = self.buf[end + 4 : end + 4 + size], self.buf[end + 4 + size :]
            path = head.split(b" ", 2)[1]
            if path.endswith(b"/chat/completions"):
                STATS["requests"] += 1
                asyncio.get_running_loop().call_later(self.latency, self._send, _response(_answer(body)))
            elif path.startswith(b"/stats"):
                self._send(_response(json.dumps(STATS).encode()))
            elif path.startswith(b"/health"):
                self._send(_response(b'{"ok":true}'))
            else:
                self._send(_response(b'{"error":"not found"}', "404 Not Found"))

    def _send(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Handler, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--latency", type=float, default=0.1)
    a = ap.parse_args()
    Handler.latency = a.latency
    try:
        import uvloop

        uvloop.run(serve(a.host, a.port))
    except ImportError:
        asyncio.run(serve(a.host, a.port))


if __name__ == "__main__":
    main()
