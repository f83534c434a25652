"""The ledger on disk: OUTPUT.ledger.json (what every run of an output cost) and, while runs are going,
OUTPUT.ledger.jsonl, the log each run appends to as it goes.

A run writes its spend to the log line by line (each line flushed to the kernel, no fsync: a kill -9 loses
nothing, a power cut the last seconds), so that no paid request is forgotten when the run never gets to write
its summary (kill -9, a full disk at the final write, a lost Ray driver). `read_ledger` summarizes the JSON and
the log together: a run of the log that never ended is shown with state "interrupted". A run that ends folds
the log into the JSON (atomically, each run under its id) and then removes it; a kill between the two steps
leaves runs in both, and the id keeps them from counting twice.

Log lines, each tagged with its run's id: {"start": {...}} (time, kind, judges' models and prices),
{"c": {judge: {counter: delta}}}, {"rows": {counter: delta}}, {"batch": {judge: {counter: delta, prices}}, "batch_id": id}
(a collected batch's spend, at batch prices; counted once per batch id) and {"end": state}."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, TextIO

from llmlabel.io.files import atomic_write
from llmlabel.io.paths import ledger_log_path

ROWS = ("rows_done", "rows_skipped", "rows_failed")
TOKENS = ("input_tokens", "output_tokens")


class LedgerLog:
    """One run's append-only log (OUTPUT.ledger.jsonl). A write that fails (a full disk) turns the log off, never
    the run: the run's summary, written from memory when it ends, still counts everything."""

    def __init__(self, ledger: str | Path, run: str) -> None:
        self.path, self.run = ledger_log_path(ledger), run
        self._fh: TextIO | None = None
        self._head = ""
        self.broken: str | None = None

    def write(self, rec: dict[str, Any]) -> None:
        self.write_raw(json.dumps(rec, separators=(",", ":"))[1:-1])

    def write_raw(self, fields: str) -> None:
        """A line of the run's record: `fields` are the members of a JSON object, without its braces."""
        if self.broken is not None:
            return
        try:
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8", buffering=1)  # line-buffered: a write per line
                self._head = '{"run":"%s",' % self.run
            self._fh.write(f"{self._head}{fields}}}\n")
        except (OSError, ValueError) as e:
            self.broken = getattr(e, "strerror", None) or str(e)
            self.close()

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


def _blank_judge(name: str, d: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "model": d.get("model", ""),
        "price_input": d.get("price_input", 0.0),
        "price_output": d.get("price_output", 0.0),
    }


def _batch_cost(batch: dict[str, Any]) -> float:
    return sum(
        (
            j.get("input_tokens", 0) * j.get("price_batch_input", 0.0)
            + j.get("output_tokens", 0) * j.get("price_batch_output", 0.0)
        )
        / 1e6
        for j in (batch.get("judges") or {}).values()
    )


def _fold(path: Path) -> list[dict[str, Any]]:
    """The runs of a log, in the order they started, each summarized as a finished run's entry is."""
    runs: dict[str, dict[str, Any]] = {}
    batches: set[str] = set()
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    for raw in lines:
        try:
            rec = json.loads(raw)
            rid = str(rec["run"])
        except (ValueError, KeyError, TypeError):
            continue  # the last line of a killed run may be cut short
        run = runs.setdefault(
            rid,
            {
                "run": rid,
                "state": "interrupted",
                "started": None,
                "rows_done": 0,
                "rows_skipped": 0,
                "rows_failed": 0,
                "judges": {},
            },
        )
        if isinstance(rec.get("start"), dict):
            s = rec["start"]
            run["started"] = s.get("started")
            if s.get("kind"):
                run["kind"] = s["kind"]
            for name, d in (s.get("judges") or {}).items():
                run["judges"].setdefault(name, _blank_judge(name, d))
        for name, d in (rec.get("c") or {}).items():
            j = run["judges"].setdefault(name, _blank_judge(name, {}))
            for k, v in d.items():
                j[k] = j.get(k, 0) + v
        for k, v in (rec.get("rows") or {}).items():
            run[k] = run.get(k, 0) + v
        if rec.get("batch_id") in batches:
            continue  # collected again by a rerun after a kill that came before its journal heard: paid once
        if rec.get("batch_id"):
            batches.add(rec["batch_id"])
        for name, d in (rec.get("batch") or {}).items():
            b = run.setdefault("batch", {"judges": {}})["judges"].setdefault(name, {})
            for k, v in d.items():
                b[k] = v if k.startswith("price") else b.get(k, 0) + v
        if isinstance(rec.get("end"), str):
            run["state"] = rec["end"]
    out = []
    for run in runs.values():
        for j in run["judges"].values():
            j["cost"] = round(
                (j.get("input_tokens", 0) * j["price_input"] + j.get("output_tokens", 0) * j["price_output"]) / 1e6, 6
            )
        run["requests"] = sum(j.get("requests", 0) for j in run["judges"].values())
        cost = sum(j["cost"] for j in run["judges"].values())
        if "batch" in run:
            for j in run["batch"]["judges"].values():
                j["cost"] = round(_batch_cost({"judges": {"x": j}}), 6)
            run["batch"]["cost"] = round(_batch_cost(run["batch"]), 6)
            cost += run["batch"]["cost"]
        run["cost"] = round(cost, 6)
        out.append(run)
    return out


