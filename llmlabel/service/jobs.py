"""Batch jobs for `llmlabel serve`: the worker thread that runs the queued jobs of the job table (store.py).

A job is the CLI's resumable run (`run_job`, or `run_audit` for an audit, over a part file and the shared response
cache), so a server killed mid-job picks it up again on restart and pays only for rows that had no cached answer.
An audit job scores the whole file as `llmlabel audit` does: its results are that command's output records."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llmlabel.auditing.audit import AuditOptions, check_given_labels, run_audit
from llmlabel.config import Config, Judge
from llmlabel.errors import InputError, LLMLabelError, MissingColumn
from llmlabel.io.paths import audit_judges_path, part_path
from llmlabel.io.rows import input_format, scan
from llmlabel.llm.ledger import Ledger
from llmlabel.pipeline.options import Progress, RunOptions
from llmlabel.pipeline.run import run_job
from llmlabel.redaction import one_line, redact
from llmlabel.service.error_handlers import DETAIL
from llmlabel.service.store import JobRecord, JobStore

log = logging.getLogger("llmlabel.service.app")

# Ledger fields summed for /metrics (cost is derived from tokens and prices).
LEDGER_FIELDS = (
    "requests",
    "responses",
    "cache_hits",
    "retries",
    "reasks",
    "failed_rows",
    "calls_saved",
    "input_tokens",
    "output_tokens",
    "cost",
)


def validate_upload(path: Path, mode: str, label_column: str | None, cfg: Config, name: str) -> int:
    """Check an uploaded corpus before queueing it (columns, ids, readable rows, and for an audit the given
    labels, as `llmlabel audit` checks them); returns its row count. Errors name the upload, not its path here."""
    try:
        input_format(path)
        task = cfg.task
        total = scan(path, task.text_column, task.id_column, id_required="id_column" in task.model_fields_set)
        if mode == "audit":
            check_given_labels(path, cfg, label_column or "label")
    except InputError as e:
        fix = "; set the label_column field" if isinstance(e, MissingColumn) else ""
        raise InputError(str(e).replace(str(path), name) + fix) from None
    return total


@dataclass
class _Live:
    """A running job as the server thread sees it."""

    rec: JobRecord
    cancel: threading.Event = field(default_factory=threading.Event)
    why: str | None = None  # "cancel" (DELETE) or "shutdown" (server stopping: requeue)
    done_before: int = 0  # rows finished by earlier runs of this job
    ledger: Ledger | None = None  # this run's, live, from its first progress report on


@dataclass
class JobWorker:
    """Runs queued jobs one at a time on its own thread, each through `run_job` (`run_audit` for audits): the
    lifecycle of `llmlabel label` and `llmlabel audit`, with a progress callback and a cancel event."""

    cfg: Config
    judges: list[Judge]
    store: JobStore
    transport: httpx.AsyncBaseTransport | None = None
    progress_every: float = 1.0
    _thread: threading.Thread | None = None
    _wake: threading.Event = field(default_factory=threading.Event)
    _closing: threading.Event = field(default_factory=threading.Event)
    _live: _Live | None = None
    _pending_cancel: set[str] = field(default_factory=set)
    _totals: dict[str, dict[str, float]] = field(default_factory=dict)
    _totals_lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for jid in self.store.requeue_interrupted():
            log.info("job %s was interrupted; resuming it (finished rows are kept)", jid)
        self._thread = threading.Thread(target=self._loop, name="llmlabel-jobs", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the worker; a running job goes back to the queue and resumes on the next start.
        False if the job was still winding down after `timeout` (a restart requeues it then)."""
        self._closing.set()
        live = self._live
        if live is not None:
            self._stop(live, "shutdown")
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def cancel(self, jid: str) -> bool:
        """Cancel a queued or running job. Paid answers stay cached and finished rows stay in its part file."""
        if self.store.set_state_if(jid, "cancelled", ("queued",)):
            self.store.update(jid, finished=time.time())
            return True
        rec = self.store.get(jid)
        if rec is None or rec.state != "running":
            return False
        # Claimed by the worker but maybe not live yet: _execute looks at this set once it is.
        self._pending_cancel.add(jid)
        live = self._live
        if live is not None and live.rec.id == jid:
            self._stop(live, "cancel")
        return True

    @staticmethod
    def _stop(live: _Live, why: str) -> None:
        # The run stops as a budget stops it: requests in flight finish (they are paid for, so their answers
        # are cached), nothing new is sent, the part file is kept.
        live.why = why
        live.cancel.set()

    def live_status(self, jid: str) -> tuple[int, dict[str, Any]] | None:
        live = self._live
        if live is None or live.rec.id != jid or live.ledger is None:
            return None
        return live.done_before + live.ledger.rows_done, live.ledger.to_dict()

    def judge_totals(self) -> dict[str, dict[str, float]]:
        """Per-judge ledger sums over every batch run of this process, the running one included."""
        with self._totals_lock:
            out = {n: dict(v) for n, v in self._totals.items()}
        live = self._live
        if live is not None and live.ledger is not None:
            _add(out, live.ledger)
        return out

    # -- the worker thread --------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closing.is_set():
            rec = self.store.claim_next()
            if rec is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._execute(rec)
            except Exception as e:  # a job must never take the worker down with it
                log.error("job %s failed: %s", rec.id, one_line(f"{type(e).__name__}: {e}", DETAIL))
                self.store.update(
                    rec.id, state="failed", error=one_line(e, DETAIL) or type(e).__name__, finished=time.time()
                )
            finally:
                self._live = None
                self._pending_cancel.discard(rec.id)

    def _progress(self, live: _Live, p: Progress) -> None:
        # On the run's event-loop thread. Persisted so that GET works from the database and a killed
        # server's run still shows in the ledger.
        live.done_before, live.ledger = p.done - p.ledger.rows_done, p.ledger
        self.store.update(live.rec.id, rows_done=p.done, current=p.ledger.to_dict())

    def _execute(self, rec: JobRecord) -> None:
        live = _Live(rec)
        self._live = live
        if rec.id in self._pending_cancel:
            self._stop(live, "cancel")
        elif self._closing.is_set():
            self._stop(live, "shutdown")
        run = RunOptions(
            progress=False,
            progress_every=self.progress_every,
            on_progress=lambda p: self._progress(live, p),
            cancel=live.cancel,
            transport=self.transport,
        )
        # The server's judges (started once, at startup, when they are the embedded models) for every job.
        cfg = self.cfg.model_copy(update={"judges": self.judges})
        ledger: Ledger | None = None
        error = stopped = None
        quality: dict[str, Any] | None = None
        n = 0
        try:
            if rec.mode == "audit":
                audit = run_audit(
                    cfg,
                    rec.input,
                    rec.output,
                    AuditOptions(label_column=rec.label_column or "label", progress=False, run=run),
                )
                ledger, stopped, n = audit.ledger, audit.stopped_by, len(audit.records)
                quality = {k: v for k, v in audit.summary.items() if k != "input"}  # not the server's paths
            else:
                res = run_job(cfg, rec.input, rec.output, run)
                ledger, stopped, n, quality = res.ledger, res.stopped_by, res.rows, res.quality
        except LLMLabelError as e:  # a judge that failed for good, or input that changed since the upload
            # (the error's own line: how to go on is the service's, in _record)
            ledger, error = e.ledger, one_line(str(e), DETAIL)
        self._record(rec, live, ledger, error or stopped, quality or None, n)

    def _record(
        self,
        rec: JobRecord,
        live: _Live,
        ledger: Ledger | None,
        failed: str | None,
        quality: dict[str, Any] | None,
        n: int,
    ) -> None:
        """The job's state after a run: cancelled, done, requeued (the server stopped it) or failed (rows kept)."""
        runs = list(rec.runs)
        rows_done = rec.rows_done
        if ledger is not None:
            runs.append(ledger.to_dict())
            rows_done = live.done_before + ledger.rows_done
            with self._totals_lock:
                _add(self._totals, ledger)
        common: dict[str, Any] = {"runs": runs, "current": None, "rows_done": rows_done}
        if live.why == "cancel":
            self.store.update(rec.id, state="cancelled", finished=time.time(), **common)
        elif failed is None:  # finished, even if the server began to stop meanwhile
            if ledger is not None:
                runs[-1]["quality"] = quality
            common["rows_done"] = rec.rows_total
            self.store.update(rec.id, state="done", quality=quality, output_rows=n, finished=time.time(), **common)
        elif live.why == "shutdown":
            self.store.update(rec.id, state="queued", **common)
        else:
            error = f"{failed}; finished rows are kept: POST /v1/jobs/{rec.id}/resume to continue"
            self.store.update(rec.id, state="failed", error=error, finished=time.time(), **common)


