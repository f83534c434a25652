"""The OpenAI Files and Batches endpoints (also served by Azure OpenAI and servers that mimic them): upload a
JSONL file of requests, create a batch, read its status, download its output and error files, list, cancel.

Synchronous httpx calls: a batch job makes a handful of them, minutes apart."""

from __future__ import annotations

import json
from typing import Any

from llmlabel.errors import JudgeError
from llmlabel.redaction import redact

# Terminal statuses: nothing more will change. "expired" still has an output file with the finished lines.
TERMINAL = ("completed", "expired", "cancelled", "failed")
BATCH_PRICE = 0.5  # the batch price as a share of the online one where the config sets none (OpenAI's discount)


class BatchAPI:
    def __init__(self, base_url: str, key: str, timeout: float = 120.0, transport: Any = None) -> None:
        import httpx

        self.base = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        try:
            r = self._client.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise JudgeError(f"batch API {self.base}{path}: {type(e).__name__}") from None
        if r.status_code >= 400:
            raise JudgeError(f"batch API {method} {self.base}{path}: HTTP {r.status_code}: {redact(r.text[:300])}")
        return r

    def upload(self, name: str, data: bytes) -> str:
        """Upload a batch input file; returns its file id."""
        r = self._call("POST", "/files", data={"purpose": "batch"}, files={"file": (name, data, "application/jsonl")})
        return str(r.json()["id"])

    def create(self, file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        body = {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": metadata,
        }
        return dict(self._call("POST", "/batches", json=body).json())

    def get(self, batch_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/batches/{batch_id}").json())

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/batches/{batch_id}/cancel").json())

    def list_batches(self, limit: int = 100) -> list[dict[str, Any]]:
        """The account's batches, newest first (every page, following `after`)."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": limit}
        while True:
            page = self._call("GET", "/batches", params=params).json()
            data = page.get("data") or []
            out.extend(data)
            if not page.get("has_more") or not data:
                return out
            params["after"] = data[-1]["id"]

    def content(self, file_id: str) -> list[dict[str, Any]]:
        """A file's JSONL lines (an output or error file)."""
        text = self._call("GET", f"/files/{file_id}/content").text
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def batch_prices(judge: Any) -> tuple[float, float]:
    """$ per million batch tokens: the config's batch_input/batch_output, else half the online price."""
    p = judge.price_per_million
    pin = getattr(p, "batch_input", None)
    pout = getattr(p, "batch_output", None)
    return (p.input * BATCH_PRICE if pin is None else pin, p.output * BATCH_PRICE if pout is None else pout)
