"""Sending one chat-completions request. Two transports, one error vocabulary:

- `AioHttpTransport` (default): direct aiohttp requests, ~4x less CPU per call than the SDK path.
- `SDKTransport`: the openai SDK's `AsyncOpenAI` over httpx, which tests intercept with respx.

The openai SDK and httpx are imported only when the SDK path is used: they take seconds to import."""

from __future__ import annotations

import functools
import json
import math
import ssl
from typing import Any

# Several small httpx pools: one large pool serialises badly at high concurrency.
CONNECTIONS_PER_CLIENT = 8


class StatusError(Exception):
    """The server answered with an HTTP error status."""

    def __init__(self, status: int, headers: dict[str, str], body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.headers, self.body = status, {k.lower(): v for k, v in headers.items()}, body

    @property
    def server_message(self) -> str:
        body = self.body
        if isinstance(body, dict):
            err = body.get("error", body)
            if isinstance(err, dict) and err.get("message"):
                return str(err["message"])
            if isinstance(err, str):
                return err
            if body.get("message"):
                return str(body["message"])
            if body.get("detail"):
                return str(body["detail"])
        return body if isinstance(body, str) else f"HTTP {self.status}"


class TransportError(Exception):
    """No answer: the connection failed or dropped, or the request timed out."""

    def __init__(self, timeout: bool, what: str = "") -> None:
        super().__init__(what or ("timeout" if timeout else "connection error"))
        self.timeout = timeout


@functools.lru_cache(maxsize=1)
def ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~0.1 s: once per process, not once per connection pool.
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _body(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")[:500]


class AioHttpTransport:
    def __init__(self, base_url: str, key: str, timeout: float, limit: int) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.url = f"{base_url}/chat/completions"
        self._headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "llmlabel",
        }
        ssl_ctx = ssl_context() if base_url.startswith("https") else False
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, ssl=ssl_ctx), timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def post(self, body: dict[str, Any], data: bytes) -> bytes:
        import asyncio

        try:
            async with self._session.post(self.url, data=data, headers=self._headers) as r:
                content = await r.read()
                status, headers = r.status, dict(r.headers)
        except asyncio.TimeoutError:
            raise TransportError(True) from None
        except (self._aiohttp.ClientError, OSError) as e:
            raise TransportError(False, type(e).__name__) from None
        if status >= 400:
            raise StatusError(status, headers, _body(content))
        return content

    async def close(self) -> None:
        await self._session.close()


class SDKTransport:
    def __init__(self, base_url: str, key: str, timeout: float, limit: int, http_transport: Any = None) -> None:
        import itertools

        import httpx
        import openai

        self._openai, self._httpx = openai, httpx
        n = 1 if http_transport else max(1, math.ceil(limit / CONNECTIONS_PER_CLIENT))
        per = max(1, math.ceil(limit / n))
        self._clients = [
            openai.AsyncOpenAI(
                api_key=key,
                base_url=base_url,
                max_retries=0,
                timeout=timeout,
                http_client=httpx.AsyncClient(
                    transport=http_transport,
                    timeout=timeout,
                    verify=ssl_context(),
                    limits=httpx.Limits(max_connections=per, max_keepalive_connections=per),
                ),
            )
            for _ in range(n)
        ]
        self._next = itertools.cycle(self._clients)

    async def post(self, body: dict[str, Any], data: bytes) -> bytes:
        openai = self._openai
        try:
            # The SDK's generic `post` keeps its auth, timeouts and error mapping but skips the per-call
            # transform of typed params and the response models, which cost milliseconds per request.
            resp = await next(self._next).post("/chat/completions", body=body, cast_to=self._httpx.Response)
        except openai.APIStatusError as e:
            raise StatusError(e.status_code, dict(e.response.headers), _body(e.response.content)) from None
        except openai.APITimeoutError:
            raise TransportError(True) from None
        except openai.APIConnectionError as e:
            raise TransportError(False, type(e.__cause__ or e).__name__) from None
        return resp.content

    async def close(self) -> None:
        for c in self._clients:
            await c.close()
