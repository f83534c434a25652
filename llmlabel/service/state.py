"""The server's state: settings, the judges, the synchronous jobs, the batch queue, request counters; and how
a synchronous item is labeled (as a row of `llmlabel label`)."""

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llmlabel import __version__
from llmlabel.config import Config, Judge
from llmlabel.pipeline.job import OUTCOME, Job
from llmlabel.pipeline.options import RunOptions
from llmlabel.service.jobs import JobWorker
from llmlabel.service.store import JobStore


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
    judges: list[Judge] = field(default_factory=list)
    model_version: str = ""
    jobs: dict[str, Job] = field(default_factory=dict)  # by prompt kind, created in the server's loop
    calibrated: set[str] = field(default_factory=set)
    calibrate_lock: asyncio.Lock | None = None
    store: JobStore | None = None
    worker: JobWorker | None = None
    http: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)

    def http_count(self, method: str, route: str, status: int, seconds: float) -> None:
        c = self.http.setdefault((method, route, status), [0, 0.0])
        c[0] += 1
        c[1] += seconds

    async def job(self, kind: str) -> Job:
        job = self.jobs.get(kind)
        if job is None:
            opts = RunOptions(progress=False, kind=kind, given_label_column="label", transport=self.transport)
            job = self.jobs[kind] = Job(item_config(self.cfg), self.judges, opts)
        if kind not in self.calibrated and any(j.logprobs for j in self.judges):
            assert self.calibrate_lock is not None
            async with self.calibrate_lock:
                if kind not in self.calibrated:
                    await job.calibrate()  # content-free prompts, cached after the first server start
                    self.calibrated.add(kind)
        return job


def model_version(cfg: Config, judges: list[Judge]) -> str:
    what = json.dumps(
        [cfg.task.model_dump(), [(j.name, j.model, j.base_url) for j in judges], cfg.mode], sort_keys=True, default=str
    )
    return f"llmlabel-{__version__}-{hashlib.sha256(what.encode()).hexdigest()[:8]}"


def item_config(cfg: Config) -> Config:
    """The config the synchronous endpoints label with: an item is an input row with the columns `text` (and
    `label`, the given label), whatever columns the config's task reads from files."""
    task = cfg.task.model_copy(update={"text_column": "text", "id_column": "id"})
    return cfg.model_copy(update={"task": task})


async def label_item(job: Job, i: int, text: str, given: str | None) -> dict[str, Any]:
    """One item's outcome, computed as `llmlabel label` computes a row's (Job.start, then Job.outcome)."""
    rec, text_, given_ = job.start(i, {"text": text} if given is None else {"text": text, "label": given})
    if text_ is not None:
        rec.update(job.outcome(await job.ask_all(text_, given_)))
    return {k: rec[k] for k in OUTCOME}
