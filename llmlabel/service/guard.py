"""The ASGI middleware in front of every route: bearer-token auth, body size limits, request metrics."""

import logging
import time
from typing import TYPE_CHECKING

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmlabel.service.auth import TOKEN_ENV, authorized
from llmlabel.service.errors import one_line

if TYPE_CHECKING:
    from llmlabel.service.state import ServerState

log = logging.getLogger("llmlabel.service.app")

OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


class Guard:
    """Pure ASGI middleware in front of every route: bearer-token auth, body size limits, request metrics.

    It runs before any body is read, so an unauthenticated or oversized upload costs nothing."""

    def __init__(self, app: ASGIApp, state: "ServerState") -> None:
        self.app, self.state = app, state

    def _authorized(self, scope: Scope) -> bool:
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
        return authorized(header.decode("latin-1"), self.state.token)

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st, path, t0 = self.state, scope["path"], time.perf_counter()
        status = [0]

        async def send_status(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        async def reply(code: int, detail: str, headers: dict[str, str] | None = None) -> None:
            await JSONResponse({"detail": detail}, code, headers=headers)(scope, receive, send_status)

        try:
            if path not in OPEN_PATHS and not self._authorized(scope):
                await reply(
                    401,
                    f"missing or wrong bearer token: send 'Authorization: Bearer <token>' (the server's ${TOKEN_ENV})",
                    {"WWW-Authenticate": 'Bearer realm="llmlabel"'},
                )
                return
            upload = path == "/v1/jobs" and scope["method"] == "POST"
            limit = st.max_upload_bytes if upload else st.max_body_bytes
            length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
            if length is not None and length.isdigit() and int(length) > limit:
                await reply(
                    413,
                    f"request body of {int(length)} bytes is over the limit of {limit} bytes"
                    + ("; split the file" if upload else "; send fewer items per request or use POST /v1/jobs"),
                )
                return
            seen = [0]

            async def limited() -> Message:
                msg = await receive()
                if msg["type"] == "http.request":
                    seen[0] += len(msg.get("body", b""))
                    if seen[0] > limit:  # chunked bodies carry no Content-Length: count as they arrive
                        raise HTTPException(413, f"request body is over the limit of {limit} bytes")
                return msg

            try:
                await self.app(scope, limited, send_status)
            except Exception as e:
                # Answered here, not by Starlette's error middleware, which would log a full traceback
                # (and with it whatever the exception carried). One redacted line instead.
                log.error("%s %s failed: %s", scope["method"], path, one_line(f"{type(e).__name__}: {e}"))
                if not status[0]:
                    await reply(500, "internal error; see the server log")
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unrouted"
            st.http_count(scope["method"], template, status[0] or 500, time.perf_counter() - t0)
