"""`llmlabel merge`: the outputs of the N shards of one job joined into the output one run would write.

The shards' rows go into one part file at their input positions; then the run's own final step
(`lifecycle.Output.write`) aggregates over all of them (weighted and Dawid-Skene are fitted on the whole corpus, not
per shard) and writes the output in input order. The shards' ledgers are summed per judge."""

from __future__ import annotations

import glob
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlabel.ensemble.multilabel import SetPolicy
from llmlabel.errors import InputError
from llmlabel.io.files import atomic_write
from llmlabel.io.gold import read_gold
from llmlabel.io.guard import Read, inputs
from llmlabel.io.ledger_file import read_ledger, totals
from llmlabel.io.output import PartFile, line
from llmlabel.io.paths import ERRORS, LEDGER, SHARD, ledger_path, shard_path, sidecar
from llmlabel.io.records import report_record
from llmlabel.io.rows import input_format, iter_rows
from llmlabel.io.values import text_form
from llmlabel.llm.ledger import COUNTERS, Ledger
from llmlabel.pipeline.fingerprint import differences
from llmlabel.pipeline.lifecycle import Output, check_writes
from llmlabel.pipeline.shard_manifest import IdOrder, load_shard, unpack, unsharded

_NESTED = ("probs", "candidates", "judges")  # output fields a CSV cell holds as JSON


@dataclass
class MergeResult:
    output: Path
    rows: int
    ledger: Ledger
    quality: dict[str, Any] = field(default_factory=dict)
    failed: int = 0  # rows with an error (each shard's --retry-errors asks them again)


def expand(given: list[str]) -> list[Path]:
    """The shard outputs: paths as given, or glob patterns (matches that are not shard outputs, such as
    their side files, are left out)."""
    out: list[Path] = []
    for g in given:
        if Path(g).exists() or not glob.has_magic(g):
            out.append(Path(g))
            continue
        found = sorted(Path(m) for m in glob.glob(g) if shard_path(m).is_file())
        if not found:
            raise InputError(f"no shard outputs match {g!r}; give the -o paths of the finished shard runs")
        out += found
    return out


def check_shards(paths: list[Path], metas: list[dict[str, Any]]) -> None:
    """One job's shards, each once, all of them; else one line saying what is wrong."""
    first, base = paths[0], unsharded(metas[0]["fingerprint"])
    for p, m in zip(paths[1:], metas[1:]):
        changed = differences(base, unsharded(m["fingerprint"]), "of the shards")
        if changed or m["limit"] != metas[0]["limit"]:
            what = ", ".join(changed or ["--limit"])
            raise InputError(f"{p} and {first} are shards of different jobs (different {what}); they are not merged")
    counts = {m["shard"][1] for m in metas}
    if len(counts) > 1:
        raise InputError(
            f"the shards were cut in different numbers of parts ({sorted(counts)}); merge one job's shards"
        )
    n = counts.pop()
    seen: dict[int, Path] = {}
    for p, m in zip(paths, metas):
        i = m["shard"][0]
        if i in seen:
            raise InputError(f"shard {i}/{n} is given twice ({seen[i]} and {p}); give each shard once")
        seen[i] = p
    missing = [f"{i}/{n}" for i in range(n) if i not in seen]
    if missing:
        raise InputError(f"missing shards {', '.join(missing)}; label them with --shard and merge all {n}")


def _revive(rec: dict[str, Any], p: Path, n: int) -> dict[str, Any]:
    """A record read back from a CSV or Parquet output (which hold probs and judges as JSON text): its JSON
    cells and numbers as the run wrote them, its id as the text the run knew it by."""
    try:
        for k in _NESTED:
            v = rec.get(k)
            if isinstance(v, str):
                rec[k] = json.loads(v) if v else ([] if k == "candidates" else None)
        for k in ("label", "confidence", "error"):
            if rec.get(k) == "":
                rec[k] = None
        if isinstance(rec.get("confidence"), str):
            rec["confidence"] = float(rec["confidence"])
    except ValueError:
        raise InputError(
            f"{p}: row {n} was edited (its {k} is not what llmlabel wrote); label that shard again"
        ) from None
    if rec.get("id") is not None and not isinstance(rec["id"], str):
        rec["id"] = text_form(rec["id"])  # a Parquet output's typed id, as the run's text of it
    return rec