def _add(totals: dict[str, dict[str, float]], ledger: Ledger) -> None:
    for name, j in ledger.judges.items():
        t = totals.setdefault(name, {"model": j.model, **dict.fromkeys(LEDGER_FIELDS, 0)})  # type: ignore[dict-item]
        for f in LEDGER_FIELDS:
            t[f] += getattr(j, f)


def partial_results(rec: JobRecord) -> Iterator[bytes]:
    """Rows finished so far, from the part file (complete lines only: the worker may be mid-write). An audit
    job's are its judges' answers: its scores need every row."""
    path = part_path(audit_judges_path(rec.output) if rec.mode == "audit" else rec.output)
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                return
            try:
                r = json.loads(line)
            except ValueError:
                return
            r.pop("_i", None)
            yield redact(json.dumps(r, ensure_ascii=False) + "\n").encode()


def file_lines(path: Path, chunk: int = 1 << 16) -> Iterator[bytes]:
    """A results file in blocks of whole lines, every known secret hidden (a judge may echo its key)."""
    block: list[str] = []
    size = 0
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            block.append(redact(line))
            size += len(line)
            if size >= chunk:
                yield "".join(block).encode("utf-8", "surrogateescape")
                block, size = [], 0
    if block:
        yield "".join(block).encode("utf-8", "surrogateescape")
