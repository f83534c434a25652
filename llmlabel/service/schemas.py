"""The service's request and response bodies (pydantic): what the OpenAPI schema shows."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
    labels: list[str] | None = Field(
        None,
        description="a multi-label task's set, most probable first (`label` is then it joined by '|'; `probs` "
        "holds each label's own probability of being in the set, and `confidence` the chance the whole set is right)",
    )
    path: list[str] | None = Field(
        None, description="a taxonomy task's path from the top level down (`label` is its deepest node)"
    )
    depth: int | None = Field(
        None, description="a taxonomy task's levels taken: less than the tree's depth where the judges were unsure"
    )
    level_confidence: list[float] | None = Field(
        None,
        description="a taxonomy task's combined confidence at each level asked; a last entry beyond `depth` is "
        "the level refused (below task.taxonomy_threshold), where the row stopped at the parent",
    )


class VerifyResult(LabelResult):
    given_label: str
    given_label_prob: float | None = Field(
        description="the judges' probability of the given label for this item alone (its `probs`; 0 for a label "
        "outside the task's). Not `llmlabel audit`'s `score`, which needs the whole file: POST /v1/jobs mode=audit"
    )
    disputed: bool | None = Field(
        description="the judges' label differs from the given one and given_label_prob is below the threshold"
    )


Kind = Literal["label", "multi_label", "taxonomy"]


class LabelResponse(BaseModel):
    model_version: str
    kind: Kind = Field(
        description="the task's kind: one label an item (`label`), a set (`labels`), or a taxonomy path (`path`)"
    )
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


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route (403, a foreign Host or Origin, can answer any route)."""
    why = {
        400: "bad request",
        401: "missing or wrong bearer token",
        403: "a Host or Origin that is not this server's (a web page calling it)",
        404: "no such job (or Label Studio project)",
        409: "not in a state for that",
        413: "body, batch or text too large",
        422: "invalid request",
        429: "too many requests",
        502: "a judge failed",
        507: "the server's disk cannot take the upload",
    }
    return {c: {"model": ErrorOut, "description": why[c]} for c in sorted({*codes, 403})}