def amount(v: Any) -> float:
    """A count or cost read back from a ledger file: a finite number >= 0, else 0 (the file may be edited)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        return 0.0
    return float(v)


def totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests and dollars over every run (each run's cost includes its Batch API spend); a figure edited into
    something that is no amount counts as 0 rather than breaking every later run's save."""
    return {
        "requests": int(sum(amount(r.get("requests", 0)) for r in runs)),
        "batch_lines": int(
            sum(
                amount(j.get("lines", 0))
                for r in runs
                for j in ((r.get("batch") or {}).get("judges") or {}).values()
                if isinstance(j, dict)
            )
        ),
        "cost": round(sum(amount(r.get("cost", 0)) for r in runs), 6),
    }


def read_ledger(path: str | Path) -> dict[str, Any] | None:
    """{"runs": [...], "total": {...}}: the finished runs of OUTPUT.ledger.json and the runs its log holds (those
    that never ended as "interrupted"), or None when there is neither."""
    path = Path(path)
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            data = loaded if isinstance(loaded, dict) else {}
        except (ValueError, OSError, UnicodeDecodeError):
            data = {}
    log = ledger_log_path(path)
    if not data and not log.is_file():
        return None
    found = data.get("runs") or []
    runs = [r for r in (found if isinstance(found, list) else [found]) if isinstance(r, dict)]
    known = {r.get("run") for r in runs if r.get("run")}
    runs += [r for r in _fold(log) if r["run"] not in known]
    out = {**data, "runs": runs, "total": totals(runs)}
    return out


def save_run(path: str | Path, run: dict[str, Any]) -> None:
    """Add a finished (or stopped) run's entry to the ledger, with every run its log holds, then drop the log."""
    path = Path(path)
    data = read_ledger(path) or {"runs": []}
    logged = next((r for r in data["runs"] if run.get("run") and r.get("run") == run["run"]), None)
    runs = [r for r in data["runs"] if r is not logged]
    runs.append(_with_logged(run, logged) if logged is not None else run)
    atomic_write(path, json.dumps({"runs": runs, "total": totals(runs)}, indent=2))
    with contextlib.suppress(OSError):
        os.unlink(ledger_log_path(path))


def _with_logged(run: dict[str, Any], logged: dict[str, Any]) -> dict[str, Any]:
    """A run's own summary, each count raised to what its log holds where that is more: a Ray actor that was
    stopped (or lost) before its report reached the driver had appended its spend to the log itself."""
    run = {**run, "judges": {n: dict(j) for n, j in (run.get("judges") or {}).items()}}
    for name, lj in (logged.get("judges") or {}).items():
        j = run["judges"].setdefault(name, _blank_judge(name, lj))
        for k, v in lj.items():
            if isinstance(v, int) and not k.startswith("price") and v > j.get(k, 0):
                j[k] = v
        j["cost"] = round(
            (
                j.get("input_tokens", 0) * j.get("price_input", 0.0)
                + j.get("output_tokens", 0) * j.get("price_output", 0.0)
            )
            / 1e6,
            6,
        )
    run["requests"] = sum(j.get("requests", 0) for j in run["judges"].values())
    run["cost"] = round(sum(j["cost"] for j in run["judges"].values()) + _batch_cost(run.get("batch") or {}), 6)
    return run


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
