"""The server's state: settings, the judges, the synchronous row labelers, the batch queue, request counters;
and how synchronous items are labeled (as the rows of `llmlabel label`, through the local executor)."""

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import HTTPException

from llmlabel import __version__
from llmlabel.config import Config, Judge
from llmlabel.ensemble.combine import refit
from llmlabel.errors import LLMLabelError
from llmlabel.io.records import POSITION, TAXONOMY_FIELDS, from_record, to_record
from llmlabel.llm.ledger import Ledger
from llmlabel.pipeline.executors import LocalExecutor, RowSource
from llmlabel.pipeline.lifecycle import RowLabelers
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.row_labeler import OUTCOME, RowLabeler
from llmlabel.pipeline.run_state import RunState
from llmlabel.redaction import one_line, redact_obj
from llmlabel.service.auth import AuthFailures
from llmlabel.service.jobs import JobWorker
from llmlabel.service.store import JobStore, StateLock

log = logging.getLogger("llmlabel.service.app")


@dataclass
class ServerState:
    cfg: Config
    token: str | None
    state_dir: Path
    max_items: int
    max_body_bytes: int
    max_upload_bytes: int
    dispute_threshold: float
    transport: httpx.AsyncBaseTransport | None
    max_text_chars: int = 200_000  # per synchronous item (see check_text_sizes)
    allowed_hosts: frozenset[str] = frozenset()  # names besides the loopback ones (see auth.host_allowed)
    allowed_origins: frozenset[tuple[str, str, int]] = frozenset()  # auth.origin_key of each allowed origin
    judges: list[Judge] = field(default_factory=list)
    model_version: str = ""
    labelers: RowLabelers = field(init=False)  # the items' row labelers by prompt kind, made in the server's loop
    store: JobStore | None = None
    lock: StateLock | None = None
    worker: JobWorker | None = None
    http: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    # Label Studio (routes_labelstudio): choice -> task label mappings, the /predict deadline, whether a
    # webhook without credentials is refused, the gold store, and predictions still running past a deadline.
    ls_label_map: dict[str, str] = field(default_factory=dict)
    predict_deadline: float = 80.0
    webhook_needs_auth: bool = False
    gold: Any = None  # service.gold.GoldStore, opened by the lifespan
    background: set[asyncio.Future[Any]] = field(default_factory=set)
    auth_failures: AuthFailures = field(default_factory=AuthFailures)  # per-client backoff after wrong tokens

    def __post_init__(self) -> None:
        # the items' row labelers and their cache, closed by the lifespan (app.py)
        self.labelers = RowLabelers(self.cfg.cache_dir)

    def http_count(self, method: str, route: str, status: int, seconds: float) -> None:
        c = self.http.setdefault((method, route, status), [0, 0.0])
        c[0] += 1
        c[1] += seconds

    async def labeler(self, kind: str, labels: tuple[str, ...] | None = None) -> RowLabeler:
        """The job of a prompt kind; with `labels` (a Label Studio project's choices, mapped to the task's
        labels), one whose judges choose among those labels only."""
        key = kind if labels is None or list(labels) == self.cfg.task.label_names else f"{kind}:{json.dumps(labels)}"
        opts = RunOptions(progress=False, kind=kind, given_label_column="label", transport=self.transport)
        labeler = self.labelers.get(key, item_config(self.cfg, labels), self.judges, opts)
        await labeler.ensure_calibrated()  # as a file run's (content-free prompts, cached after the first start)
        return labeler


def check_text_sizes(texts: list[str], limit: int) -> None:
    """413 for a synchronous item longer than the limit. A judge reads at most its max_text_tokens anyway, and
    tokenizing megabytes of text would hold the server's event loop (every other client) for seconds."""
    for i, t in enumerate(texts):
        if len(t) > limit:
            raise HTTPException(
                413,
                f"item {i}: text of {len(t)} characters is over the limit of {limit} (--max-text-chars); "
                "judges read only its first max_text_tokens: cut it, or send the file to POST /v1/jobs",
            )


def model_version(cfg: Config, judges: list[Judge]) -> str:
    what = json.dumps(
        [cfg.task.model_dump(), [(j.name, j.model, j.base_url) for j in judges], cfg.mode], sort_keys=True, default=str
    )
    return f"llmlabel-{__version__}-{hashlib.sha256(what.encode()).hexdigest()[:8]}"


