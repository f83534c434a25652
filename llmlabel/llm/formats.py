"""Response-format negotiation: which `response_format` a judge sends, and moving on when a server rejects it.

With `response_format: auto` a judge starts at json_schema and steps down (json_schema > json_object > text)
each time the server rejects the format; the endpoint's working format is remembered in the cache's metadata,
so later runs start there."""

from __future__ import annotations

import contextlib
from typing import Any

from llmlabel.config import Judge
from llmlabel.errors import CacheError
from llmlabel.llm.memo import Memo
from llmlabel.llm.prompts import response_format
from llmlabel.llm.transport import StatusError

FORMATS = ["json_schema", "json_object", "text"]
# A 400 about the prompt's size is not about the format.
_SIZE_WORDS = ("context", "too long", "maximum", "token")


def format_rejected(e: StatusError) -> bool:
    """A 500 that is really a rejected response_format: llama-cpp-python's server answers a format it does not
    know (json_schema) with HTTP 500 and the request's validation error in the body, where others send 400."""
    if e.status != 500:
        return False
    msg = e.server_message.lower()
    return "response_format" in msg and "validation" in msg


class Formats:
    """A judge's current response format, and the request field for it (one per prompt kind)."""

    def __init__(self, judge: Judge, labels: list[str], endpoint: str, cache: Any, code_mode: bool) -> None:
        self.labels, self.cache = labels, cache
        self.auto = judge.response_format == "auto"
        self._meta_key = f"format:{judge.cache_as or endpoint}:{judge.model}"
        saved = cache.get_meta(self._meta_key) if self.auto else None
        # Code answers (logprobs with auto/text) are one bare token: no JSON format at all.
        self.current = "text" if code_mode else (saved or ("json_schema" if self.auto else judge.response_format))
        self._fields: Memo[tuple[str, str], dict[str, Any]] = Memo(16)

    def field(self, kind: str) -> dict[str, Any]:
        """The request's `response_format` for `kind` ({}: send none)."""
        rf = self._fields.get((self.current, kind))
        if rf is None:
            rf = self._fields.put(
                (self.current, kind), response_format(self.current, kind, self.labels, "labels") or {}
            )
        return rf

    def rejected(self, e: StatusError) -> bool:
        """Whether `e` says the server does not take this format."""
        if e.status == 500:
            return format_rejected(e)
        return e.status in (400, 422) and not any(w in e.server_message.lower() for w in _SIZE_WORDS)

    def step_down(self, e: StatusError, sent: str) -> bool:
        """Whether to ask again after `e` answered a request sent in format `sent`: if `e` rejects that format
        and the judge negotiates (auto), move to the next one, unless another request already has (requests
        in flight when the first rejection came back are rejected too). False: `e` stands."""
        if not self.auto or not self.rejected(e):
            return False
        if sent != self.current:
            return True
        if self.current == "text":
            return False
        self.current = FORMATS[FORMATS.index(self.current) + 1]
        with contextlib.suppress(CacheError):  # only a reminder for later runs (which would find it again)
            self.cache.set_meta(self._meta_key, self.current)
        return True
