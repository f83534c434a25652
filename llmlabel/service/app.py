"""`llmlabel serve`: the judges as an HTTP service (FastAPI). Synchronous labeling and verification for small
batches, resumable batch jobs, a Label Studio ML backend, Prometheus metrics.

It shares the CLI's judges, response cache and ledger: a text labeled by `llmlabel label` is free here, and
the other way round."""

import asyncio
import contextlib
import hashlib
import json
import logging
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from llmlabel import __version__
from llmlabel.config import Config, Judge
from llmlabel.errors import InputError, JudgeError, LLMLabelError
from llmlabel.pipeline.runner import OUTCOME, Job, RunOptions
from llmlabel.secrets import register
from llmlabel.service.auth import TOKEN_ENV, authorized
from llmlabel.service.jobs import (
    ACTIVE,
    LEDGER_FIELDS,
    JobRecord,
    JobStore,
    JobWorker,
    file_lines,
    one_line,
    partial_results,
    validate_upload,
)

log = logging.getLogger("llmlabel.service.app")

OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
UPLOAD_FORMATS = {".csv": ".csv", ".jsonl": ".jsonl", ".ndjson": ".jsonl", ".parquet": ".parquet"}
UPLOAD_TYPES = {
    "text/csv": ".csv",
    "application/jsonl": ".jsonl",
    "application/x-ndjson": ".jsonl",
    "application/vnd.apache.parquet": ".parquet",
}
Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]
]


# -- request and response bodies ---------------------------------------------------------------------
Id = str | int | None


class LabelItem(BaseModel):
    id: Id = Field(None, description="echoed back; the item's position when absent")
    text: str = Field(min_length=1)


class VerifyItem(LabelItem):
    label: str = Field(description="the label to check")


class LabelResult(BaseModel):
    id: Id
    label: str | None
    confidence: float | None
    probs: dict[str, float] | None
    candidates: list[str]
    judges: dict[str, dict[str, Any]]
    error: str | None


class VerifyResult(LabelResult):
    given_label: str
    given_label_prob: float | None = Field(
        description="the judges' probability of the given label for this item alone (its `probs`; 0 for a label "
        "outside the task's). Not `llmlabel audit`'s `score`, which needs the whole file: POST /v1/jobs mode=audit"
    )
    disputed: bool | None = Field(
        description="the judges' label differs from the given one and given_label_prob is below the threshold"
    )


class LabelResponse(BaseModel):
    model_version: str
    items: list[LabelResult]


class VerifyResponse(BaseModel):
    model_version: str
    threshold: float = Field(description="an item is disputed when its given_label_prob is below this")
    items: list[VerifyResult]


class Progress(BaseModel):
    rows_total: int
    rows_done: int
    fraction: float


