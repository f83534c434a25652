"""Shared helpers for the benchmark scripts: the simulated server, configs, timed CLI runs, result tables.

Every timed figure comes from a whole `llmlabel` process (start-up included), run as a subprocess and
reaped with os.wait4, which gives that one process's own user/sys CPU seconds and peak RSS (ru_maxrss).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# ../shared beside the checkout, else /work/shared; LLMLABEL_SHARED names another folder (a git worktree
# elsewhere, or a missing one: tests/unit/test_benchmarks_smoke.py runs every script's --help without the data)
_SHARED_ENV = os.environ.get("LLMLABEL_SHARED")
SHARED = Path(_SHARED_ENV) if _SHARED_ENV else ROOT.parent / "shared"
if not _SHARED_ENV and not (SHARED / "tools" / "fakellm.py").is_file():
    SHARED = Path("/work/shared")
FAKELLM = SHARED / "tools" / "fakellm.py"
DATA = SHARED / "data"
BIN = Path(sys.executable).parent
LLMLABEL = str(BIN / "llmlabel") if (BIN / "llmlabel").exists() else "llmlabel"

TREC_LABELS = {
    "ABBR": "an abbreviation or its expansion",
    "DESC": "a description, definition, manner or reason",
    "ENTY": "an entity (animal, color, food, product, term, ...)",
    "HUM": "a person, group or organization",
    "LOC": "a location (city, country, mountain, ...)",
    "NUM": "a number, date, amount, distance, ...",
}
TREC_TASK = {
    "name": "trec",
    "instructions": "Classify the question by the kind of answer it asks for.",
    "labels": TREC_LABELS,
}
SST2_TASK = {
    "name": "sst2",
    "instructions": "Classify the sentiment of the movie review sentence.",
    "labels": {
        "negative": "the sentence is negative about the movie",
        "positive": "the sentence is positive about the movie",
    },
}


# -- machine state --------------------------------------------------------------------------------------
def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


_WAITED = [0.0]  # seconds this script has already spent waiting for a quiet machine


def wait_for_quiet(threshold: float = 0.7, poll: float = 20.0, max_wait: float = 600.0, log=sys.stderr) -> float:
    """Wait until the 1-minute load average is below `threshold` (other engineers share this machine).
    Returns the load at the moment the timed run starts. `max_wait` is a budget for the whole script: once
    spent, runs start at once (their load is recorded either way)."""
    while True:
        load = loadavg()
        if load < threshold:
            return load
        if _WAITED[0] >= max_wait:
            print(
                f"[bench] load {load:.2f} >= {threshold}; wait budget ({max_wait:.0f} s) spent, running anyway",
                file=log,
                flush=True,
            )
            return load
        print(f"[bench] load {load:.2f} >= {threshold}; waiting {poll:.0f} s", file=log, flush=True)
        time.sleep(poll)
        _WAITED[0] += poll


def nproc() -> int:
    return len(os.sched_getaffinity(0))


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {nproc()} CPUs ({cpu or 'unknown CPU'}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def command_line() -> str:
    argv = [sys.argv[0] if not Path(sys.argv[0]).is_absolute() else os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]
    return "python " + shlex.join(argv)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


# -- data -----------------------------------------------------------------------------------------------
def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_csv(path: Path, columns: list[str], rows: Iterable[Sequence[Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        w.writerows(rows)
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def trec_pool() -> list[tuple[str, str]]:
    return [(" ".join(r["text"].split()), r["label"]) for r in read_csv(DATA / "trec_train.csv")]


def write_synthetic(path: Path, rows: int, prefix: str = "q") -> Path:
    """A CSV of `rows` unique texts ("q0000123 " + a TREC question) with their TREC labels, written as a
    stream. The same file is given to fakellm as --data, so it knows every text it is asked about."""
    pool = trec_pool()
    width = max(7, len(str(rows)))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label"])
        for i in range(rows):
            text, label = pool[i % len(pool)]
            w.writerow([f"r{i}", f"{prefix}{i:0{width}d} {text}", label])
    return path


# -- the simulated server -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_cpu(pid: int) -> float:
    """user+sys CPU seconds of a live process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class FakeLLM:
    """../shared/tools/fakellm.py in a subprocess on 127.0.0.1 and a free port."""

    def __init__(
        self, data: list[Path], latency: float = 0.0, extra: list[str] | None = None, log_dir: Path | None = None
    ) -> None:
        self.port = free_port()
        self.data, self.latency, self.extra = data, latency, extra or []
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="fakellm-"))
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def listen(self) -> list[str]:
        """The server's options for its address and latency."""
        return ["--host", "127.0.0.1", "--port", str(self.port), "--latency", str(self.latency)]

    def command(self) -> list[str]:
        cmd = [sys.executable, str(FAKELLM), *self.listen()]
        for d in self.data:
            cmd += ["--data", str(d)]
        return cmd + self.extra

    def start(self, timeout: float = 600.0) -> "FakeLLM":
        cmd = self.command()
        self._log = open(self.log_dir / f"fakellm-{self.port}.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fakellm exited with {self.proc.returncode}; see {self._log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("fakellm did not come up")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as r:
            return json.loads(r.read())

    def requests(self) -> int:
        return int(self.stats()["requests"])

    def cpu(self) -> float:
        return _proc_cpu(self.proc.pid) if self.proc else float("nan")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "FakeLLM":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class LeanServer(FakeLLM):
    """benchmarks/lean_server.py: the same endpoints, a fixed latency, a few tens of microseconds of CPU a
    request (fakellm simulates annotators and costs ~0.4 ms a request, taken from the client on 2 cores)."""

    def __init__(self, latency: float = 0.0, log_dir: Path | None = None) -> None:
        super().__init__([], latency, log_dir=log_dir)

    def command(self) -> list[str]:
        return [sys.executable, str(ROOT / "benchmarks" / "lean_server.py"), *self.listen()]


def accuracy_args(accuracies: dict[str, float]) -> list[str]:
    """fakellm's options giving each simulated model its accuracy."""
    return [x for m, acc in accuracies.items() for x in ("--accuracy", f"{m}={acc}")]


# -- configs --------------------------------------------------------------------------------------------
def judge(name: str, model: str, base_url: str, concurrency: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": model, "base_url": base_url, "concurrency": concurrency, **extra}


def write_config(
    path: Path, judges: list[dict[str, Any]], cache_dir: Path, task: dict[str, Any] | None = None, **extra: Any
) -> Path:
    import yaml

    cfg = {"task": task or TREC_TASK, "judges": judges, "mode": "label", "cache_dir": str(cache_dir), **extra}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# -- timed CLI runs -------------------------------------------------------------------------------------
@dataclass
class Run:
    argv: list[str]
    rc: int
    wall: float
    user: float
    sys: float
    maxrss_mb: float  # ru_maxrss of this process (kB on Linux) in MiB
    stderr: str
    samples: list[tuple[float, float, float, float]] = field(default_factory=list)  # (s, RSS, anon, file MiB)
    stdout: str = ""  # with run_cli(stdout=True) only

    @property
    def cpu(self) -> float:
        return self.user + self.sys


_COMPILED = [False]


def byte_compile() -> None:
    """Byte-compile llmlabel once before timing it, as `pip install` does. Without this an editable checkout
    on a machine that sets PYTHONDONTWRITEBYTECODE (this one does) recompiles every module of llmlabel
    from source in every timed process."""
    if _COMPILED[0]:
        return
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("llmlabel")
    for where in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(where, quiet=1)
    _COMPILED[0] = True


def clean_env() -> dict[str, str]:
    # LLMLABEL_LOCAL_THREADS is a machine setting (the embedded model's threads), not a key or an option
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "LLMLABEL_")) or k == "LLMLABEL_LOCAL_THREADS"
    }
    return env


