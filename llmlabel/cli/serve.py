"""`llmlabel serve`: the HTTP API (llmlabel/service/) under uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys

from llmlabel.errors import ConfigError, LLMLabelError
from llmlabel.service.auth import TOKEN_ENV, host_name, is_loopback, origin_key, split_host, weak_token


def _listen(host: str, port: int) -> socket.socket:
    # Bound here, not by uvicorn, so a busy port is one clear line instead of a logged stack.
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise LLMLabelError(
            f"cannot resolve --host {host!r} ({e.strerror}); give an IP address or a known name"
        ) from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise LLMLabelError(f"cannot listen on {host}:{port}: {e.strerror}; pick another --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _allowed_hosts(bind: str, given: list[str]) -> list[str]:
    """The Host names the server answers to besides the loopback ones: each --allowed-host, and the address it
    is bound to when that is one address (an IP literal cannot be rebound by a web page's DNS)."""
    hosts = []
    for h in given:
        name = host_name(h)
        if not re.fullmatch(r"[a-z0-9_.-]+|[0-9a-f:.]+", name) or split_host(f"[{name}]" if ":" in name else name) != (
            name,
            None,
        ):
            raise LLMLabelError(f"--allowed-host {h!r} is not a host name or address (no scheme, no port)")
        hosts.append(name)
    bound = host_name(bind)
    if bound not in ("0.0.0.0", "::", "") and not is_loopback(bound) and bound not in hosts:
        hosts.append(bound)
    return hosts


def _label_map(given: list[str]) -> dict[str, str]:
    """--ls-label CHOICE=LABEL flags as a mapping."""
    out = {}
    for g in given:
        choice, sep, label = g.partition("=")
        if not sep or not choice.strip() or not label.strip():
            raise LLMLabelError(f"--ls-label {g!r} is not CHOICE=LABEL (e.g. --ls-label pos=positive)")
        out[choice.strip()] = label.strip()
    return out


def _check_flags(a: argparse.Namespace) -> tuple[str | None, list[str]]:
    """The token (None: no auth) and the allowed Host names, or the flag's error in one line."""
    token = os.environ.get(TOKEN_ENV)
    if a.no_auth:
        if not is_loopback(a.host):
            raise LLMLabelError(
                f"--no-auth is only allowed on a loopback host (127.0.0.1, ::1, localhost), not "
                f"{a.host}; set ${TOKEN_ENV} and drop --no-auth"
            )
        token = None
    elif not token or not token.strip():
        raise LLMLabelError(
            f"set ${TOKEN_ENV} to a secret token (clients send 'Authorization: Bearer <token>'), "
            "or pass --no-auth to serve without auth on 127.0.0.1"
        )
    elif not is_loopback(a.host) and (weak := weak_token(token)) is not None:
        # Other machines can reach it: a short token would be guessed (even slowed down to a few tries a minute).
        raise LLMLabelError(
            f"${TOKEN_ENV} is too weak to serve on {a.host} ({weak}); set it to a long random secret, e.g. "
            "the output of: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    for name, v in (
        ("--max-items", a.max_items),
        ("--max-body-mb", a.max_body_mb),
        ("--max-upload-mb", a.max_upload_mb),
        ("--max-text-chars", a.max_text_chars),
    ):
        if v <= 0:
            raise LLMLabelError(f"{name} must be positive, not {v}")
    hosts = _allowed_hosts(a.host, a.allowed_host)
    for o in a.allowed_origin:
        if origin_key(o) is None:
            raise LLMLabelError(f"--allowed-origin {o!r} is not SCHEME://HOST[:PORT] (e.g. http://localhost:8080)")
    if a.predict_deadline <= 0:
        raise LLMLabelError(f"--predict-deadline must be positive, not {a.predict_deadline}")
    _label_map(a.ls_label)
    if not 0 <= a.dispute_threshold <= 1:
        raise LLMLabelError(f"--dispute-threshold must be between 0 and 1, not {a.dispute_threshold}")
    return token, hosts


def cmd_serve(a: argparse.Namespace) -> int:
    # Every user error is checked before the heavy imports (openai, fastapi): a typo answers at once.
    token, hosts = _check_flags(a)
    from llmlabel.config import load_config

    cfg = load_config(a.config)
    for j in cfg.judges:
        # Checked before listening: a judge without a key would only fail at the first request.
        problem = j.key_error()
        if problem:
            raise ConfigError(problem)
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ModuleNotFoundError as e:
        raise LLMLabelError(f"`llmlabel serve` needs {e.name}: pip install 'llmlabel[serve]'") from None
    sock = _listen(a.host, a.port)
    try:
        from llmlabel.redaction import redact_handlers
        from llmlabel.service.app import create_app

        app = create_app(
            cfg,
            token=token,
            state_dir=a.state_dir,
            max_items=a.max_items,
            max_body_bytes=int(a.max_body_mb * (1 << 20)),
            max_upload_bytes=int(a.max_upload_mb * (1 << 20)),
            max_text_chars=a.max_text_chars,
            dispute_threshold=a.dispute_threshold,
            allowed_hosts=hosts,
            allowed_origins=a.allowed_origin,
            ls_label_map=_label_map(a.ls_label),
            predict_deadline=a.predict_deadline,
            webhook_needs_auth=a.webhook_needs_auth,
        )
        # The server's own lines (jobs resumed, failures) go where uvicorn's go, in its format.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger = logging.getLogger("llmlabel")
        logger.addHandler(handler)
        logger.setLevel(a.log_level.upper())
        host = f"[{a.host}]" if ":" in a.host else a.host
        print(
            f"llmlabel: serving on http://{host}:{sock.getsockname()[1]} (auth {'off' if token is None else 'on'}, "
            f"jobs in {a.state_dir}); docs at /docs; Host names accepted: "
            + ", ".join(["localhost", "127.0.0.1", "[::1]", *hosts])
            + ("" if a.allowed_host else " (add others with --allowed-host)"),
            file=sys.stderr,
            flush=True,
        )
        server = uvicorn.Server(
            uvicorn.Config(
                app, log_level=a.log_level, access_log=a.access_log, timeout_graceful_shutdown=10, lifespan="on"
            )
        )
        # After uvicorn.Config, which sets up uvicorn's handlers: every line printed hides the configured keys,
        # the token, and token-like query values (`?token=...` in the access log).
        redact_handlers("llmlabel", "uvicorn", "uvicorn.error", "uvicorn.access")
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser(
        "serve",
        help="serve the judges over HTTP: label, verify, batch jobs, Label Studio, metrics",
        description="Serve the config's judges over HTTP. Every route but /livez needs "
        "'Authorization: Bearer <token>' with the token in $LLMLABEL_SERVE_TOKEN.",
    )
    s.add_argument("-c", "--config", required=True, help="YAML config (task, judges, options)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    s.add_argument("--state-dir", default=".llmlabel-serve", help="where batch jobs live (default: .llmlabel-serve)")
    s.add_argument("--max-items", type=int, default=256, help="items per /v1/label, /v1/verify or /predict request")
    s.add_argument("--max-body-mb", type=float, default=10, help="largest JSON request body, in MiB (default: 10)")
    s.add_argument(
        "--max-text-chars",
        type=int,
        default=200_000,
        help="longest text of a /v1/label, /v1/verify or /predict item (default: 200000; 413 above; judges read "
        "only their max_text_tokens of it, and files of any size go to /v1/jobs)",
    )
    s.add_argument("--max-upload-mb", type=float, default=100, help="largest /v1/jobs upload, in MiB (default: 100)")
    s.add_argument(
        "--dispute-threshold",
        type=float,
        default=0.5,
        help="/v1/verify: an item is disputed when the judges' label differs and the given label's probability "
        "is below this (audit jobs flag rows as `llmlabel audit` does)",
    )
    s.add_argument(
        "--flag-threshold", type=float, dest="dispute_threshold", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )  # old name
    s.add_argument("--no-auth", action="store_true", help="no token needed; only allowed on a loopback --host")
    s.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name clients reach the server by, besides localhost, 127.0.0.1 and [::1] (repeatable); "
        "requests naming any other host are refused (DNS rebinding)",
    )
    s.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="URL",
        help="a web app's origin (SCHEME://HOST[:PORT]) allowed to call the server from a browser (repeatable); "
        "browser requests from any other site are refused",
    )
    s.add_argument(
        "--ls-label",
        action="append",
        default=[],
        metavar="CHOICE=LABEL",
        help="Label Studio: the task label a project's choice stands for, when their names differ beyond case "
        "(repeatable), e.g. --ls-label pos=positive",
    )
    s.add_argument(
        "--predict-deadline",
        type=float,
        default=80.0,
        help="Label Studio /predict: answer after this many seconds with the tasks labeled so far; the rest go on "
        "into the cache for the next call (default: 80, under Label Studio's ML_TIMEOUT_PREDICT of 100)",
    )
    s.add_argument(
        "--webhook-needs-auth",
        action="store_true",
        help="refuse /webhook requests without credentials (Label Studio's auto-created webhook sends none; "
        "without this flag they may only store gold rows of connected projects, rate-limited)",
    )
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (paths only, never headers; token-like query values hidden)",
    )
    s.set_defaults(func=cmd_serve)
