"""The cost ledger: what each judge was asked, what it cost, and what the cache saved."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from llmlabel.io.ledger_file import ROWS, LedgerLog, save_run


@dataclass
class JudgeLedger:
    name: str
    model: str
    price_input: float = 0.0  # $ per million tokens
    price_output: float = 0.0
    requests: int = 0  # HTTP requests sent (each retry is one)
    responses: int = 0  # 200 answers received (billed)
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    failed_rows: int = 0
    calls_saved: int = 0  # rows a cascade settled without this judge
    input_tokens: int = 0
    output_tokens: int = 0
    odd_usage: int = 0  # token counts the server reported that were unusable or too large (clamped)

    @property
    def cost(self) -> float:
        return (self.input_tokens * self.price_input + self.output_tokens * self.price_output) / 1e6

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_log"}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost"] = round(self.cost, 6)
        return d

    def counts(self) -> dict[str, int]:
        return {c: getattr(self, c) for c in COUNTERS}

    def add(self, counts: Mapping[str, int], logged: bool = False) -> None:
        """Add another ledger's counts (a shard's run, a Ray actor's report) to this one. `logged`: they are in
        this run's log already (the actor wrote them there itself), so they are not written again."""
        for c in COUNTERS:
            (object.__setattr__ if logged else setattr)(self, c, getattr(self, c) + counts.get(c, 0))

    def __setattr__(self, name: str, value: Any) -> None:
        # Attached to a run's log (Ledger.record), each change of a counter is appended as it happens: what a
        # killed run paid stays in the ledger. The increments stay plain `ledger.requests += 1`.
        log: _Pending | None = self.__dict__.get("_log")
        if log is not None and name in _COUNTED:
            delta = value - getattr(self, name)
            object.__setattr__(self, name, value)
            if delta:
                log.count(self.name, name, delta)
            return
        object.__setattr__(self, name, value)


# What a judge's ledger counts (the rest names it and prices it): summed across shards and Ray actors.
COUNTERS = tuple(f.name for f in fields(JudgeLedger) if f.name not in ("name", "model", "price_input", "price_output"))
_COUNTED = frozenset(COUNTERS) | frozenset(ROWS)
# Written to the log at once: a request about to be sent, and an answer's tokens (output_tokens is counted last
# of an answer's figures). The others (responses, input tokens, cache hits, rows) ride along on the next line.
_PAID = frozenset(("requests", "output_tokens"))


class _Pending:
    """A run's counter changes on their way to its log: paid ones are written at once (with whatever unpaid
    changes wait), the rest on the next paid one or at the end."""

    def __init__(self, log: LedgerLog, ledger: Path) -> None:
        self.log, self.ledger = log, ledger
        self.judges: dict[str, dict[str, int]] = {}
        self.rows: dict[str, int] = {}

    def count(self, judge: str | None, name: str, delta: int) -> None:
        d = self.rows if judge is None else self.judges.setdefault(judge, {})
        d[name] = d.get(name, 0) + delta
        if name in _PAID:
            self.flush()

    def flush(self) -> None:
        if not self.judges and not self.rows:
            return
        # Formatted by hand (names as JSON strings, counts as ints): one line per paid request, so it is cheap.
        parts = []
        if self.judges:
            c = ",".join(f"{_name(n)}:{{{_counts(d)}}}" for n, d in self.judges.items())
            parts.append(f'"c":{{{c}}}')
        if self.rows:
            parts.append(f'"rows":{{{_counts(self.rows)}}}')
        self.log.write_raw(",".join(parts))
        self.judges, self.rows = {}, {}


def _counts(d: dict[str, int]) -> str:
    return ",".join(f'"{k}":{int(v)}' for k, v in d.items())


_NAMES: dict[str, str] = {}


def _name(n: str) -> str:
    s = _NAMES.get(n)
    if s is None:
        import json

        s = _NAMES[n] = json.dumps(n)
    return s