def _rss_mb(pid: int) -> tuple[float, float, float] | None:
    """(VmRSS, RssAnon, RssFile) of a live process in MiB: anonymous memory vs mapped file pages (e.g. SQLite mmap)."""
    try:
        vals = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "RssAnon:", "RssFile:")):
                vals[line.split(":")[0]] = int(line.split()[1]) / 1024
        return vals["VmRSS"], vals.get("RssAnon", float("nan")), vals.get("RssFile", float("nan"))
    except (OSError, KeyError):
        return None


CHILDREN: set[subprocess.Popen] = set()  # llmlabel processes running now (to stop them on a signal)


def run_cli(
    args: list[str],
    cwd: Path | None = None,
    sample_every: float | None = None,
    check: bool = True,
    timeout: float | None = None,
    stdout: bool = False,
) -> Run:
    """Run `llmlabel ARGS` as its own process; wall time from spawn to exit (start-up included), and that
    process's CPU and peak RSS from os.wait4. With sample_every, VmRSS is also polled from /proc; with stdout,
    what the command printed is kept (Run.stdout)."""
    argv = [LLMLABEL, *args]
    byte_compile()
    err = tempfile.TemporaryFile()
    out = tempfile.TemporaryFile() if stdout else None
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, env=clean_env(), stdout=out or subprocess.DEVNULL, stderr=err)
    CHILDREN.add(p)
    samples: list[tuple[float, float, float, float]] = []
    done = threading.Event()

    def poll() -> None:
        while not done.wait(sample_every):
            r = _rss_mb(p.pid)
            if r is not None:
                samples.append((time.perf_counter() - t0, *r))

    th = threading.Thread(target=poll, daemon=True) if sample_every else None
    if th:
        th.start()
    if timeout:
        killer = threading.Timer(timeout, p.kill)
        killer.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if timeout:
        killer.cancel()
    done.set()
    if th:
        th.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    CHILDREN.discard(p)
    err.seek(0)
    stderr = err.read().decode("utf-8", "replace")
    err.close()
    run = Run(argv, p.returncode, wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss / 1024, stderr, samples)
    if out:
        out.seek(0)
        run.stdout = out.read().decode("utf-8", "replace")
        out.close()
    if check and run.rc != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {run.rc}:\n{stderr[-3000:]}")
    return run


