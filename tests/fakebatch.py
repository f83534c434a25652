"""An in-test fake of the OpenAI Files and Batches endpoints (plus chat completions, counted as online calls),
on 127.0.0.1 in a background thread. Batch lines are answered by a FakeLLM's `handle`.

Each GET of a batch moves it one status on: validating -> in_progress -> finalizing -> completed. Faults:
`expire_fraction` (the batch ends "expired" with only the first lines answered), `fail_every` (every n-th
line goes to the error file), `max_requests` (a larger batch fails as a whole, as over a queued-token limit), `cancel` (POST .../cancel: cancelling, then cancelled with no output, or with the first `cancel_fraction`
of its lines answered)."""

from __future__ import annotations

import json
import threading
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlparse

from fakeserver import FakeLLM, LocalServer

_STEPS = ["validating", "in_progress", "finalizing", "completed"]


class FakeBatch(LocalServer):
    def __init__(
        self, llm: FakeLLM | None = None, expire_fraction: float = 0.0, fail_every: int = 0, max_requests: int = 0
    ) -> None:
        self.llm = llm or FakeLLM()
        self.max_requests = max_requests
        self.hold_create: threading.Event | None = None  # set: creating a batch answers only once it is set
        self.expire_fraction, self.fail_every = expire_fraction, fail_every
        self.cancel_fraction = 0.0  # a cancelled batch answers this share of its lines (its output file)
        self.odd_counts: Any = None  # set: every batch GET reports these request_counts instead
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.online = 0  # chat completion requests (not batch lines)
        self.lines = 0  # batch lines answered
        self.line_keys: list[str] = []  # every custom_id submitted, in order
        self.answered: list[str] = []  # every custom_id answered (paid for)

    def start(self) -> FakeBatch:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, status: int, payload: Any, ctype: str = "application/json") -> None:
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(*fake.get(urlparse(self.path).path))

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._send(*fake.post(urlparse(self.path).path, raw, dict(self.headers)))

        self.serve(Handler)
        return self

    # -- endpoints -------------------------------------------------------------------------------
    def post(self, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        if path.endswith("/chat/completions"):
            with self.lock:
                self.online += 1
            status, payload, _ = self.llm.handle(json.loads(raw), headers)
            return status or 500, payload
        if path.endswith("/files"):
            return self._upload(raw, headers)
        if path.endswith("/batches"):
            body = json.loads(raw)
            with self.lock:
                bid = f"batch_{len(self.batches)}"
                self.batches[bid] = {
                    "id": bid,
                    "object": "batch",
                    "status": "validating",
                    "input_file_id": body["input_file_id"],
                    "metadata": body.get("metadata") or {},
                    "output_file_id": None,
                    "error_file_id": None,
                    "request_counts": {"total": 0, "completed": 0, "failed": 0},
                }
                created = dict(self.batches[bid])
            if self.hold_create is not None:  # the batch exists; its creator has not heard yet
                self.hold_create.wait(30)
            return 200, created
        if path.endswith("/cancel"):
            bid = path.split("/")[-2]
            with self.lock:
                b = self.batches[bid]
                if b["status"] in ("completed", "expired", "failed", "cancelled"):  # as OpenAI answers
                    return 400, {"error": {"message": f"Cannot cancel a batch with status '{b['status']}'."}}
                b["status"] = "cancelling"
                return 200, dict(b)
        return 404, {"error": {"message": f"no route {path}"}}

    def get(self, path: str) -> tuple[int, Any]:
        parts = path.strip("/").split("/")  # v1, batches|files, id, content
        if parts[1] == "batches" and len(parts) == 2:
            with self.lock:
                data = [dict(b) for b in reversed(list(self.batches.values()))]
            return 200, {"object": "list", "data": data, "has_more": False}
        if parts[1] == "batches":
            b = self._advance(parts[2])
            if self.odd_counts is not None:  # a server whose counts are not numbers (or not counts)
                b = {**b, "request_counts": self.odd_counts, "errors": ["not", "a", "dict"]}
            return 200, b
        if parts[1] == "files" and len(parts) == 4:
            return 200, self.files[parts[2]]
        return 404, {"error": {"message": f"no route {path}"}}

    def _upload(self, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        ctype = headers.get("Content-Type") or headers.get("content-type") or ""
        msg = BytesParser(policy=email_policy).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
        fields = {
            p.get_param("name", header="content-disposition"): p.get_payload(decode=True) for p in msg.iter_parts()
        }
        assert fields.get("purpose") == b"batch", fields.get("purpose")
        with self.lock:
            fid = f"file_{len(self.files)}"
            self.files[fid] = fields["file"]
        return 200, {"id": fid, "object": "file", "purpose": "batch"}

    def _advance(self, bid: str) -> dict[str, Any]:
        with self.lock:
            b = self.batches[bid]
            if b["status"] == "cancelling":
                b["status"] = "cancelled"
                if self.cancel_fraction:  # the lines finished before the cancel come back, as on OpenAI
                    self._run(b, self.cancel_fraction)
                    b["status"] = "cancelled"
            elif b["status"] == "validating" and self.max_requests and self._count(b) > self.max_requests:
                b["status"] = "failed"
                b["errors"] = {"data": [{"code": "token_limit_exceeded", "message": "Enqueued token limit reached"}]}
            elif b["status"] in _STEPS[:-1]:
                b["status"] = _STEPS[_STEPS.index(b["status"]) + 1]
                if b["status"] == "completed":
                    self._run(b)
            return dict(b)

    def _count(self, b: dict[str, Any]) -> int:
        return sum(1 for x in self.files[b["input_file_id"]].splitlines() if x.strip())

    def _run(self, b: dict[str, Any], cancelled: float = 0.0) -> None:
        """Answer a batch's lines (called with the lock held); `cancelled`: the share answered before a cancel."""
        lines = [json.loads(x) for x in self.files[b["input_file_id"]].splitlines() if x.strip()]
        ids = [x["custom_id"] for x in lines]
        assert len(ids) == len(set(ids)), "duplicate custom_id in a batch"
        self.line_keys += ids
        n_done = len(lines)
        if cancelled:
            n_done = int(len(lines) * cancelled)
        elif self.expire_fraction:
            n_done = int(len(lines) * (1 - self.expire_fraction))
            b["status"] = "expired"
        out, errs = [], []
        for i, x in enumerate(lines[:n_done]):
            if self.fail_every and i % self.fail_every == self.fail_every - 1:
                errs.append({"custom_id": x["custom_id"], "response": None, "error": {"code": "server_error"}})
                continue
            status, payload, _ = self.llm.handle(x["body"], {})
            self.lines += 1
            self.answered.append(x["custom_id"])
            out.append({"custom_id": x["custom_id"], "response": {"status_code": status, "body": payload}})
        out.reverse()  # output order is not guaranteed
        for name, rows in (("output_file_id", out), ("error_file_id", errs)):
            if rows:
                fid = f"file_{len(self.files)}"
                self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                b[name] = fid
        b["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errs)}
