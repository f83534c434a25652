"""The ASGI middleware in front of every route: Host and Origin checks, bearer-token auth, body size limits,
request metrics."""

import logging
import math
import time
from typing import TYPE_CHECKING

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmlabel.redaction import one_line
from llmlabel.service.auth import TOKEN_ENV, authorized, host_allowed, origin_allowed, split_host
from llmlabel.service.error_handlers import DETAIL

if TYPE_CHECKING:
    from llmlabel.service.state import ServerState

log = logging.getLogger("llmlabel.service.app")

OPEN_PATHS = frozenset({"/livez", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
# Label Studio's own webhook sends no credentials: without any, /webhook is served in its restricted mode (see
# routes_labelstudio.ls_webhook); with wrong ones, it is refused like any route.
WEBHOOK_PATH = "/webhook"
# Label Studio's routes: a refusal there says how to set its ML backend's Basic auth.
LS_PATHS = frozenset({"/health", "/setup", "/predict", "/train", "/versions", WEBHOOK_PATH})
# /metrics series: anything else a client makes up (a method, a path) is one series, `other`, not one each.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Guard:
    """Pure ASGI middleware in front of every route: Host and Origin checks, bearer-token auth, body size
    limits, request metrics.

    It runs before any body is read, so a refused, unauthenticated or oversized upload costs nothing."""

    def __init__(self, app: ASGIApp, state: "ServerState") -> None:
        self.app, self.state = app, state
        self.foreign_logged: set[str] = set()

    def _authorized(self, scope: Scope) -> bool:
        return authorized(_header(scope, b"authorization") or "", self.state.token)

    def _foreign(self, scope: Scope) -> str | None:
        """Why a request comes from somewhere it must not (a web page), or None. Checked with auth on too."""
        st = self.state
        host = _header(scope, b"host") or ""
        if not host_allowed(host, st.allowed_hosts):
            name = (split_host(host) or (host,))[0][:100]
            return (
                f"Host {name!r} is not this server's name (loopback names"
                + "".join(f", {h}" for h in sorted(st.allowed_hosts))
                + f"); if it is, start the server with --allowed-host {name or 'NAME'}"
            )
        origin = _header(scope, b"origin")
        if origin is not None and not origin_allowed(origin, scope.get("scheme", "http"), host, st.allowed_origins):
            return (
                f"cross-origin request from {origin[:100]!r} refused: only pages served by this server may call "
                "it; to allow a web app, start the server with --allowed-origin SCHEME://HOST:PORT"
            )
        return None

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
            foreign = self._foreign(scope)
            if foreign is not None:
                # Label Studio shows a bare "403 Forbidden" for its health check: the fix goes to the console,
                # once per name (a client retrying cannot flood the log).
                if len(self.foreign_logged) < 100 and foreign not in self.foreign_logged:
                    self.foreign_logged.add(foreign)
                    log.warning("refused %s %s: %s", scope["method"], path, foreign)
                await reply(403, foreign)
                return
            # Label Studio's auto-created webhook sends no credentials: it may reach /webhook (which only ever
            # stores gold or refits, never spends) unless the server asks for auth there too.
            open_webhook = (
                path == WEBHOOK_PATH and _header(scope, b"authorization") is None and not st.webhook_needs_auth
            )
            if path not in OPEN_PATHS and st.token is not None and not open_webhook:
                client = (scope.get("client") or ("?",))[0]
                wait = st.auth_failures.wait(client)
                if wait > 0:  # locked out after repeated wrong tokens: the token is not even looked at
                    secs = math.ceil(wait)
                    await reply(
                        429,
                        f"too many wrong tokens from this address: retry in {secs} s with the right token",
                        {"Retry-After": str(secs)},
                    )
                    return
                if not self._authorized(scope):
                    st.auth_failures.failed(client)
                    detail = f"missing or wrong bearer token: send 'Authorization: Bearer <token>' (the server's ${TOKEN_ENV})"
                    if path in LS_PATHS:
                        detail += (
                            "; Label Studio: in the model's settings turn on Basic auth, any user name, the token as "
                            "password"
                        )
                    await reply(401, detail, {"WWW-Authenticate": 'Bearer realm="llmlabel"'})
                    return
                st.auth_failures.succeeded(client)
            # (whether the request proved the token: an unauthenticated webhook is served, but trusted less)
            scope["llmlabel.authorized"] = st.token is not None and self._authorized(scope)
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
                log.error("%s %s failed: %s", scope["method"], path, one_line(f"{type(e).__name__}: {e}", DETAIL))
                if not status[0]:
                    await reply(500, "internal error; see the server log")
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "other"  # a route's template, never the raw path
            method = scope["method"] if scope["method"] in METHODS else "other"
            st.http_count(method, template, status[0] or 500, time.perf_counter() - t0)


def _header(scope: Scope, name: bytes) -> str | None:
    value = next((v for k, v in scope.get("headers", []) if k == name), None)
    return None if value is None else value.decode("latin-1")
