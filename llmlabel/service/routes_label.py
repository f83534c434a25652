"""Synchronous labeling: /health, /v1/label and /v1/verify, for small batches (files go to /v1/jobs)."""

from typing import Any

from fastapi import APIRouter
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


def router(st: ServerState) -> APIRouter:
    router = APIRouter()

    # Defined here: their item limit is the server's --max-items (shown in the OpenAPI schema).
    class LabelRequest(BaseModel):
        items: list[LabelItem] = Field(min_length=1, max_length=st.max_items)

    class VerifyRequest(BaseModel):
        items: list[VerifyItem] = Field(min_length=1, max_length=st.max_items)

    @router.get("/health", response_model=Health, tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness, no auth (also Label Studio's ML backend health check)."""
        return {"status": "UP", "model_class": "llmlabel", "model_version": st.model_version}

    @router.post("/v1/label", response_model=LabelResponse, tags=["label"], responses=errors(401, 413, 422, 502))
    async def label(body: LabelRequest) -> dict[str, Any]:
        """Label a small batch now (at most --max-items, each text at most --max-text-chars; use /v1/jobs for
        files)."""
        check_text_sizes([it.text for it in body.items], st.max_text_chars)
        job = await st.job(st.cfg.kind)
        recs = await label_items(job, [(it.text, None) for it in body.items])
        st.items["label"] = st.items.get("label", 0) + len(recs)
        return {
            "model_version": st.model_version,
            "items": [
                {"id": it.id if it.id is not None else i, **r} for i, (it, r) in enumerate(zip(body.items, recs))
            ],
        }

    @router.post("/v1/verify", response_model=VerifyResponse, tags=["label"], responses=errors(401, 413, 422, 502))
    async def verify(body: VerifyRequest) -> dict[str, Any]:
        """Check given labels: the judges' probability of each (score), their label, and whether to review it."""
        check_text_sizes([it.text for it in body.items], st.max_text_chars)
        job = await st.job("label")  # the label prompt: answers are shared with /v1/label and audit jobs
        recs = await label_items(job, [(it.text, it.label) for it in body.items])
        st.items["verify"] = st.items.get("verify", 0) + len(recs)
        out = []
        for i, (it, r) in enumerate(zip(body.items, recs)):
            r.update(dispute(it.label, r["label"], r["probs"], job.labels, st.dispute_threshold))
            out.append({"id": it.id if it.id is not None else i, **r})
        return {"model_version": st.model_version, "threshold": st.dispute_threshold, "items": out}

    return router
