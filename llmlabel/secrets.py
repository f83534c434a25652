"""Keeping API keys out of everything llmlabel prints or writes."""

from __future__ import annotations

_SECRETS: set[str] = set()


def register(secret: str | None) -> None:
    if secret and len(secret) >= 6:
        _SECRETS.add(secret)


def redact(text: str) -> str:
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, "***")
    return text
