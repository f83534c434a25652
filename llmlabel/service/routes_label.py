"""Synchronous labeling: /health, /v1/label and /v1/verify, for small batches (files go to /v1/jobs)."""

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from llmlabel.service.schemas import Health, LabelItem, LabelResponse, VerifyItem, VerifyResponse, errors
from llmlabel.service.state import ServerState, check_text_sizes, label_items


def dispute(
    given: str, label: str | None, probs: dict[str, float] | None, labels: list[str], threshold: float
) -> dict[str, Any]:
    """How much one item's answers back its given label (see VerifyResult)."""
    if label is None or probs is None:
        return {"given_label": given, "given_label_prob": None, "disputed": None}
    prob = round(float(probs.get(given, 0.0)), 4) if given in labels else 0.0
    return {"given_label": given, "given_label_prob": prob, "disputed": bool(label != given and prob < threshold)}


def task_kind(st: ServerState) -> str:
    """The kind of answer an item gets: one label, a label set or a taxonomy path (schemas.Kind)."""
    kind = st.cfg.kind
    return kind if kind == "taxonomy" else "multi_label" if kind == "multilabel" else "label"


def verify_applies(kind: str) -> None:
    """/v1/verify checks one given label against the judges' distribution over the task's labels: a set or a
    path has no such single probability, so those tasks get one clear 422 instead of a misleading answer."""
    if kind == "multi_label":
        raise HTTPException(
            422,
            "POST /v1/verify checks one given label, but this server's task is multi-label: POST /v1/label "
            "returns each label's probability (`probs`) to check a given set against",
        )
    if kind == "taxonomy":
        raise HTTPException(
            422,
            "POST /v1/verify checks one given label, but this server's task is a taxonomy: POST /v1/label "
            "returns the path and each level's confidence (`path`, `level_confidence`) to check a given path against",
        )


def router(st: ServerState) -> APIRouter:
    router = APIRouter()

    # Defined here: their item limit is the server's --max-items (shown in the OpenAPI schema).
    class LabelRequest(BaseModel):
        items: list[LabelItem] = Field(min_length=1, max_length=st.max_items)

    class VerifyRequest(BaseModel):
        items: list[VerifyItem] = Field(min_length=1, max_length=st.max_items)

    @router.get("/health", response_model=Health, tags=["service"], responses=errors(401))
    async def health() -> dict[str, Any]:
        """Label Studio's ML backend health check, with auth: a wrong or missing password shows in Label
        Studio as "authentication parameters were either not provided or are incorrect" when the backend is
        connected, not as a bare 401 from /setup. /livez is the same without auth, for liveness probes."""
        return {"status": "UP", "model_class": "llmlabel", "model_version": st.model_version}

    @router.get("/livez", response_model=Health, tags=["service"])
    async def livez() -> dict[str, Any]:
        """Liveness, no auth."""
        return {"status": "UP", "model_class": "llmlabel", "model_version": st.model_version}

    @router.post("/v1/label", response_model=LabelResponse, tags=["label"], responses=errors(401, 413, 422, 502))
    async def label(body: LabelRequest) -> dict[str, Any]:
        """Label a small batch now (at most --max-items, each text at most --max-text-chars; use /v1/jobs for
        files)."""
        check_text_sizes([it.text for it in body.items], st.max_text_chars)
        labeler = await st.labeler(st.cfg.kind)
        recs = await label_items(labeler, [(it.text, None) for it in body.items])
        st.items["label"] = st.items.get("label", 0) + len(recs)
        return {
            "model_version": st.model_version,
            "kind": task_kind(st),
            "items": [
                {"id": it.id if it.id is not None else i, **r} for i, (it, r) in enumerate(zip(body.items, recs))
            ],
        }

    @router.post("/v1/verify", response_model=VerifyResponse, tags=["label"], responses=errors(401, 413, 422, 502))
    async def verify(body: VerifyRequest) -> dict[str, Any]:
        """Check given labels: the judges' probability of each (score), their label, and whether to review it.
        Single-label tasks only (422 for a multi-label or taxonomy task)."""
        verify_applies(task_kind(st))
        check_text_sizes([it.text for it in body.items], st.max_text_chars)
        labeler = await st.labeler("label")  # the label prompt: answers are shared with /v1/label and audit jobs
        recs = await label_items(labeler, [(it.text, it.label) for it in body.items])
        st.items["verify"] = st.items.get("verify", 0) + len(recs)
        out = []
        for i, (it, r) in enumerate(zip(body.items, recs)):
            r.update(dispute(it.label, r["label"], r["probs"], labeler.labels, st.dispute_threshold))
            out.append({"id": it.id if it.id is not None else i, **r})
        return {"model_version": st.model_version, "threshold": st.dispute_threshold, "items": out}

    return router
