"""Who may call the service: the token's variable, loopback hosts, and the Authorization header check.

Stdlib only: `llmlabel serve` checks its flags with these before it imports FastAPI."""

from __future__ import annotations

import base64
import hmac
import ipaddress

TOKEN_ENV = "LLMLABEL_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def authorized(header: str, token: str | None) -> bool:
    """Whether an Authorization header carries the token (None: auth is off)."""
    if token is None:
        return True
    scheme, _, cred = header.strip().partition(" ")
    cred = cred.strip()
    if scheme.lower() == "basic":
        # Label Studio's ML backend settings offer HTTP Basic auth: any user name, the token as password.
        try:
            cred = base64.b64decode(cred, validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(cred.encode("utf-8", "replace"), token.encode("utf-8"))
