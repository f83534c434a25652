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


def job_tag(fp: dict[str, Any], output: Path) -> str:
    """The job's name in its batches' metadata: its input, answer settings and output."""
    raw = json.dumps({"fp": fp, "output": str(output.resolve())}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def api_for(entry: dict[str, Any], transport: Any = None) -> BatchAPI:
    """The batch endpoints of a journal entry's judge (the key is read from its environment variable)."""
    return BatchAPI(entry["base_url"], os.environ.get(entry["key_env"]) or NO_KEY, transport=transport)