def _fill(part: PartFile, paths: list[Path], metas: list[dict[str, Any]]) -> int:
    """Every shard's rows into the part file at their input positions. Returns the rows with an error."""
    failed = 0
    for p, m in sorted(zip(paths, metas), key=lambda pm: pm[1]["shard"][0]):
        positions = unpack(m["positions"])
        text_cells = input_format(p, "output") != ".jsonl"
        lines, n, order = [], 0, IdOrder()
        for n, rec in enumerate(iter_rows(p) if p.stat().st_size else [], 1):
            if n > len(positions):
                break
            rec = _revive(rec, p, n) if text_cells else rec
            order.add(text_form(rec.get("id")))
            failed += rec.get("error") is not None
            lines.append(line({"_i": positions[n - 1], **rec}))
            if len(lines) >= 4096:
                part.append_lines(lines)
                lines = []
        part.append_lines(lines)
        if n != len(positions):
            raise InputError(f"{p} has {n} rows where its shard run wrote {len(positions)}; label that shard again")
        if m.get("ids") and order.digest() != m["ids"]:
            raise InputError(
                f"{p}: its rows are not the ones, in the order, its shard run wrote (sorted or edited by hand?); "
                "restore the file, or label that shard again (its answers are cached: nothing is paid twice)"
            )
    return failed


def summed_ledger(paths: list[Path]) -> tuple[Ledger, list[dict[str, Any]]]:
    """Every run of every shard, summed per judge; and those runs, each marked with its output."""
    total, runs = Ledger(), []
    for p in paths:
        try:
            shard_runs = (read_ledger(ledger_path(p)) or {})["runs"]
        except (KeyError, TypeError):
            raise InputError(f"{p}: its ledger {ledger_path(p).name} is missing or unreadable") from None
        if not isinstance(shard_runs, list):
            shard_runs = [shard_runs]
        for n, run in enumerate(shard_runs):
            if not isinstance(run, dict) or not isinstance(run.get("judges") or {}, dict):
                raise InputError(f"{ledger_path(p)}: run {n + 1} is not a run this llmlabel wrote; restore the ledger")
            runs.append({"output": str(p), **run})
            for k in ("rows_done", "rows_skipped", "rows_failed"):
                setattr(total, k, getattr(total, k) + _count(run.get(k), ledger_path(p), f"run {n + 1}'s {k}"))
            for name, d in (run.get("judges") or {}).items():
                where = f"run {n + 1}'s judge {name!r}"
                if not isinstance(d, dict):
                    raise InputError(f"{ledger_path(p)}: {where} is not what llmlabel wrote; restore the ledger")
                prices = [
                    _count(d.get(k), ledger_path(p), f"{where} {k}", float) for k in ("price_input", "price_output")
                ]
                j = total.judges.get(name) or total.add_judge(name, str(d.get("model", "")), *prices)
                j.add({c: _count(d.get(c), ledger_path(p), f"{where} {c}") for c in COUNTERS})
    return total, runs


def shard_reads(shards: list[Path]) -> list[Read]:
    """What a merge reads: each shard output and the files beside it (its ledger and shard record)."""
    out = inputs(*shards, what="one of the shards")
    return out + [(sidecar(p, s), "a shard's own file") for p in shards for s in (LEDGER, SHARD, ERRORS)]


def _count(v: Any, path: Path, what: str, kind: type = int) -> Any:
    """A count or price from a shard's ledger file (a file may have been edited): a finite number >= 0, or
    one line saying which."""
    if v is None:
        return kind(0)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise InputError(f"{path}: {what} is {v!r}, not a number >= 0; restore the ledger (or fix that value)")
    return kind(v)


def merge_shards(given: list[str], output: str | Path) -> MergeResult:
    """Join the outputs of one job's shards into `output`, re-aggregated over every row."""
    paths = expand(given)
    out = Output(output, shard_reads(paths))  # (the one lifecycle: checked here, locked while written)
    output = out.path
    if not paths:
        raise InputError("no shard outputs given; pass the -o paths of the finished shard runs (or a glob)")
    metas = [load_shard(p) for p in paths]
    check_shards(paths, metas)
    m = metas[0]
    check_writes(None, output, inputs(m["gold"], what="the shards' gold: file"))
    gold = read_gold(m["gold"], m["id_column"]) if m["gold"] else None
    ledger, runs = summed_ledger(paths)
    with out:
        part = out.fresh_part(m["fingerprint"])  # (what an interrupted merge left is discarded)
        try:
            failed = _fill(part, paths, metas)
        finally:
            part.close()
        policy = SetPolicy(**m["set_policy"]) if m.get("set_policy") else None
        batch = m.get("batch_calibrated") or []
        rows, report = out.write(part, m["judges"], m["labels"], m["aggregate"], m["mode"], gold, policy, batch)
        quality = report_record(report)
        summary = ledger.to_dict()
        summary.pop("started")
        summary.pop("wall_seconds")
        if quality:
            summary["quality"] = quality
        data = {"runs": runs, "total": totals(runs), "merged": summary}
        atomic_write(ledger_path(output), json.dumps(data, indent=2))
        part.finished()
    return MergeResult(output, rows, ledger, quality, failed)
