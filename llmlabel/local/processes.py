"""Ports and server processes on the loopback interface: free ports, liveness checks that survive stale pids,
and stopping a server's whole process group."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import time
from pathlib import Path

import httpx

from llmlabel.local.models import LocalError

HOST = "127.0.0.1"


def _bind(port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: ignore TIME_WAIT leftovers of a server we just stopped; a live listener still fails.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
        return int(s.getsockname()[1])


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the server binds it right after)."""
    return _bind(0)


def check_port(port: int) -> int:
    try:
        return _bind(port)
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            raise LocalError(
                f"port {port} on {HOST} is in use; pick another with --port or stop what uses it"
            ) from None
        raise LocalError(f"cannot use port {port} on {HOST}: {e.strerror}") from None


def _is_server_pid(pid: int) -> bool:
    """Is pid a live llama.cpp server of ours? Guards against stale state files and reused pids."""
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap it if it is our own exited child, otherwise kill(pid, 0) sees the zombie as alive.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process now holds this pid
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            cmd = proc.joinpath("cmdline").read_bytes()
            return b"llama_cpp.server" in cmd or b"llmlabel.local.entry" in cmd
        except (OSError, IndexError):
            return False
    return True  # no /proc (macOS): trust kill(pid, 0)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # Servers run as their own group leader (start_new_session), so signal the group.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _terminate(pid: int, grace: float = 10.0) -> None:
    if not _is_server_pid(pid):
        return
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _is_server_pid(pid):
            return
        time.sleep(0.1)
    _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _is_server_pid(pid):
        time.sleep(0.05)


def _log_tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + ln for ln in lines[-n:]) or "(log is empty)"


def _healthy(port: int, timeout: float = 2.0) -> bool:
    try:
        r = httpx.get(f"http://{HOST}:{port}/v1/models", timeout=timeout)
    except httpx.HTTPError:
        return False
    return r.status_code == 200