class JobInfo(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    mode: Literal["label", "audit"]
    label_column: str | None
    filename: str | None
    created: str
    started: str | None
    finished: str | None
    progress: Progress
    ledger: dict[str, Any] = Field(description="this job's runs (one per start, resumes included) and their total")
    quality: dict[str, Any] | None = Field(
        description="label jobs: the final aggregation's figures (as in OUTPUT.ledger.json); audit jobs: the "
        "summary `llmlabel audit` writes (OUTPUT.summary.json)"
    )
    error: str | None
    results: str | None = Field(description="where the results are, once done")


class JobList(BaseModel):
    jobs: list[JobInfo]


class LSTask(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: Id = None
    data: dict[str, Any] = {}


class LSSetup(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: str | int | None = None
    schema_: str | None = Field(None, alias="schema")
    access_token: str | None = None


class Health(BaseModel):
    status: str
    model_class: str
    model_version: str


class ErrorOut(BaseModel):
    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    why = {
        400: "bad request",
        401: "missing or wrong bearer token",
        404: "no such job",
        409: "not in a state for that",
        413: "body or batch too large",
        422: "invalid request",
        502: "a judge failed",
    }
    return {c: {"model": ErrorOut, "description": why[c]} for c in codes}


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


class Guard:
    """Pure ASGI middleware in front of every route: bearer-token auth, body size limits, request metrics.

    It runs before any body is read, so an unauthenticated or oversized upload costs nothing."""

    def __init__(self, app: ASGIApp, state: "ServerState") -> None:
        self.app, self.state = app, state

    def _authorized(self, scope: Scope) -> bool:
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
        return authorized(header.decode("latin-1"), self.state.token)

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st, path, t0 = self.state, scope["path"], time.perf_counter()
        status = [0]

        async def send_status(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        async def reply(code: int, detail: str, headers: dict[str, str] | None = None) -> None:
            await JSONResponse({"detail": detail}, code, headers=headers)(scope, receive, send_status)

        try:
            if path not in OPEN_PATHS and not self._authorized(scope):
                await reply(
                    401,
                    f"missing or wrong bearer token: send 'Authorization: Bearer <token>' (the server's ${TOKEN_ENV})",
                    {"WWW-Authenticate": 'Bearer realm="llmlabel"'},
                )
                return
            upload = path == "/v1/jobs" and scope["method"] == "POST"
            limit = st.max_upload_bytes if upload else st.max_body_bytes
            length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
            if length is not None and length.isdigit() and int(length) > limit:
                await reply(
                    413,
                    f"request body of {int(length)} bytes is over the limit of {limit} bytes"
                    + ("; split the file" if upload else "; send fewer items per request or use POST /v1/jobs"),
                )
                return
            seen = [0]

            async def limited() -> dict[str, Any]:
                msg = await receive()
                if msg["type"] == "http.request":
                    seen[0] += len(msg.get("body", b""))
                    if seen[0] > limit:  # chunked bodies carry no Content-Length: count as they arrive
                        raise HTTPException(413, f"request body is over the limit of {limit} bytes")
                return msg

            try:
                await self.app(scope, limited, send_status)
            except Exception as e:
                # Answered here, not by Starlette's error middleware, which would log a full traceback
                # (and with it whatever the exception carried). One redacted line instead.
                log.error("%s %s failed: %s", scope["method"], path, one_line(f"{type(e).__name__}: {e}"))
                if not status[0]:
                    await reply(500, "internal error; see the server log")
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unrouted"
            st.http_count(scope["method"], template, status[0] or 500, time.perf_counter() - t0)


# -- the server's state ----------------------------------------------------------------------------
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


def _model_version(cfg: Config, judges: list[Judge]) -> str:
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


def dispute(
    given: str, label: str | None, probs: dict[str, float] | None, labels: list[str], threshold: float
) -> dict[str, Any]:
    """How much one item's answers back its given label (see VerifyResult)."""
    if label is None or probs is None:
        return {"given_label": given, "given_label_prob": None, "disputed": None}
    prob = round(float(probs.get(given, 0.0)), 4) if given in labels else 0.0
    return {"given_label": given, "given_label_prob": prob, "disputed": bool(label != given and prob < threshold)}


def parse_label_config(xml: str | None) -> tuple[str, str, str | None, list[str]]:
    """from_name, to_name, the task data key and the choice values of a Label Studio labeling config."""
    from_name, to_name, key, choices = "label", "text", None, []
    if not xml or not xml.strip():
        return from_name, to_name, key, choices
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InputError(f"label_config is not valid XML ({e}); send the project's labeling config") from None
    el = next((e for e in root.iter() if e.tag == "Choices"), None)
    if el is not None:
        from_name = el.get("name") or from_name
        to_name = el.get("toName") or to_name
        choices = [c.get("value") or "" for c in el.iter("Choice")]
    for e in root.iter():
        value = e.get("value") or ""
        if e.get("name") == to_name and value.startswith("$"):
            key = value[1:]
            break
    return from_name, to_name, key, choices


def _prom_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def create_app(
    cfg: Config,
    *,
    token: str | None,
    state_dir: str | Path = ".llmlabel-serve",
    max_items: int = 256,
    max_body_bytes: int = 10 << 20,
    max_upload_bytes: int = 100 << 20,
    dispute_threshold: float = 0.5,
    judges: list[Judge] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The ASGI app. `token=None` turns auth off: only `llmlabel serve --no-auth` on a loopback host does that.

    `judges` defaults to the CLI's choice (the config's, else OPENAI_*, else the embedded local models);
    `transport` is for tests (an httpx transport every judge request goes through)."""
    if token is not None:
        if not token.strip():
            raise LLMLabelError(f"${TOKEN_ENV} is empty; set it to a secret token")
        register(token)
    st = ServerState(
        cfg, token, Path(state_dir), max_items, max_body_bytes, max_upload_bytes, dispute_threshold, transport
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from llmlabel.pipeline.runner import judges_for

        with contextlib.ExitStack() as stack:
            st.judges = judges if judges is not None else stack.enter_context(judges_for(cfg))
            st.model_version = _model_version(cfg, st.judges)
            st.calibrate_lock = asyncio.Lock()
            st.store = JobStore(st.state_dir)
            st.worker = JobWorker(cfg, st.judges, st.store, transport=transport)
            st.worker.start()
            try:
                yield
            finally:
                stopped = await asyncio.to_thread(st.worker.close)
                for job in st.jobs.values():
                    for c in job.clients.values():
                        await c.aclose()
                    job.cache.close()
                st.jobs.clear()
                if stopped:  # a job still winding down keeps its database until the process ends
                    st.store.close()

    app = FastAPI(
        title="llmlabel",
        version=__version__,
        lifespan=lifespan,
        description="Label and audit text with an ensemble of LLM judges. Every route but /health and "
        "the docs needs `Authorization: Bearer <token>`.",
    )
    app.state.llmlabel = st

    # -- errors: one clear line, never a traceback or a secret -----------------------------------------
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        for e in errs:
            if e.get("type") == "too_long" and tuple(e.get("loc", ()))[-1:] in (("items",), ("tasks",)):
                return JSONResponse(
                    {
                        "detail": f"too many items: at most {st.max_items} per request; "
                        "send smaller batches or use POST /v1/jobs"
                    },
                    413,
                )
        parts = []
        for e in errs[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        more = f" (and {len(errs) - 5} more)" if len(errs) > 5 else ""
        return JSONResponse({"detail": one_line("; ".join(parts) + more, 1000)}, 422)

    @app.exception_handler(JudgeError)
    async def judge_failed(request: Request, exc: JudgeError) -> JSONResponse:
        return JSONResponse({"detail": one_line(exc)}, 502)

    @app.exception_handler(LLMLabelError)
    async def user_error(request: Request, exc: LLMLabelError) -> JSONResponse:
        return JSONResponse({"detail": one_line(exc)}, 422)

    def not_found(jid: str) -> JSONResponse:
        return JSONResponse({"detail": f"no job '{jid[:64]}'; list jobs with GET /v1/jobs"}, 404)

    # -- synchronous labeling ------------------------------------------------------------------------
    class LabelRequest(BaseModel):
        items: list[LabelItem] = Field(min_length=1, max_length=max_items)

    class VerifyRequest(BaseModel):
        items: list[VerifyItem] = Field(min_length=1, max_length=max_items)

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="allow")
        tasks: list[LSTask] = Field(max_length=max_items)
        label_config: str | None = None

    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness, no auth (also Label Studio's ML backend health check)."""
        return {"status": "UP", "model_class": "llmlabel", "model_version": st.model_version}

    @app.post("/v1/label", response_model=LabelResponse, tags=["label"], responses=_errors(401, 413, 422, 502))
    async def label(body: LabelRequest) -> dict[str, Any]:
        """Label a small batch now (at most --max-items; use /v1/jobs for files)."""
        job = await st.job(cfg.mode)
        recs = await asyncio.gather(*(label_item(job, i, it.text, None) for i, it in enumerate(body.items)))
        st.items["label"] = st.items.get("label", 0) + len(recs)
        return {
            "model_version": st.model_version,
            "items": [
                {"id": it.id if it.id is not None else i, **r} for i, (it, r) in enumerate(zip(body.items, recs))
            ],
        }

    @app.post("/v1/verify", response_model=VerifyResponse, tags=["label"], responses=_errors(401, 413, 422, 502))
    async def verify(body: VerifyRequest) -> dict[str, Any]:
        """Check given labels: the judges' probability of each (score), their label, and whether to review it."""
        job = await st.job("label")  # the label prompt: answers are shared with /v1/label and audit jobs
        recs = await asyncio.gather(*(label_item(job, i, it.text, it.label) for i, it in enumerate(body.items)))
        st.items["verify"] = st.items.get("verify", 0) + len(recs)
        out = []
        for i, (it, r) in enumerate(zip(body.items, recs)):
            r.update(dispute(it.label, r["label"], r["probs"], job.labels, dispute_threshold))
            out.append({"id": it.id if it.id is not None else i, **r})
        return {"model_version": st.model_version, "threshold": dispute_threshold, "items": out}

    # -- batch jobs ----------------------------------------------------------------------------------
    def info(rec: JobRecord) -> dict[str, Any]:
        live = st.worker.live_status(rec.id) if st.worker and rec.state == "running" else None
        rows_done, current = live if live else (rec.rows_done, rec.current)
        runs = rec.runs + ([current] if current and rec.state == "running" else [])
        total = {
            "requests": sum(r.get("requests", 0) for r in runs),
            "cost": round(sum(r.get("cost", 0) for r in runs), 6),
            "cache_hits": sum(j.get("cache_hits", 0) for r in runs for j in r.get("judges", {}).values()),
        }
        done = min(rows_done, rec.rows_total)
        return {
            "id": rec.id,
            "state": rec.state,
            "mode": rec.mode,
            "label_column": rec.label_column,
            "filename": rec.filename,
            "created": _iso(rec.created),
            "started": _iso(rec.started),
            "finished": _iso(rec.finished),
            "progress": {
                "rows_total": rec.rows_total,
                "rows_done": done,
                "fraction": round(done / rec.rows_total, 4) if rec.rows_total else 1.0,
            },
            "ledger": {"runs": runs, "total": total},
            "quality": rec.quality,
            "error": rec.error,
            "results": f"/v1/jobs/{rec.id}/results" if rec.state == "done" else None,
        }

    upload_schema = {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "the corpus: .csv, .jsonl or .parquet"},
            "mode": {"type": "string", "enum": ["label", "audit"], "default": "label"},
            "label_column": {
                "type": "string",
                "description": "audit: the column holding the given labels (default: label)",
            },
        },
    }

    @app.post(
        "/v1/jobs",
        status_code=202,
        response_model=JobInfo,
        tags=["jobs"],
        responses=_errors(401, 413, 422),
        openapi_extra={
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": upload_schema}}}
        },
    )
    async def submit(request: Request) -> Response:
        """Queue a file: mode `label` labels every row, `audit` checks the labels in `label_column`."""
        assert st.store is not None and st.worker is not None
        fields, upload = await _read_form(request)
        mode = fields.get("mode") or "label"
        if mode not in ("label", "audit"):
            raise InputError(f"mode must be 'label' or 'audit', not {mode[:40]!r}")
        label_column = (fields.get("label_column") or "label") if mode == "audit" else None
        if upload is None:
            raise InputError("no file: send the corpus as the multipart field 'file' (curl -F file=@data.csv)")
        filename, ctype, data = upload
        ext = UPLOAD_FORMATS.get(Path(filename or "").suffix.lower()) or UPLOAD_TYPES.get(ctype)
        if ext is None:
            raise InputError(
                f"cannot tell the file's format from {(filename or ctype or 'nothing')[:80]!r}; "
                "upload a .csv, .jsonl or .parquet file"
            )
        name = Path(filename).name[:200] if filename else None
        jid, d = st.store.new_dir()
        path = d / f"input{ext}"
        try:
            await asyncio.to_thread(path.write_bytes, data)
            total = await asyncio.to_thread(validate_upload, path, mode, label_column, cfg, name or "the upload")
        except LLMLabelError:
            shutil.rmtree(d, ignore_errors=True)
            raise
        rec = st.store.add(jid, mode, label_column, name, path, total)
        st.worker.wake()
        return JSONResponse(info(rec), 202, headers={"Location": f"/v1/jobs/{jid}"})

    async def _read_form(request: Request) -> tuple[dict[str, str], tuple[str | None, str | None, bytes] | None]:
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise InputError("send the file as multipart/form-data (curl -F file=@data.csv -F mode=label)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
        return await asyncio.to_thread(parse_multipart, ctype, bytes(body))

    @app.get("/v1/jobs", response_model=JobList, tags=["jobs"], responses=_errors(401))
    async def list_jobs(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """The latest jobs, newest first."""
        assert st.store is not None
        return {"jobs": [info(r) for r in st.store.recent(limit)]}

    @app.get("/v1/jobs/{job_id}", response_model=JobInfo, tags=["jobs"], responses=_errors(401, 404))
    async def get_job(job_id: str) -> Any:
        """State, progress and the ledger so far."""
        assert st.store is not None
        rec = st.store.get(job_id)
        return info(rec) if rec else not_found(job_id)

    @app.get(
        "/v1/jobs/{job_id}/results",
        tags=["jobs"],
        responses={
            **_errors(401, 404, 409),
            200: {"description": "one JSON object per row", "content": {"application/x-ndjson": {}}},
        },
    )
    async def results(job_id: str, partial: bool = False) -> Response:
        """The labeled rows as JSON lines, once the job is done (`partial=true`: the rows finished so far)."""
        assert st.store is not None
        rec = st.store.get(job_id)
        if rec is None:
            return not_found(job_id)
        if rec.state == "done" and rec.output.exists():
            return StreamingResponse(file_lines(rec.output), media_type="application/x-ndjson")
        if partial:
            return StreamingResponse(partial_results(rec), media_type="application/x-ndjson")
        info_ = info(rec)["progress"]
        return JSONResponse(
            {
                "detail": f"job is {rec.state} ({info_['rows_done']}/{info_['rows_total']} rows); "
                "results are ready when its state is done (or ask with ?partial=true)"
            },
            409,
        )

    @app.delete("/v1/jobs/{job_id}", response_model=JobInfo, tags=["jobs"], responses=_errors(401, 404, 409))
    async def cancel(job_id: str, purge: bool = False) -> Any:
        """Cancel a queued or running job (finished rows are kept; resume with POST .../resume).
        `purge=true` on a finished, failed or cancelled job deletes it and its files."""
        assert st.store is not None and st.worker is not None
        rec = st.store.get(job_id)
        if rec is None:
            return not_found(job_id)
        if rec.state in ACTIVE:
            if purge:
                return JSONResponse({"detail": f"job is {rec.state}; cancel it first (DELETE without purge)"}, 409)
            cancelled = st.worker.cancel(job_id)
            rec = st.store.get(job_id)
            assert rec is not None
            if not cancelled:  # it finished meanwhile
                return JSONResponse({"detail": f"job is already {rec.state}"}, 409)
            return {**info(rec), "state": "cancelled"}  # a running job winds down in the background
        if purge:
            st.store.delete(job_id)
            return Response(status_code=204)
        return JSONResponse({"detail": f"job is already {rec.state}; add ?purge=true to delete it"}, 409)

    @app.post("/v1/jobs/{job_id}/resume", response_model=JobInfo, tags=["jobs"], responses=_errors(401, 404, 409))
    async def resume(job_id: str) -> Any:
        """Queue a failed or cancelled job again: rows already finished are not redone, nor paid again."""
        assert st.store is not None and st.worker is not None
        rec = st.store.get(job_id)
        if rec is None:
            return not_found(job_id)
        if not st.store.set_state_if(job_id, "queued", ("failed", "cancelled")):
            return JSONResponse({"detail": f"job is {rec.state}; only failed or cancelled jobs resume"}, 409)
        st.store.update(job_id, error=None, finished=None)
        st.worker.wake()
        rec = st.store.get(job_id)
        assert rec is not None
        return info(rec)

    # -- Label Studio ML backend ---------------------------------------------------------------------
    @app.post("/setup", tags=["label studio"], responses=_errors(401, 422))
    async def ls_setup(body: LSSetup) -> dict[str, Any]:
        """Label Studio connects a project: answers with the model version."""
        register(body.access_token)  # Label Studio's own token: never echoed or logged
        return {"model_version": st.model_version}

    @app.post("/predict", tags=["label studio"], responses=_errors(401, 413, 422, 502))
    async def ls_predict(body: PredictRequest) -> dict[str, Any]:
        """Pre-annotations: one `choices` result per task, scored by the ensemble's confidence."""
        from_name, to_name, key, choices = parse_label_config(body.label_config)
        job = await st.job(cfg.mode)

        def text_of(data: dict[str, Any]) -> str:
            # (lone surrogates in free-form task data are cleaned by Job.start, as in files)
            for k in (key, cfg.task.text_column, "text"):
                if k and isinstance(data.get(k), str):
                    return data[k]
            return next((v for v in data.values() if isinstance(v, str)), "")

        recs = await asyncio.gather(*(label_item(job, i, text_of(t.data), None) for i, t in enumerate(body.tasks)))
        by_fold = {c.casefold(): c for c in choices}
        out = []
        for r in recs:
            if r["label"] is None:
                out.append({"result": [], "score": 0.0, "model_version": st.model_version})
                continue
            value = by_fold.get(r["label"].casefold(), r["label"])
            out.append(
                {
                    "result": [
                        {
                            "from_name": from_name,
                            "to_name": to_name,
                            "type": "choices",
                            "value": {"choices": [value]},
                            "score": r["confidence"],
                        }
                    ],
                    "score": r["confidence"],
                    "model_version": st.model_version,
                }
            )
        st.items["predict"] = st.items.get("predict", 0) + len(recs)
        return {"results": out, "model_version": st.model_version}

    # -- metrics ---------------------------------------------------------------------------------------
    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["service"],
        responses={**_errors(401), 200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics: HTTP requests, and per judge requests, cache hits, tokens and dollars."""
        return PlainTextResponse(render_metrics(st), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(Guard, state=st)  # type: ignore[arg-type]
    return app


def render_metrics(st: ServerState) -> str:
    judges: dict[str, dict[str, Any]] = {}
    for source, ledgers in (("sync", [j.ledger for j in st.jobs.values()]), ("jobs", None)):
        if ledgers is None:
            per = st.worker.judge_totals() if st.worker else {}
            for name, t in per.items():
                judges[f"{name}\x00{source}"] = t | {"name": name, "source": source}
            continue
        for ledger in ledgers:
            for name, j in ledger.judges.items():
                t = judges.setdefault(
                    f"{name}\x00{source}",
                    {"name": name, "source": source, "model": j.model, **dict.fromkeys(LEDGER_FIELDS, 0)},
                )
                for f in LEDGER_FIELDS:
                    t[f] += getattr(j, f)
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, v in samples:
            lab = ",".join(f'{k}="{_prom_label(str(x))}"' for k, x in labels.items())
            lines.append(f"{name}{{{lab}}} {v:.10g}" if lab else f"{name} {v:.10g}")

    jl = lambda t: {"judge": t["name"], "model": t["model"], "source": t["source"]}  # noqa: E731
    for f, help_ in (
        ("requests", "HTTP requests sent to the judge (each retry counts)"),
        ("responses", "answers received from the judge (billed)"),
        ("cache_hits", "answers served from the response cache (free)"),
        ("retries", "retried judge requests"),
        ("reasks", "judge answers that were invalid and asked again"),
        ("input_tokens", "prompt tokens billed"),
        ("output_tokens", "completion tokens billed"),
    ):
        metric(f"llmlabel_judge_{f}_total", "counter", help_, [(jl(t), t[f]) for t in judges.values()])
    metric(
        "llmlabel_judge_cost_dollars_total",
        "counter",
        "dollars spent, from the config's prices",
        [(jl(t), t["cost"]) for t in judges.values()],
    )
    metric(
        "llmlabel_items_total",
        "counter",
        "items answered by the synchronous endpoints",
        [({"endpoint": k}, v) for k, v in sorted(st.items.items())],
    )
    http = sorted(st.http.items())
    metric(
        "llmlabel_http_requests_total",
        "counter",
        "HTTP requests served",
        [({"method": m, "route": r, "status": str(s)}, c[0]) for (m, r, s), c in http],
    )
    metric(
        "llmlabel_http_request_seconds_total",
        "counter",
        "time spent serving HTTP requests",
        [({"method": m, "route": r, "status": str(s)}, c[1]) for (m, r, s), c in http],
    )
    counts = st.store.counts() if st.store else {}
    metric("llmlabel_jobs", "gauge", "batch jobs by state", [({"state": s}, n) for s, n in counts.items()])
    return "\n".join(lines) + "\n"


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], tuple[str | None, str | None, bytes] | None]:
    """Form fields and the 'file' part of a multipart/form-data body (stdlib only: no python-multipart needed)."""
    from email import policy
    from email.parser import BytesParser

    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\nMIME-Version: 1.0\r\n\r\n"
    try:
        msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    except Exception:
        raise InputError("malformed multipart body; send the file with curl -F file=@data.csv") from None
    if not msg.is_multipart() or msg.defects:
        raise InputError(
            "malformed multipart body (no boundary or broken parts); send the file with curl -F file=@data.csv"
        )
    fields: dict[str, str] = {}
    upload = None
    for part in msg.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        if name == "file":
            upload = (part.get_filename(), part.get_content_type(), data)
        else:
            try:
                fields[name] = data.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise InputError(f"form field '{name[:40]}' is not UTF-8 text") from None
    return fields, upload
