"""Errors as the service answers them: one clear line, never a traceback or a secret."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from llmlabel.errors import JudgeError, LLMLabelError
from llmlabel.redaction import one_line

# The service's bound for one_line: a job's error is read in full by API clients.
DETAIL = 400


def install_handlers(app: FastAPI, max_items: int) -> None:
    """422 for invalid requests and user errors (413 for too many items), 502 when a judge failed."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        for e in errs:
            if e.get("type") == "too_long" and tuple(e.get("loc", ()))[-1:] in (("items",), ("tasks",)):
                return JSONResponse(
                    {
                        "detail": f"too many items: at most {max_items} per request; "
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
        return JSONResponse({"detail": one_line(exc, DETAIL)}, 502)

    @app.exception_handler(LLMLabelError)
    async def user_error(request: Request, exc: LLMLabelError) -> JSONResponse:
        return JSONResponse({"detail": one_line(exc, DETAIL)}, 422)
