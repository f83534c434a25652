"""`llmlabel serve`: the judges as an HTTP service (FastAPI). Synchronous labeling and verification for small
batches (routes_label), resumable batch jobs (routes_jobs over jobs), a Label Studio ML backend
(routes_labelstudio), Prometheus metrics (metrics); auth and limits in front of them all (guard).

It shares the CLI's judges, response cache and ledger: a text labeled by `llmlabel label` is free here, and
the other way round."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import httpx
from fastapi import FastAPI

from llmlabel import __version__
from llmlabel.config import Config, Judge
from llmlabel.errors import LLMLabelError
from llmlabel.redaction import register
from llmlabel.service import metrics, routes_jobs, routes_label, routes_labelstudio
from llmlabel.service.auth import TOKEN_ENV, host_name, origin_key
from llmlabel.service.error_handlers import install_handlers
from llmlabel.service.gold import GoldStore
from llmlabel.service.guard import Guard
from llmlabel.service.jobs import JobWorker
from llmlabel.service.state import ServerState, model_version
from llmlabel.service.store import JobStore, StateLock


def create_app(
    cfg: Config,
    *,
    token: str | None,
    state_dir: str | Path = ".llmlabel-serve",
    max_items: int = 256,
    max_body_bytes: int = 10 << 20,
    max_upload_bytes: int = 100 << 20,
    max_text_chars: int = 200_000,
    dispute_threshold: float = 0.5,
    judges: list[Judge] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    allowed_hosts: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
    ls_label_map: dict[str, str] | None = None,
    predict_deadline: float = 80.0,
    webhook_needs_auth: bool = False,
) -> FastAPI:
    """The ASGI app. `token=None` turns auth off: only `llmlabel serve --no-auth` on a loopback host does that.

    `judges` defaults to the CLI's choice (the config's, else OPENAI_*, else the embedded local models);
    `transport` is for tests (an httpx transport every judge request goes through).

    Requests must name the server by a loopback name or one of `allowed_hosts` (Host header), and a browser's
    request must come from the server's own origin or one of `allowed_origins` (SCHEME://HOST[:PORT]).

    Label Studio: `ls_label_map` maps a project's choices to the task's labels (besides same-name-ignoring-case),
    /predict answers within `predict_deadline` seconds (the rest goes on into the cache), and
    `webhook_needs_auth` refuses /webhook requests without credentials (see routes_labelstudio)."""
    if token is not None:
        if not token.strip():
            raise LLMLabelError(f"${TOKEN_ENV} is empty; set it to a secret token")
        register(token)
    origins = set()
    for o in allowed_origins:
        key = origin_key(o)
        if key is None:
            raise LLMLabelError(f"allowed origin {o!r} is not SCHEME://HOST[:PORT] (e.g. http://localhost:8080)")
        origins.add(key)
    st = ServerState(
        cfg,
        token,
        Path(state_dir),
        max_items,
        max_body_bytes,
        max_upload_bytes,
        dispute_threshold,
        transport,
        max_text_chars=max_text_chars,
        allowed_hosts=frozenset(host_name(h) for h in allowed_hosts),
        allowed_origins=frozenset(origins),
        ls_label_map=dict(ls_label_map or {}),
        predict_deadline=predict_deadline,
        webhook_needs_auth=webhook_needs_auth,
    )
    app = FastAPI(
        title="llmlabel",
        version=__version__,
        lifespan=lambda app: _lifespan(st, judges),
        description="Label and audit text with an ensemble of LLM judges. Every route but "
        "/livez, the docs and (restricted) Label Studio webhooks needs `Authorization: Bearer <token>`.",
    )
    st.lock = StateLock(st.state_dir)
    st.lock.acquire()  # here, so that `llmlabel serve` says so in one line before it serves anything
    app.state.llmlabel = st
    install_handlers(app, max_items)
    for module in (routes_label, routes_jobs, routes_labelstudio, metrics):
        app.include_router(module.router(st))
    app.add_middleware(Guard, state=st)  # type: ignore[arg-type]
    return app


def _warm_tokenizer() -> None:
    from llmlabel.llm.tokens import truncate

    with contextlib.suppress(Exception):  # best effort: the first long text loads it otherwise
        truncate("warm " * 8, 4)


@contextlib.asynccontextmanager
async def _lifespan(st: ServerState, judges: list[Judge] | None) -> AsyncIterator[None]:
    """The judges (the embedded models' servers started once, here), the job store and its worker thread."""
    from llmlabel.pipeline.lifecycle import judges_for

    assert st.lock is not None
    st.lock.acquire()  # again, for an app started after an earlier shutdown released it
    with contextlib.ExitStack() as stack:
        st.judges = judges if judges is not None else stack.enter_context(judges_for(st.cfg))
        for j in st.judges:  # hidden from the first line on, not from each judge's first request
            register(j.api_key())
        st.model_version = model_version(st.cfg, st.judges)
        st.store = JobStore(st.state_dir)
        st.gold = GoldStore(st.state_dir)
        st.worker = JobWorker(st.cfg, st.judges, st.store, transport=st.transport)
        st.worker.start()
        # The tokenizer loads in ~1 s on first use (the first text longer than a judge's max_text_tokens):
        # loaded now, off the loop, so that no client's request waits on the loop for it.
        asyncio.get_running_loop().run_in_executor(None, _warm_tokenizer)
        try:
            yield
        finally:
            if st.background:  # predictions past a /predict deadline: paid for, so given a while to land
                _, late = await asyncio.wait(list(st.background), timeout=10)
                for fut in late:
                    fut.cancel()
            stopped = await asyncio.to_thread(st.worker.close)
            st.gold.close()
            await st.labelers.aclose()
            st.labelers.close()
            if stopped:  # a job still winding down keeps its database (and the dir's lock) until the process ends
                st.store.close()
                st.lock.release()
