"""Local judges: the embedded GGUF models (local/models.py), one llama-cpp-python OpenAI-compatible server each.

One server per model: llama-cpp-python's server keeps one model in memory and reloads it on every
switch, so one server holding several models is much slower when requests alternate.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmlabel.local.models import MODELS, LocalError, check_llama_cpp, model_paths
from llmlabel.local.processes import HOST, _healthy, _is_server_pid, _log_tail, _terminate, check_port, free_port

__all__ = ["MODELS", "LocalError", "check_llama_cpp", "model_paths", "LocalEnsemble", "local_judges"]

API_KEY = "sk-no-key-required"
# The server command: llama_cpp.server's own __main__, after registering the "gemma3" chat format.
SERVER_CODE = "import llmlabel.local.entry as m; m.serve()  # llama_cpp.server"
STATE_FILE = "state.json"


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    pid: int
    port: int
    models: list[str]
    log: str
    config: str

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"


@dataclass
class State:
    servers: list[Server] = field(default_factory=list)
    started_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> State:
        return cls(
            started_at=float(d.get("started_at", 0.0)),
            servers=[Server(**s) for s in d.get("servers", [])],
        )

    def judges(self) -> list[dict[str, Any]]:
        timeout = env_timeout()
        out = []
        for s in self.servers:
            for alias in s.models:
                out.append(
                    {
                        "name": MODELS[alias].judge,
                        "model": alias,
                        "base_url": s.base_url,
                        "api_key": API_KEY,
                        # llama-cpp-python answers one request at a time per server; more only queues.
                        "concurrency": 1,
                        "timeout": timeout,
                    }
                )
        return out


def _write_config(path: Path, port: int, models: dict[str, Path], threads: int) -> None:
    cfg = {
        "host": HOST,
        "port": port,
        "models": [
            {
                "model": str(p),
                "model_alias": alias,
                "n_ctx": 2048,
                "n_threads": threads,
                "n_threads_batch": threads,
                "chat_format": MODELS[alias].chat_format,
                # llama.cpp's own timings (prompt/generation tokens per second) go to the log when set.
                "verbose": bool(os.environ.get("LLMLABEL_LOCAL_VERBOSE")),
            }
            for alias, p in models.items()
        ],
    }
    path.write_text(json.dumps(cfg, indent=2))


def _spawn(
    run_dir: Path, name: str, port: int, models: dict[str, Path], threads: int
) -> tuple[subprocess.Popen[bytes], Server]:
    cfg = run_dir / f"{name}.json"
    log = run_dir / f"{name}.log"
    _write_config(cfg, port, models, threads)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_CODE, "--config_file", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the caller (standalone) and keeps Ctrl-C handling ours
        )
    return proc, Server(pid=proc.pid, port=port, models=list(models), log=str(log), config=str(cfg))


def _wait_healthy(procs: list[tuple[subprocess.Popen[bytes], Server]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending:
        for proc, srv in list(pending):
            rc = proc.poll()
            if rc is not None:
                raise LocalError(
                    f"llama.cpp server for {', '.join(srv.models)} exited with code {rc} during startup "
                    f"(log: {srv.log}); last log lines:\n{_log_tail(Path(srv.log))}"
                )
            if _healthy(srv.port, timeout=1.0):
                pending.remove((proc, srv))
        if pending and time.monotonic() > deadline:
            srv = pending[0][1]
            raise LocalError(
                f"llama.cpp server for {', '.join(srv.models)} did not answer on port {srv.port} within "
                f"{timeout:.0f}s (log: {srv.log}); last log lines:\n{_log_tail(Path(srv.log))}"
            )
        if pending:
            time.sleep(0.2)


def env_threads() -> int | None:
    """$LLMLABEL_LOCAL_THREADS: llama.cpp threads per server (default: every core). On cores other jobs keep
    busy, fewer threads are faster: llama.cpp's threads wait for each other at every layer, so one thread held
    up holds all (on 2 shared cores at load ~10, 1 thread generated 3.5 tokens/s where 2 generated 0.4)."""
    raw = os.environ.get("LLMLABEL_LOCAL_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise LocalError(f"LLMLABEL_LOCAL_THREADS must be a whole number of threads >= 1, not {raw!r}")
    return int(raw)


# The embedded judges' wait for one answer, longer than an API judge's 60 s: a server answers one request at a
# time, so this bounds one answer's own work, and the 1.5B default on 2 busy cores took 15-22 s for a review
# and minutes for a long abstract. A request that times out is retried while the server, still busy with the
# abandoned one, answers the retry later still: too short a wait costs twice.
LOCAL_TIMEOUT = 300.0


def env_timeout() -> float:
    """$LLMLABEL_LOCAL_TIMEOUT: seconds the embedded judges wait for one answer (default LOCAL_TIMEOUT)."""
    raw = os.environ.get("LLMLABEL_LOCAL_TIMEOUT", "").strip()
    if not raw:
        return LOCAL_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise LocalError(f"LLMLABEL_LOCAL_TIMEOUT must be a number of seconds > 0, not {raw!r}")
    return value


def launch(
    run_dir: Path,
    *,
    port: int | None = None,
    threads: int | None = None,
    timeout: float = 120.0,
) -> tuple[State, list[subprocess.Popen[bytes]]]:
    """Start one server per model and wait until they answer; on failure everything started is stopped.

    `port` is the first port; models use port, port+1, ...
    """
    paths = model_paths()
    threads = threads or env_threads() or os.cpu_count() or 1
    groups = [{a: p} for a, p in paths.items()]
    if port is not None:
        ports = [check_port(port + i) for i in range(len(groups))]
    else:
        ports = []
        while len(ports) < len(groups):  # distinct even if the OS hands out the same ephemeral port twice
            if (p := free_port()) not in ports:
                ports.append(p)
    run_dir.mkdir(parents=True, exist_ok=True)
    started: list[tuple[subprocess.Popen[bytes], Server]] = []
    try:
        for grp, p in zip(groups, ports):
            started.append(_spawn(run_dir, "-".join(grp), p, grp, threads))
        _wait_healthy(started, timeout)
    except BaseException:
        for proc, _ in started:
            _terminate(proc.pid, grace=3)
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        raise
    return State(servers=[s for _, s in started], started_at=time.time()), [p for p, _ in started]


# ---------------------------------------------------------------- standalone (CLI `llmlabel local ...`)


def resolve_state_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """$LLMLABEL_STATE_DIR, else $XDG_CACHE_HOME/llmlabel/local, else ~/.cache/llmlabel/local."""
    if path is not None:
        return Path(path)
    if env := os.environ.get("LLMLABEL_STATE_DIR"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "llmlabel" / "local"


@contextlib.contextmanager
def _locked(d: Path) -> Iterator[None]:
    # Serialises concurrent start/stop on the same state dir; flock is released if we crash.
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: no locking, best effort
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_state(d: Path) -> State | None:
    try:
        return State.from_json(json.loads((d / STATE_FILE).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError):
        return None  # a corrupt state file is treated as "nothing running"


def _write_state(d: Path, st: State) -> None:
    from llmlabel.io.files import atomic_write

    atomic_write(d / STATE_FILE, json.dumps(st.to_json(), indent=2))  # atomic: readers never see half a file


def _live(st: State | None) -> bool:
    return bool(st and st.servers) and all(_is_server_pid(s.pid) for s in st.servers)  # type: ignore[union-attr]


def start_servers(
    state_dir: str | os.PathLike[str] | None = None,
    port: int | None = None,
    timeout: float = 120.0,
) -> State:
    """Start detached servers that outlive the caller; if they already run, return their state."""
    d = resolve_state_dir(state_dir)
    with _locked(d):
        st = read_state(d)
        if _live(st) and all(_healthy(s.port) for s in st.servers):  # type: ignore[union-attr]
            assert st is not None
            return st
        if st:  # partly dead or unhealthy: clear the remains before starting afresh
            for s in st.servers:
                _terminate(s.pid)
            (d / STATE_FILE).unlink(missing_ok=True)
        st, _ = launch(d, port=port, timeout=timeout)
        _write_state(d, st)
        return st


def stop_servers(state_dir: str | os.PathLike[str] | None = None, grace: float = 10.0) -> list[int]:
    """Stop the standalone servers (SIGTERM, then SIGKILL after `grace` s); returns the pids that were live."""
    d = resolve_state_dir(state_dir)
    with _locked(d):
        st = read_state(d)
        stopped = []
        for s in st.servers if st else []:
            if _is_server_pid(s.pid):
                stopped.append(s.pid)
                _terminate(s.pid, grace)
        (d / STATE_FILE).unlink(missing_ok=True)
        return stopped


def status(state_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What runs: {"running", "state_dir", "servers": [{pid, port, models, log, alive, healthy}]}.

    A state file whose processes are all gone is stale and is removed.
    """
    d = resolve_state_dir(state_dir)
    st = read_state(d)
    servers = []
    for s in st.servers if st else []:
        alive = _is_server_pid(s.pid)
        servers.append({**asdict(s), "base_url": s.base_url, "alive": alive, "healthy": alive and _healthy(s.port)})
    if st is not None and not any(s["alive"] for s in servers):
        (d / STATE_FILE).unlink(missing_ok=True)
    return {
        "running": bool(servers) and all(s["healthy"] for s in servers),
        "state_dir": str(d),
        "servers": servers,
    }


