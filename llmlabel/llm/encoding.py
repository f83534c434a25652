"""Request encoding: a chat request's canonical JSON body (the bytes sent, and hashed) and its cache key.

Every byte that reaches the hash is built here. Requests of one judge differ only in their last message, and
everything else (system prompt, examples, schema, options) is most of the bytes: that frame is serialised and
hashed once per prompt, then each request only adds its last message. The result is byte-identical to
`canonical(request)` (tests/unit/test_encoding.py checks it, and pins keys of earlier versions), so keys
never depend on this shortcut: caches written by any version stay valid.

Self-consistency asks one request several times (`sample` 0, 1, ...): sample i > 0 hashes under its own
namespace (`sample_namespace`), so each sample is cached apart while sample 0 keeps the key it always had."""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable
from typing import Any

from llmlabel.llm.memo import Memo

Messages = list[dict[str, str]]

# Stands in for the last message while a frame is rendered; its JSON splits the frame in two.
_MARKER = {"\x00llmlabel": "frame\x00"}
_MISSING = object()
_ROLE_CONTENT = operator.itemgetter("role", "content")
_STR = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes for a string (C when built)


def canonical(request: dict[str, Any]) -> bytes:
    """The request as canonical JSON: what is hashed for the cache key, and also the bytes sent."""
    return json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def cache_key(endpoint: str, request: dict[str, Any] | bytes) -> str:
    """sha256 of the endpoint and the canonical request: everything that changes the answer (model, messages,
    response format, temperature, seed, max_tokens, logprob options). The API key is never part of it."""
    body = request if isinstance(request, bytes) else canonical(request)
    return hashlib.sha256(endpoint.encode("utf-8") + b"\n" + body).hexdigest()


def sample_namespace(namespace: str, sample: int) -> str:
    """What sample `sample` of a request is hashed under: the endpoint itself for sample 0 (today's keys)."""
    return namespace if sample == 0 else f"{namespace}\nsample {sample}"


def message_json(message: dict[str, str]) -> bytes:
    """canonical(message); a plain {"role", "content"} message without the general encoder (same bytes)."""
    role, content = message.get("role"), message.get("content")
    if len(message) == 2 and type(role) is str and type(content) is str:
        return f'{{"content":{_STR(content)},"role":{_STR(role)}}}'.encode()
    return canonical(message)


# (body before the last message, body after it, sha256 state of the namespace and the part before)
Frame = tuple[bytes, bytes, Any]


class RequestEncoder:
    """Bodies and cache keys of one endpoint's requests.

    `build(messages, kind, sample)` makes the request dict; `variant` names what else it depends on (the
    response format), so a frame is reused only for requests that `build` would frame the same way."""

    def __init__(self, namespace: str, build: Callable[[Messages, str, int], dict[str, Any]]) -> None:
        self.namespace = namespace  # what the cache knows this endpoint by
        self._build = build
        # A job has a handful of frames (prompt kinds, a few re-asks); each saves serialising the whole prompt.
        self._frames: Memo[Any, Frame | None] = Memo(64)

    def _frame(self, head: Messages, kind: str, variant: str, sample: int) -> Frame | None:
        """The frame around the last message (None: this request cannot be split that way)."""
        fkey = (kind, variant, sample, *map(_ROLE_CONTENT, head))
        frame = self._frames.get(fkey, _MISSING)
        if frame is _MISSING:
            frame = self._frames.put(fkey, self._split(head, kind, sample))
        return frame  # type: ignore[return-value]

    def _split(self, head: Messages, kind: str, sample: int) -> Frame | None:
        parts = canonical(self._build([*head, _MARKER], kind, sample)).split(canonical(_MARKER))
        if len(parts) != 2:
            return None
        ns = sample_namespace(self.namespace, sample)
        return parts[0], parts[1], hashlib.sha256(ns.encode("utf-8") + b"\n" + parts[0])

    def encode(self, messages: Messages, kind: str, variant: str, sample: int = 0) -> tuple[dict[str, Any], bytes, str]:
        """The request, its body (canonical JSON, serialised once: hashed for the key and sent) and its key."""
        req = self._build(messages, kind, sample)
        frame = self._frame(messages[:-1], kind, variant, sample)
        if frame is None:
            data = canonical(req)
            return req, data, cache_key(sample_namespace(self.namespace, sample), data)
        tail = message_json(messages[-1])
        h = frame[2].copy()
        h.update(tail)
        h.update(frame[1])
        return req, frame[0] + tail + frame[1], h.hexdigest()

    def key_for(self, messages: Messages, kind: str, variant: str, sample: int = 0) -> str:
        """The cache key `encode` would give, without building the request or its body."""
        return self.keys_for([messages], kind, variant, sample=sample)[0]

    def keys_for(
        self, batch: list[Messages], kind: str, variant: str, tails: list[bytes] | None = None, sample: int = 0
    ) -> list[str]:
        """`key_for` of each request of a batch (a warm rerun's chunk of rows). Its requests share their head
        messages (one prompt): the frame is looked up when the head changes, not per request; `tails`, when
        given, are message_json of each last message, serialised once for several judges by the caller.
        (The keys of a warm 5,000-row x 3-judge rerun: 0.034 s of CPU one key_for at a time, 0.015 s so.)"""
        keys = []
        last: Messages | None = None
        frame: Frame | None = None
        for n, messages in enumerate(batch):
            head = messages[:-1]
            if head != last:  # the same message objects: compared by identity, no content compared
                frame, last = self._frame(head, kind, variant, sample), head
            if frame is None:
                keys.append(self.encode(messages, kind, variant, sample)[2])
                continue
            h = frame[2].copy()
            h.update(tails[n] if tails is not None else message_json(messages[-1]))
            h.update(frame[1])
            keys.append(h.hexdigest())
        return keys
