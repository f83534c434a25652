"""What an unfinished run belongs to: its input file and every setting that changes the judges' answers.

A part file records this (io.output.PartFile's meta); a rerun whose fingerprint differs would merge rows of
another input or label set, so it refuses (or starts over with --restart). Settings that only re-aggregate
(aggregate, gold, batch_calibration) or pace and price the calls (concurrency, timeouts, prices) are left out: their rows stay valid."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from llmlabel.errors import InputError
from llmlabel.io.hfdata import is_dataset_source, source_files
from llmlabel.pipeline.row_labeler import RowLabeler

VERSION = 1
BLOCK = 1 << 20  # the input's first and last MiB are hashed, with its size and modification time
# Judge fields that do not change an answer (pacing, prices, how the request travels).
_NOT_ANSWERS = {
    "concurrency",
    "timeout",
    "max_attempts",
    "requests_per_minute",
    "tokens_per_minute",
    "price_per_million",
    "http_backend",
    "api_key_env",
    "batch_max_requests",
    "batch_max_bytes",
    "batch_calibration",  # applied at the whole-job refit, from the stored answers
}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def input_fingerprint(path: Path) -> dict[str, Any]:
    """Size, modification time and a hash of the first and last blocks: cheap for any size, and an edit, a
    truncation or a replaced file changes at least one of them."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(BLOCK))
        if st.st_size > BLOCK:
            fh.seek(max(BLOCK, st.st_size - BLOCK))
            h.update(fh.read(BLOCK))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "blocks": h.hexdigest()[:32]}


def _templates(prompts_dir: str | None) -> str | None:
    if not prompts_dir or not os.path.isdir(prompts_dir):
        return prompts_dir
    files = sorted(p for p in Path(prompts_dir).rglob("*") if p.is_file())
    return _digest({str(p.relative_to(prompts_dir)): p.read_bytes().hex() for p in files})


_SET = object()
_ADDED_TASK_FIELDS: dict[str, Any] = {
    "multi_label": False,
    "allow_empty": False,
    "label_threshold": 0.5,
    "shortlist": None,
    "shortlist_rounds": 2,
    "shortlist_pinned": [],
    "taxonomy": None,
    "taxonomy_threshold": 0.5,
}


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(BLOCK), b""):
                h.update(block)
    except OSError as e:  # (the run reports a missing file itself, in its own words)
        return f"unreadable: {e.strerror}"
    return h.hexdigest()[:16]


def answers_fingerprint(labeler: RowLabeler) -> dict[str, str]:
    """One short hash per setting that changes answers, named as the user knows it (to say what changed)."""
    cfg, task = labeler.cfg, labeler.cfg.task
    # Fields added since part files were first fingerprinted count only when set, so that unfinished runs of
    # earlier versions still resume (a multi-label task's rows are asked another prompt: they never would).
    dumped = task.model_dump(exclude={"examples": {"__all__": {"labels"}}} if not task.multi_label else None)
    fp = {f"task.{k}": _digest(v) for k, v in dumped.items() if _ADDED_TASK_FIELDS.get(k, _SET) != v}
    if task.examples_file:  # its rows become the prompts' demonstrations: hashed by content, as templates are
        fp["task.examples_file content"] = _file_digest(Path(task.examples_file))
    fp["mode"] = _digest(labeler.kind)
    fp["prompts_dir templates"] = _digest(_templates(cfg.prompts_dir))
    fp["cascade"] = _digest(cfg.cascade.model_dump() if cfg.cascade else None)
    fp["label column"] = _digest(labeler.opts.given_label_column)
    fp["judges"] = _digest([j.name for j in labeler.judges])
    for j in labeler.judges:
        d = j.model_dump(exclude=_NOT_ANSWERS)
        if j.cache_as:
            d.pop("base_url")  # local servers change port from run to run: cache_as names the endpoint
        if j.samples == 1:
            del d["samples"]  # as before the field existed: unfinished runs of earlier versions still resume
        if not j.per_label:
            del d["per_label"]  # (the same)
        fp[f"judge '{j.name}'"] = _digest(d)
    if labeler.opts.shard is not None:  # only when sharded: unsharded part files of older versions stay valid
        fp["shard"] = str(labeler.opts.shard)
    return fp


def fingerprint(labeler: RowLabeler, source: Path | list[Path] | str) -> dict[str, Any]:
    """`source`: the input file; or the files a Ray run reads (one file: the same fingerprint as a local run
    of it, so either engine continues the other's run); or an object-store URI, known by its name only."""
    if isinstance(source, Path) and is_dataset_source(source):  # a dataset folder: its files
        source = source_files(source)[1]
    if isinstance(source, str):
        inp: dict[str, Any] = {"uri": source}
    elif isinstance(source, Path) or len(source) == 1:
        inp = input_fingerprint(source if isinstance(source, Path) else source[0])
    else:
        inp = {"files": {str(p): input_fingerprint(p) for p in source}}
    return {"version": VERSION, "input": inp, "answers": answers_fingerprint(labeler)}


def differences(recorded: dict[str, Any], current: dict[str, Any], input_path: Path | str) -> list[str]:
    """What differs between two fingerprints of the same version, named as the user knows it."""
    changed = []
    if recorded.get("input") != current["input"]:
        changed.append(f"input (the file {input_path} was modified or replaced)")
    old, new = recorded.get("answers") or {}, current["answers"]
    return changed + [k for k in new if old.get(k) != new[k]] + [k for k in old if k not in new]


def check_resumable(
    recorded: dict[str, Any] | None, current: dict[str, Any], input_path: Path | str, part: Path
) -> None:
    """Refuse to continue an unfinished run that belongs to another input or other settings."""
    if recorded is None or recorded.get("version") != VERSION:
        changed = ["run (its part file records no fingerprint: an older llmlabel, or it was edited)"]
    else:
        changed = differences(recorded, current, input_path)
    if changed:
        raise InputError(
            f"{part} holds the rows of an unfinished run with a different {', '.join(changed)}; they are not "
            "merged. Rerun with --restart (restart=True in Python) to discard them and start over (cached answers are "
            "kept and reused), "
            "or restore what changed to continue that run"
        )