def label(input_csv: Path, config: Path, output: Path, **kw: Any) -> Run:
    return run_cli(["label", str(input_csv), "-c", str(config), "-o", str(output), "-q"], **kw)


def label_and_eval(inp: Path, config: Path, gold: Path, work: Path, fake: FakeLLM) -> tuple[Run, int, dict[str, Any]]:
    """`llmlabel label` into work/out.jsonl, then `llmlabel eval` of it against `gold`: the label run, the requests
    it paid fakellm (0 where the cache answered) and eval's report."""
    out, report = work / "out.jsonl", work / "eval.json"
    before = fake.requests()
    run = label(inp, config, out)
    paid = fake.requests() - before
    run_cli(["eval", str(out), "--gold", str(gold), "-o", str(report)])
    return run, paid, json.loads(report.read_text())


@dataclass
class SimulatedAudit:
    """One `llmlabel audit` process over simulated judges, and what it wrote."""

    run: Run
    requests: int  # answered by fakellm
    records: list[dict[str, Any]]  # the audit's output rows
    summary: dict[str, Any]  # its .summary.json


def simulated_audit(
    work: Path,
    inp: Path,
    known: Path,
    accuracies: list[float],
    model_prefix: str,
    args: list[str],
    task: dict[str, Any] | None = None,
) -> SimulatedAudit:
    """`llmlabel audit INP ARGS` into work/audit.jsonl, with one simulated judge an accuracy: fakellm, given the
    file `known` (the original labels, so it knows the truth), serves model `{model_prefix}-85` at 0.85 as judge
    `j85` (32 requests at once)."""
    models = {f"{model_prefix}-{round(a * 100)}": a for a in accuracies}
    with FakeLLM([known], extra=accuracy_args(models), log_dir=work) as fake:
        judges = [judge(f"j{round(a * 100)}", m, fake.base_url, 32) for m, a in models.items()]
        cfg = write_config(work / "audit.yaml", judges, work / "cache", task=task)
        out = work / "audit.jsonl"
        run = run_cli(["audit", str(inp), "-c", str(cfg), "-o", str(out), *args, "-q"])
        requests = fake.requests()
    summary = json.loads((work / "audit.jsonl.summary.json").read_text())
    return SimulatedAudit(run, requests, read_jsonl(out), summary)


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


@contextmanager
def tempdir(prefix: str, keep: str | None = None) -> Iterator[Path]:
    if keep:
        p = Path(keep)
        p.mkdir(parents=True, exist_ok=True)
        yield p
        return
    d = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def sample_parser(rows: int = 1000) -> argparse.ArgumentParser:
    """The options of a benchmark over a seeded sample of a data set: its size, its seed, the results file."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=rows)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    return ap


def timing_options(ap: argparse.ArgumentParser, results: str) -> None:
    """The options of a timed benchmark: how quiet the machine must be for a timed run, and how long to wait
    for it; --quick (tiny sizes, results in /tmp) and --out (the results file)."""
    ap.add_argument(
        "--load-max", type=float, default=0.7, help="wait for a 1-min load below this before each timed run"
    )
    ap.add_argument("--max-wait", type=float, default=600, help="seconds of waiting for the load, in all")
    ap.add_argument("--quick", action="store_true", help="tiny sizes; writes to /tmp unless --out")
    ap.add_argument("--out", help=f"results file (default benchmarks/results/{results})")


# -- results --------------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def cpu_probe() -> float:
    """Seconds for a fixed pure-Python loop: this shared machine's speed drifts by ~30% over hours, which the
    load average does not show; results record it so that runs can be compared."""
    t = time.perf_counter()
    s = 0
    for i in range(3_000_000):
        s += i
    return time.perf_counter() - t


def header(title: str, load_at_start: float | str, started: str, notes: list[str] | None = None) -> str:
    lines = [
        f"# {title}",
        "",
        f"- date: {started}",
        f"- command: `{command_line()}`",
        f"- machine: {machine()} (`nproc` = {nproc()})",
        f"- load average (1 min) at start: {load_at_start}",
        f"- CPU probe when the results were written (3M-step Python loop; lower is faster): {cpu_probe():.2f} s",
    ]
    if _COMPILED[0]:
        lines.append("- llmlabel was byte-compiled before the timed runs, as `pip install` does")
    lines += [f"- {n}" for n in notes or []]
    return "\n".join(lines) + "\n"


def write_result(name: str, text: str, out: Path | None = None) -> Path:
    path = out or RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n", encoding="utf-8")
    print(text)
    print(f"[bench] wrote {path}", file=sys.stderr)
    return path


def fmt(x: float, nd: int = 2) -> str:
    return f"{x:,.{nd}f}"
