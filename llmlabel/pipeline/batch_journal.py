"""The journal of a `label --batch` job (OUTPUT.batch.json, written atomically): one entry per batch, written
before the batch is created and again once it exists, so that a rerun re-attaches instead of paying twice."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from llmlabel.io.files import atomic_write
from llmlabel.io.paths import batch_path
from llmlabel.llm.batch_api import BatchAPI
from llmlabel.llm.judge import NO_KEY


def journal_path(output: str | Path) -> Path:
    return batch_path(output)


def load_journal(output: str | Path) -> dict[str, Any]:
    p = journal_path(output)
    return json.loads(p.read_text()) if p.exists() else {"job": None, "batches": []}


def save_journal(output: str | Path, journal: dict[str, Any]) -> None:
    atomic_write(journal_path(output), json.dumps(journal, indent=1))


def apply_status(entry: dict[str, Any], b: dict[str, Any]) -> None:
    """A journal entry takes a batch's status together with what goes with it (its output and error files,
    counts, errors): a status without its files would let a rerun count a finished batch as collected with
    no answers, and buy its lines again."""
    entry["status"], entry["counts"] = b.get("status"), request_counts(b)
    entry["output_file_id"], entry["error_file_id"] = b.get("output_file_id"), b.get("error_file_id")
    errors = b.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    entry["errors"] = [
        str(x.get("message") or x.get("code")) if isinstance(x, dict) else str(x)
        for x in (data if isinstance(data, list) else [])
    ]


def request_counts(b: dict[str, Any]) -> dict[str, int]:
    """A batch's total / completed / failed line counts as the server reports them, untrusted: a count that is
    not a number >= 0 (null, a word, a negative) is 0, so progress lines and sums never break on it."""
    raw = b.get("request_counts")
    out = {}
    for k in ("total", "completed", "failed"):
        v = raw.get(k) if isinstance(raw, dict) else None
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and 0 <= v < 1e12
        out[k] = int(v) if ok and v is not None else 0
    return out


def run_tag(fp: dict[str, Any], output: Path) -> str:
    """The run's name in its batches' metadata (its input, answer settings and output): which batches are its own."""
    raw = json.dumps({"fp": fp, "output": str(output.resolve())}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def api_for(entry: dict[str, Any], transport: Any = None) -> BatchAPI:
    """The batch endpoints of a journal entry's judge (the key is read from its environment variable)."""
    return BatchAPI(entry["base_url"], os.environ.get(entry["key_env"]) or NO_KEY, transport=transport)
