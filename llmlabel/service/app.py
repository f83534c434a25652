"""`llmlabel serve`: the judges as an HTTP service (FastAPI). Synchronous labeling and verification for small
batches (routes_label), resumable batch jobs (routes_jobs over jobs), a Label Studio ML backend
(routes_labelstudio), Prometheus metrics (metrics); auth and limits in front of them all (guard).

It shares the CLI's judges, response cache and ledger: a text labeled by `llmlabel label` is free here, and
the other way round."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI

from llmlabel import __version__
from llmlabel.config import Config, Judge
from llmlabel.errors import LLMLabelError
from llmlabel.secrets import register
from llmlabel.service import metrics, routes_jobs, routes_label, routes_labelstudio
from llmlabel.service.auth import TOKEN_ENV
from llmlabel.service.errors import install_handlers
from llmlabel.service.guard import Guard
from llmlabel.service.jobs import JobWorker
from llmlabel.service.state import ServerState, model_version
from llmlabel.service.store import JobStore


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
    app = FastAPI(
        title="llmlabel",
        version=__version__,
        lifespan=lambda app: _lifespan(st, judges),
        description="Label and audit text with an ensemble of LLM judges. Every route but /health and "
        "the docs needs `Authorization: Bearer <token>`.",
    )
    app.state.llmlabel = st
    install_handlers(app, max_items)
    for module in (routes_label, routes_jobs, routes_labelstudio, metrics):
        app.include_router(module.router(st))
    app.add_middleware(Guard, state=st)  # type: ignore[arg-type]
    return app


@contextlib.asynccontextmanager
async def _lifespan(st: ServerState, judges: list[Judge] | None) -> AsyncIterator[None]:
    """The judges (the embedded models' servers started once, here), the job store and its worker thread."""
    from llmlabel.pipeline.run import judges_for

    with contextlib.ExitStack() as stack:
        st.judges = judges if judges is not None else stack.enter_context(judges_for(st.cfg))
        st.model_version = model_version(st.cfg, st.judges)
        st.calibrate_lock = asyncio.Lock()
        st.store = JobStore(st.state_dir)
        st.worker = JobWorker(st.cfg, st.judges, st.store, transport=st.transport)
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
