"""Who may call the service: the token's variable, loopback hosts, the Authorization header check, and the
Host and Origin checks that keep web pages out (cross-site form posts, DNS rebinding).

Stdlib only: `llmlabel serve` checks its flags with these before it imports FastAPI."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urlsplit

TOKEN_ENV = "LLMLABEL_SERVE_TOKEN"
# A token that guards a server other machines can reach: long and varied enough that guessing it (slowed down
# by `AuthFailures`) is hopeless. secrets.token_urlsafe(32) gives 43 characters.
MIN_TOKEN_CHARS, MIN_TOKEN_DISTINCT = 16, 8


def weak_token(token: str) -> str | None:
    """Why `token` is too weak to guard a server reachable from other machines, or None. Never says the token."""
    if len(token) < MIN_TOKEN_CHARS:
        return f"{len(token)} long, under {MIN_TOKEN_CHARS} characters"
    if len(set(token)) < MIN_TOKEN_DISTINCT:
        return f"only {len(set(token))} different characters, under {MIN_TOKEN_DISTINCT}"
    return None


class AuthFailures:
    """Slows down a client that keeps sending wrong tokens: after `free` failures in a row, each further one
    locks it out for twice as long as the last (1 s, 2 s, 4 s ... up to `cap`); while locked out its requests
    are refused without looking at the token, so guessing runs at a few tries a minute. A success, or
    `forget` seconds without a failure, starts it over.

    Memory is bounded: at most `max_clients` addresses are remembered (the oldest failure goes first), and an
    IPv6 client counts by its /64 network (one host may hold a whole /64)."""

    def __init__(
        self,
        free: int = 5,
        base: float = 1.0,
        cap: float = 300.0,
        forget: float = 900.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.base, self.cap, self.forget, self.max_clients = free, base, cap, forget, max_clients
        self.clock = clock
        self._clients: OrderedDict[str, tuple[int, float, float]] = OrderedDict()  # (failures, last, until)

    @staticmethod
    def key(client: str) -> str:
        try:
            ip = ipaddress.ip_address(client)
        except ValueError:
            return client[:100]
        if ip.version == 6 and ip.ipv4_mapped is None:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)

    def wait(self, client: str) -> float:
        """Seconds `client` must wait before its next try is looked at (0: now)."""
        entry = self._clients.get(self.key(client))
        return 0.0 if entry is None else max(0.0, entry[2] - self.clock())

    def failed(self, client: str) -> None:
        key, now = self.key(client), self.clock()
        n, last, _ = self._clients.pop(key, (0, now, now))
        n = 1 if now - last > self.forget else n + 1
        delay = 0.0 if n <= self.free else min(self.cap, self.base * 2 ** (n - self.free - 1))
        self._clients[key] = (n, now, now + delay)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        if self._clients:
            self._clients.pop(self.key(client), None)

    def __len__(self) -> int:
        return len(self._clients)


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


def split_host(value: str) -> tuple[str, int | None] | None:
    """The name and port of a Host header: '[::1]:8000' -> ('::1', 8000); None when it is malformed."""
    v = value.strip().lower()
    if v.startswith("["):
        name, sep, rest = v[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    elif v.count(":") == 1:
        name, port = v.split(":")
    elif ":" in v:  # an IPv6 address needs brackets in a Host header
        return None
    else:
        name, port = v, ""
    name = name.rstrip(".")
    if not name or (port and not port.isdigit()):
        return None
    return name, int(port) if port else None


def host_name(host: str) -> str:
    """A configured host as the Host check compares it: lower case, no brackets, no trailing dot."""
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def host_allowed(header: str, allowed: frozenset[str]) -> bool:
    """Whether a Host header names this server: a loopback name or address, or one the operator allowed.
    A web page that rebinds its own name to 127.0.0.1 still sends that name, and is refused."""
    parsed = split_host(header)
    return parsed is not None and (is_loopback(parsed[0]) or parsed[0] in allowed)


def origin_key(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin such as 'http://localhost:8000'; None for 'null' or anything else."""
    try:
        u = urlsplit(origin.strip().lower())
        port = u.port
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/") or u.query or u.username:
        return None
    return u.scheme, u.hostname.rstrip("."), port or (443 if u.scheme == "https" else 80)


def origin_allowed(origin: str, scheme: str, host: str, allowed: frozenset[tuple[str, str, int]]) -> bool:
    """Whether a browser's Origin header is the service's own (the scheme and Host it was reached by, already
    checked by host_allowed) or one the operator allowed. A cross-site form POST needs no CORS preflight, so
    this is what keeps any web page from starting paid jobs on a server without auth."""
    key = origin_key(origin)
    if key is None:
        return False
    own = split_host(host)
    if own is not None and key == (scheme, own[0], own[1] or (443 if scheme == "https" else 80)):
        return True
    return key in allowed