@dataclass
class Ledger:
    judges: dict[str, JudgeLedger] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    rows_done: int = 0
    rows_skipped: int = 0  # already in the output from an earlier run
    rows_failed: int = 0
    run_id: str | None = None  # once recording (`record`): this run's name in the ledger file and its log

    def __getstate__(self) -> dict[str, Any]:
        # (an open log stays with its process)
        return {k: v for k, v in self.__dict__.items() if k not in ("_log", "_attached")}

    def add_judge(self, name: str, model: str, price_input: float, price_output: float) -> JudgeLedger:
        j = JudgeLedger(name, model, price_input, price_output)
        self.judges[name] = j
        return j

    @property
    def cost(self) -> float:
        return sum(j.cost for j in self.judges.values())

    @property
    def requests(self) -> int:
        return sum(j.requests for j in self.judges.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "wall_seconds": round(time.time() - self.started, 3),
            "rows_done": self.rows_done,
            "rows_skipped": self.rows_skipped,
            "rows_failed": self.rows_failed,
            "requests": self.requests,
            "cost": round(self.cost, 6),
            "judges": {n: j.to_dict() for n, j in self.judges.items()},
        }

    def table(self) -> str:
        cols = ["judge", "model", "requests", "cache hits", "retries", "reasks", "saved", "in tok", "out tok", "$"]
        rows = [
            [
                j.name,
                j.model,
                j.requests,
                j.cache_hits,
                j.retries,
                j.reasks,
                j.calls_saved,
                j.input_tokens,
                j.output_tokens,
                f"{j.cost:.4f}",
            ]
            for j in self.judges.values()
        ]
        rows.append(
            [
                "total",
                "",
                self.requests,
                sum(j.cache_hits for j in self.judges.values()),
                sum(j.retries for j in self.judges.values()),
                sum(j.reasks for j in self.judges.values()),
                sum(j.calls_saved for j in self.judges.values()),
                sum(j.input_tokens for j in self.judges.values()),
                sum(j.output_tokens for j in self.judges.values()),
                f"{self.cost:.4f}",
            ]
        )
        widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(cols)]
        fmt = lambda r: "  ".join(
            str(v).rjust(w) if i > 1 else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths))
        )
        lines = [fmt(cols), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
        lines.append(
            f"rows: {self.rows_done} labeled this run, {self.rows_skipped} already done, "
            f"{self.rows_failed} with errors; {time.time() - self.started:.1f}s"
        )
        return "\n".join(lines)

    def __setattr__(self, name: str, value: Any) -> None:
        log: _Pending | None = self.__dict__.get("_log")
        if log is not None and name in ROWS:
            delta = value - getattr(self, name)
            object.__setattr__(self, name, value)
            if delta:
                log.count(None, name, delta)
            return
        object.__setattr__(self, name, value)

    def record(self, path: Path, kind: str | None = None) -> None:
        """From now on, append this run's spend to the log beside the ledger file `path` as it happens (see
        io.ledger_file): a run that never gets to `save` (kill -9, a full disk, a lost driver) still shows there."""
        self.close_log()
        self.run_id = uuid.uuid4().hex[:12]
        pending = _Pending(LedgerLog(path, self.run_id), path)
        start: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "judges": {
                n: {"model": j.model, "price_input": j.price_input, "price_output": j.price_output}
                for n, j in self.judges.items()
            },
        }
        if kind:
            start["kind"] = kind
        pending.log.write({"start": start})
        for c in ROWS:  # what was counted before the log was opened
            if getattr(self, c):
                pending.count(None, c, getattr(self, c))
        for j in self.judges.values():
            for c in COUNTERS:
                if getattr(j, c):
                    pending.count(j.name, c, getattr(j, c))
            j.__dict__["_log"] = pending
        pending.flush()
        self.__dict__["_log"] = pending

    @property
    def log_target(self) -> tuple[str, str, str] | None:
        """(host, ledger file, run id) while recording: where a Ray actor of this run appends its own spend."""
        pending: _Pending | None = self.__dict__.get("_log")
        if pending is None or self.run_id is None:
            return None
        return socket.gethostname(), str(pending.ledger.resolve()), self.run_id

    def attach(self, target: tuple[str, str, str]) -> None:
        """Append this ledger's judge counters to another process's run log (a Ray actor's, to its driver's run):
        what the actor pays is on disk even when the driver dies before hearing of it. Only on the driver's
        machine (elsewhere the same path is another file): there the actor's reports are all the driver has."""
        host, path, run = target
        if host != socket.gethostname():
            return
        pending = _Pending(LedgerLog(path, run), Path(path))
        for j in self.judges.values():
            j.__dict__["_log"] = pending
        self.__dict__["_attached"] = pending

    @property
    def attached_ok(self) -> bool:
        pending: _Pending | None = self.__dict__.get("_attached")
        return pending is not None and pending.log.broken is None

    def close_log(self, state: str | None = None) -> None:
        """Stop appending to the log (writing what is pending, and `state` as the run's end)."""
        pending: _Pending | None = self.__dict__.pop("_log", None)
        if pending is None:
            return
        for j in self.judges.values():
            j.__dict__.pop("_log", None)
        pending.flush()
        if state:
            pending.log.write({"end": state})
        pending.log.close()

    def save(self, path: Path, state: str = "finished") -> None:
        """Add this run to the ledger file, with the runs its log holds (killed runs, as "interrupted"), so the
        file shows what every run of a job cost."""
        self.close_log(state)
        entry = self.to_dict()
        if self.run_id:
            entry = {"run": self.run_id, "state": state, **entry}
        save_run(path, entry)
