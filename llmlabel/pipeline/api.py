"""The Python API: the CLI's commands as functions."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmlabel.config import Config, load_config, parse_config
from llmlabel.pipeline.runner import RunOptions, RunResult, run_job


def as_config(config: Config | Mapping[str, Any] | str | Path) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return parse_config(dict(config))
    return load_config(config)


def label(
    rows: Iterable[Mapping[str, Any] | str], config: Config | Mapping[str, Any] | str | Path, **options: Any
) -> list[dict[str, Any]]:
    """Label rows (dicts with the task's text column, or plain strings) and return the output rows.

    Uses the config's judges and cache exactly like `llmlabel label`; options are RunOptions fields
    (limit, max_cost, max_requests, ...)."""
    cfg = as_config(config)
    options.setdefault("progress", False)
    with tempfile.TemporaryDirectory(prefix="llmlabel-") as d:
        src, out = Path(d) / "input.jsonl", Path(d) / "output.jsonl"
        with open(src, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(
                    json.dumps({cfg.task.text_column: r} if isinstance(r, str) else dict(r), ensure_ascii=False) + "\n"
                )
        run_job(cfg, src, out, RunOptions(**options))
        return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def label_file(
    input_path: str | Path, output_path: str | Path, config: Config | Mapping[str, Any] | str | Path, **options: Any
) -> RunResult:
    """`llmlabel label INPUT -c CONFIG -o OUTPUT` as a function."""
    return run_job(as_config(config), input_path, output_path, RunOptions(**options))
