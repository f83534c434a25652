"""GET /metrics: Prometheus text from the ledgers (sync jobs and batch jobs), HTTP counters and the job queue."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from llmlabel.service.jobs import LEDGER_FIELDS
from llmlabel.service.schemas import errors
from llmlabel.service.state import ServerState


def router(st: ServerState) -> APIRouter:
    router = APIRouter(tags=["service"])

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={**errors(401), 200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics: HTTP requests, and per judge requests, cache hits, tokens and dollars."""
        return PlainTextResponse(render_metrics(st), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router


def render_metrics(st: ServerState) -> str:
    judges: dict[str, dict[str, Any]] = {}
    for source, ledgers in (("sync", [j.ledger for j in st.labelers.values()]), ("jobs", None)):
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


def _prom_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
