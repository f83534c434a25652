"""The cost ledger: what each judge was asked, what it cost, and what the cache saved."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost"] = round(self.cost, 6)
        return d

    def counts(self) -> dict[str, int]:
        return {c: getattr(self, c) for c in COUNTERS}

    def add(self, counts: Mapping[str, int]) -> None:
        """Add another ledger's counts (a shard's run, a Ray actor's report) to this one."""
        for c in COUNTERS:
            setattr(self, c, getattr(self, c) + counts.get(c, 0))


def amount(v: Any) -> float:
    """A count or cost read back from a ledger file: a finite number >= 0, else 0 (the file may be edited)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        return 0.0
    return float(v)


# What a judge's ledger counts (the rest names it and prices it): summed across shards and Ray actors.
COUNTERS = tuple(f.name for f in fields(JudgeLedger) if f.name not in ("name", "model", "price_input", "price_output"))


@dataclass
class Ledger:
    judges: dict[str, JudgeLedger] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    rows_done: int = 0
    rows_skipped: int = 0  # already in the output from an earlier run
    rows_failed: int = 0

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

    def save(self, path: Path) -> None:
        """Append this run to the ledger file, so the file shows what every run of a job cost."""
        runs: list[Any] = []
        if path.exists():
            try:
                runs = json.loads(path.read_text()).get("runs", [])
            except (ValueError, AttributeError):
                runs = []
        if not isinstance(runs, list):  # a file edited by hand: its runs are kept, the totals skip what is not one
            runs = [runs]
        runs.append(self.to_dict())
        done = [r for r in runs if isinstance(r, dict)]
        total = {
            "requests": int(sum(amount(r.get("requests")) for r in done)),
            "cost": round(sum(amount(r.get("cost")) for r in done), 6),
        }
        from llmlabel.io.files import atomic_write

        atomic_write(path, json.dumps({"runs": runs, "total": total}, indent=2))
