"""The files written beside an output, named in one place: OUTPUT plus a suffix."""

from __future__ import annotations

from pathlib import Path

PART = ".part"  # rows appended as they finish, while a run is incomplete (io.output.PartFile)
LOCK = ".lock"  # held by the one run writing the output (io.lock.output_lock)
ERRORS = ".errors.jsonl"  # the rows that ended with an error in the last finished run (kept on a plain rerun)
LEDGER = ".ledger.json"  # what every run of the output cost (llm.ledger.Ledger.save)
LEDGER_LOG = ".ledger.jsonl"  # what the runs not yet in it spent, appended as they go (io.ledger_file)
EVAL = ".eval.json"  # `llmlabel eval`'s report
AUDIT_JUDGES = ".judges.jsonl"  # `llmlabel audit`: the judges' answers (a labeling run's output)
AUDIT_SUMMARY = ".summary.json"  # `llmlabel audit`: flag counts, estimated precision, per-class noise
SHARD = ".shard.json"  # a finished `--shard I/N` output: what `llmlabel merge` needs (pipeline.shard_manifest)
BATCH = ".batch.json"  # `llmlabel label --batch`: the job's batches (pipeline.batch_journal)
REVIEW = ".review.json"  # `llmlabel review`: its seed, validation sample, rows asked and answers (review.loop)


def sidecar(output: str | Path, suffix: str) -> Path:
    p = Path(output)
    return p.with_name(p.name + suffix)


def part_path(output: str | Path) -> Path:
    return sidecar(output, PART)


def lock_path(output: str | Path) -> Path:
    return sidecar(output, LOCK)


def errors_path(output: str | Path) -> Path:
    return sidecar(output, ERRORS)


def ledger_path(output: str | Path) -> Path:
    return sidecar(output, LEDGER)


def ledger_log_path(ledger: str | Path) -> Path:
    """The log beside a ledger file (OUTPUT.ledger.json -> OUTPUT.ledger.jsonl)."""
    return Path(ledger).with_suffix(".jsonl")


def eval_path(output: str | Path) -> Path:
    return sidecar(output, EVAL)


def audit_judges_path(output: str | Path) -> Path:
    return sidecar(output, AUDIT_JUDGES)


def audit_summary_path(output: str | Path) -> Path:
    return sidecar(output, AUDIT_SUMMARY)


def shard_path(output: str | Path) -> Path:
    return sidecar(output, SHARD)


def batch_path(output: str | Path) -> Path:
    return sidecar(output, BATCH)


def review_state_path(output: str | Path) -> Path:
    return sidecar(output, REVIEW)