# ---------------------------------------------------------------- in-process ensemble


class LocalEnsemble:
    """Local judges for one run: reuses standalone servers if they run, else starts (and later stops) its own.

    with LocalEnsemble() as judges: ...   # judges: list of judge dicts
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.state_dir = resolve_state_dir(state_dir)
        self.port, self.timeout = port, timeout
        self.state: State | None = None
        self.owned = False  # True when this object started the servers and must stop them
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> list[dict[str, Any]]:
        env_timeout()  # a wrong value says so before a server starts
        if self.state is not None:
            return self.state.judges()
        st = read_state(self.state_dir)
        if _live(st) and all(_healthy(s.port) for s in st.servers):  # type: ignore[union-attr]
            self.state = st
            return st.judges()  # type: ignore[union-attr]
        # Own run dir per process so concurrent runs and the standalone state never collide.
        run_dir = self.state_dir / f"run-{os.getpid()}"
        self.state, self._procs = launch(run_dir, port=self.port, timeout=self.timeout)
        self.owned = True
        atexit.register(self.stop)  # a run that forgets to stop (or exits via sys.exit) leaves no servers
        return self.state.judges()

    def stop(self) -> None:
        if self.owned:
            for p in self._procs:
                _terminate(p.pid, grace=10)
                with contextlib.suppress(Exception):
                    p.wait(timeout=1)
            atexit.unregister(self.stop)
        self.state, self._procs, self.owned = None, [], False

    @property
    def judges(self) -> list[dict[str, Any]]:
        return self.state.judges() if self.state else []

    def __enter__(self) -> list[dict[str, Any]]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def local_judges(
    state_dir: str | os.PathLike[str] | None = None,
    port: int | None = None,
    timeout: float = 120.0,
) -> Iterator[list[dict[str, Any]]]:
    """Yield judge dicts for the local models; stops on exit only what it started."""
    with LocalEnsemble(state_dir, port=port, timeout=timeout) as judges:
        yield judges
