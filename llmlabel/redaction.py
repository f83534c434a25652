"""Keeping API keys out of everything llmlabel prints or writes.

The redaction list holds what the operator configured (judges' API keys read from their env vars, the service
token); nothing a client sends adds to it, and it is bounded so that no caller can grow it without end."""

from __future__ import annotations

import logging
import re
from typing import Any

from llmlabel.errors import LLMLabelError

MAX_SECRETS = 256  # far more than any config's keys; past it something registers what it should not
_SECRETS: dict[str, None] = {}  # insertion-ordered set
# `?token=...`, `&api_key=...`, `access_token=...` in a logged URL: the value, whatever it is.
_QUERY_SECRET = re.compile(r"(?i)([?&][^=&#\s\"]*(?:token|key|secret|password|auth)[^=&#\s\"]*=)[^&#\s\"]*")


def register(secret: str | None) -> None:
    """Add a configured secret (an API key, the service token) to what `redact` hides."""
    if not secret or len(secret) < 6 or secret in _SECRETS:
        return
    if len(_SECRETS) >= MAX_SECRETS:
        # Failing beats not hiding a key: only configuration registers secrets, and no config has this many.
        raise LLMLabelError(f"more than {MAX_SECRETS} distinct secrets registered; only configured keys belong here")
    _SECRETS[secret] = None


def redact(text: str) -> str:
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, "***")
    return text


def one_line(msg: object, limit: int = 240) -> str:
    """A message (a server's, an exception's) for one error line: whitespace folded, secrets redacted, bounded."""
    return redact(" ".join(str(msg).split()))[:limit]


def redact_query(text: str) -> str:
    """Hide the values of token-like query parameters (`token=`, `api_key=`, ...) in a URL or log line."""
    return _QUERY_SECRET.sub(r"\1***", text)


def redact_obj(obj: Any) -> Any:
    """A JSON-like value with every known secret hidden in its strings (keys and values)."""
    if not _SECRETS:
        return obj
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v) for v in obj]
    return obj


class RedactFilter(logging.Filter):
    """A handler filter that hides known secrets and token-like query values in every record it passes.

    The message and each string argument are redacted in place (uvicorn's access formatter reads its args),
    and an exception's text is formatted and redacted here, before any formatter prints it."""

    def filter(self, record: logging.LogRecord) -> bool:
        clean = lambda v: redact(redact_query(v)) if isinstance(v, str) else v  # noqa: E731
        record.msg = clean(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: clean(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = clean(record.exc_text)
        return True


def redact_handlers(*loggers: str) -> None:
    """Put a RedactFilter on every handler of these loggers (and the root logger's)."""
    for name in ("", *loggers):
        for h in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactFilter) for f in h.filters):
                h.addFilter(RedactFilter())