def item_config(cfg: Config, labels: tuple[str, ...] | None = None) -> Config:
    """The config the synchronous endpoints label with: an item is an input row with the columns `text` (and
    `label`, the given label), whatever columns the config's task reads from files. With `labels` (a subset of
    the task's), the task's other labels and the examples that use them are left out."""
    update: dict[str, Any] = {"text_column": "text", "id_column": "id"}
    if labels is not None and list(labels) != cfg.task.label_names:
        keep = set(labels)
        update["labels"] = {lab: cfg.task.labels[lab] for lab in labels}
        update["examples"] = [ex for ex in cfg.task.examples if {ex.label or "", *(ex.candidates or [])} - {""} <= keep]
    task = cfg.task.model_copy(update=update)
    return cfg.model_copy(update={"task": task})


class ItemSink:
    """Where a request's finished items go (a Sink): each record at its item's place, and `on_row(i, outcome)`
    told of each as it finishes (Label Studio's /predict answers what is done by its deadline)."""

    def __init__(self, n: int, on_row: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self.records: list[dict[str, Any] | None] = [None] * n
        self._on_row = on_row

    def append(self, rec: dict[str, Any]) -> None:
        i = rec[POSITION]
        self.records[i] = rec
        if self._on_row is not None:
            self._on_row(i, outcome(rec))

    def append_lines(self, lines: list[bytes]) -> None:
        for b in lines:  # the bulk cache pass hands over serialised rows
            self.append(json.loads(b))


async def run_items(labeler: RowLabeler, rows: list[tuple[int, dict[str, Any]]], sink: ItemSink) -> None:
    """Label a request's rows (item position, {"text", and "label" when given}) as `llmlabel label` labels a
    file's: through the local executor (the bulk cache pass, the window of rows in flight, the clean stop), with
    a run state of the request's own, so a judge that fails one request stops no other. Its error (a dead
    judge, a rejected request) is raised once the drive has stopped; a failed cache is only logged: the answers
    are returned."""
    run = labeler.new_run()
    try:
        await LocalExecutor(run, serving=True).execute(labeler, RowSource(lambda: rows, len(rows)), sink)
    finally:
        _report_cache_error(run)
        _add_counts(labeler.ledger, run.ledger)
    if run.fatal is not None:
        raise run.fatal
    if run.stopped_by is not None:  # (a served drive has no signal or cancel of its own: not expected)
        raise LLMLabelError(f"stopped: {run.stopped_by}")


def item_row(text: str, given: str | None) -> dict[str, Any]:
    """An item as an input row (the columns item_config reads)."""
    return {"text": text} if given is None else {"text": text, "label": given}


async def label_items(labeler: RowLabeler, items: list[tuple[str, str | None]]) -> list[dict[str, Any]]:
    """The outcomes of a request's items (text, given label), labeled as a file's rows (run_items), then
    aggregated over the request's items as a file run aggregates over its rows (ensemble.combine.refit:
    uninformative judges left out, weighted and Dawid-Skene fitted on every item): a request's items get the
    labels `llmlabel label` gives the same rows."""
    sink = ItemSink(len(items))
    await run_items(labeler, [(i, item_row(text, given)) for i, (text, given) in enumerate(items)], sink)
    results = [from_record(rec, labeler.kind) for rec in sink.records if rec is not None]
    names = [j.name for j in labeler.judges]
    update, _ = refit(
        lambda: iter(results),
        names,
        labeler.labels,
        labeler.cfg.aggregate,
        labeler.kind,
        None,
        labeler.set_policy,
        labeler.batch_calibrated(),
    )
    return [outcome(to_record(update(pos, r) if update else r)) for pos, r in enumerate(results)]


def _report_cache_error(run: RunState) -> None:
    """A cache that failed (full disk, Redis gone) while answering: the answers are returned but not stored,
    so they would be paid for again: the operator's log says so (each request that met it)."""
    err = run.cache_error
    if err is not None:
        log.warning("answers are not being cached, so repeated items are paid again: %s", one_line(str(err)))


def _add_counts(total: Ledger, run: Ledger) -> None:
    """A request's counts into the server's running totals for its row labeler (/metrics)."""
    for name, jl in run.judges.items():
        total.judges[name].add(jl.counts())
    total.rows_done += run.rows_done
    total.rows_failed += run.rows_failed


def outcome(rec: dict[str, Any]) -> dict[str, Any]:
    """An item's answer from its record, with every known secret hidden (a judge may echo its API key inside an
    answer or an error): a multi-label row's set and a taxonomy row's path, depth and per-level confidence, as
    `llmlabel label` writes them."""
    return {k: redact_obj(rec[k]) for k in (*OUTCOME, "labels", *TAXONOMY_FIELDS) if k in rec}
