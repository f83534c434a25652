"""Batch jobs over HTTP: upload a file (POST /v1/jobs), follow it, fetch its results, cancel, resume, purge."""

import asyncio
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from llmlabel.errors import InputError
from llmlabel.redaction import redact_obj
from llmlabel.service.jobs import file_lines, partial_results, validate_upload
from llmlabel.service.multipart import Upload, read_multipart
from llmlabel.service.schemas import JobInfo, JobList, errors
from llmlabel.service.state import ServerState
from llmlabel.service.store import ACTIVE, JobRecord

UPLOAD_FORMATS = {".csv": ".csv", ".jsonl": ".jsonl", ".ndjson": ".jsonl", ".parquet": ".parquet"}
UPLOAD_TYPES = {
    "text/csv": ".csv",
    "application/jsonl": ".jsonl",
    "application/x-ndjson": ".jsonl",
    "application/vnd.apache.parquet": ".parquet",
}
UPLOAD_SCHEMA = {
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


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def not_found(jid: str) -> JSONResponse:
    return JSONResponse({"detail": f"no job '{jid[:64]}'; list jobs with GET /v1/jobs"}, 404)


def job_info(st: ServerState, rec: JobRecord) -> dict[str, Any]:
    live = st.worker.live_status(rec.id) if st.worker and rec.state == "running" else None
    rows_done, current = live if live else (rec.rows_done, rec.current)
    runs = rec.runs + ([current] if current and rec.state == "running" else [])
    total = {
        "requests": sum(r.get("requests", 0) for r in runs),
        "cost": round(sum(r.get("cost", 0) for r in runs), 6),
        "cache_hits": sum(j.get("cache_hits", 0) for r in runs for j in r.get("judges", {}).values()),
    }
    done = min(rows_done, rec.rows_total)
    return redact_obj(
        {  # its error and quality summary come from the run: a judge may have echoed its key
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
    )


async def read_form(request: Request, file_path: Path) -> tuple[dict[str, str], Upload | None]:
    """The form's fields and its file, streamed to `file_path` as it arrives (never whole in memory)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise InputError("send the file as multipart/form-data (curl -F file=@data.csv -F mode=label)")
    return await read_multipart(ctype, request.stream(), file_path)


def router(st: ServerState) -> APIRouter:
    """The job routes, over the server's store and worker."""
    router = APIRouter(tags=["jobs"])
    _submit_route(router, st)
    _read_routes(router, st)
    _control_routes(router, st)
    return router


def _submit_route(router: APIRouter, st: ServerState) -> None:
    @router.post(
        "/v1/jobs",
        status_code=202,
        response_model=JobInfo,
        responses=errors(401, 413, 422, 507),
        openapi_extra={
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": UPLOAD_SCHEMA}}}
        },
    )
    async def submit(request: Request) -> Response:
        """Queue a file: mode `label` labels every row, `audit` checks the labels in `label_column`."""
        assert st.store is not None and st.worker is not None
        jid, d = st.store.new_dir()
        try:
            mode, label_column, name, path = await _receive(request, d)
            total = await asyncio.to_thread(validate_upload, path, mode, label_column, st.cfg, name or "the upload")
        except BaseException as e:  # a refused upload, one over the size limit, or a client that went away
            await asyncio.to_thread(shutil.rmtree, d, True)
            if isinstance(e, OSError):  # the server's disk (full, read-only): the operator's to fix, said so
                raise HTTPException(
                    507,
                    f"the server cannot store the upload ({e.strerror or type(e).__name__}); nothing was queued: "
                    "ask its operator to free space in its --state-dir, then send the file again",
                ) from None
            raise
        rec = st.store.add(jid, mode, label_column, name, path, total)
        st.worker.wake()
        return JSONResponse(job_info(st, rec), 202, headers={"Location": f"/v1/jobs/{jid}"})


async def _receive(request: Request, d: Path) -> tuple[str, str | None, str | None, Path]:
    """An upload's mode, label column, file name and its file in the job's dir (named for its format)."""
    fields, upload = await read_form(request, d / "upload")
    mode = fields.get("mode") or "label"
    if mode not in ("label", "audit"):
        raise InputError(f"mode must be 'label' or 'audit', not {mode[:40]!r}")
    label_column = (fields.get("label_column") or "label") if mode == "audit" else None
    if upload is None:
        raise InputError("no file: send the corpus as the multipart field 'file' (curl -F file=@data.csv)")
    ext = UPLOAD_FORMATS.get(Path(upload.filename or "").suffix.lower()) or UPLOAD_TYPES.get(upload.content_type or "")
    if ext is None:
        raise InputError(
            f"cannot tell the file's format from {(upload.filename or upload.content_type or 'nothing')[:80]!r}; "
            "upload a .csv, .jsonl or .parquet file"
        )
    path = upload.path.rename(d / f"input{ext}")
    return mode, label_column, Path(upload.filename).name[:200] if upload.filename else None, path


def _read_routes(router: APIRouter, st: ServerState) -> None:
    @router.get("/v1/jobs", response_model=JobList, responses=errors(401))
    async def list_jobs(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """The latest jobs, newest first."""
        assert st.store is not None
        return {"jobs": [job_info(st, r) for r in st.store.recent(limit)]}

    @router.get("/v1/jobs/{job_id}", response_model=JobInfo, responses=errors(401, 404))
    async def get_job(job_id: str) -> Any:
        """State, progress and the ledger so far."""
        assert st.store is not None
        rec = st.store.get(job_id)
        return job_info(st, rec) if rec else not_found(job_id)

    @router.get(
        "/v1/jobs/{job_id}/results",
        responses={
            **errors(401, 404, 409),
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
        info_ = job_info(st, rec)["progress"]
        return JSONResponse(
            {
                "detail": f"job is {rec.state} ({info_['rows_done']}/{info_['rows_total']} rows); "
                "results are ready when its state is done (or ask with ?partial=true)"
            },
            409,
        )


def _control_routes(router: APIRouter, st: ServerState) -> None:
    @router.delete("/v1/jobs/{job_id}", response_model=JobInfo, responses=errors(401, 404, 409))
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
            return {**job_info(st, rec), "state": "cancelled"}  # a running job winds down in the background
        if purge:
            st.store.delete(job_id)
            return Response(status_code=204)
        return JSONResponse({"detail": f"job is already {rec.state}; add ?purge=true to delete it"}, 409)

    @router.post("/v1/jobs/{job_id}/resume", response_model=JobInfo, responses=errors(401, 404, 409))
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
        return job_info(st, rec)
