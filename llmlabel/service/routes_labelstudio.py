"""Label Studio's ML backend protocol: /setup and /predict (pre-annotations from the ensemble)."""

import xml.etree.ElementTree as ET
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from llmlabel.errors import InputError
from llmlabel.service.schemas import LSSetup, LSTask, errors
from llmlabel.service.state import ServerState, check_text_sizes, label_items


def parse_label_config(xml: str | None) -> tuple[str, str, str | None, list[str]]:
    """from_name, to_name, the task data key and the choice values of a Label Studio labeling config."""
    from_name, to_name, key = "label", "text", None
    choices: list[str] = []
    if not xml or not xml.strip():
        return from_name, to_name, key, choices
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InputError(f"label_config is not valid XML ({e}); send the project's labeling config") from None
    el = next((x for x in root.iter() if x.tag == "Choices"), None)
    if el is not None:
        from_name = el.get("name") or from_name
        to_name = el.get("toName") or to_name
        choices = [c.get("value") or "" for c in el.iter("Choice")]
    for x in root.iter():
        value = x.get("value") or ""
        if x.get("name") == to_name and value.startswith("$"):
            key = value[1:]
            break
    return from_name, to_name, key, choices


def router(st: ServerState) -> APIRouter:
    router = APIRouter(tags=["label studio"])

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="allow")
        tasks: list[LSTask] = Field(max_length=st.max_items)
        label_config: str | None = None

    @router.post("/setup", responses=errors(401, 422))
    async def ls_setup(body: LSSetup) -> dict[str, Any]:
        """Label Studio connects a project: answers with the model version. Its access_token is neither kept
        nor echoed; nor is it made a secret to redact: only the operator's configuration adds to that list."""
        return {"model_version": st.model_version}

    @router.post("/predict", responses=errors(401, 413, 422, 502))
    async def ls_predict(body: PredictRequest) -> dict[str, Any]:
        """Pre-annotations: one `choices` result per task, scored by the ensemble's confidence."""
        from_name, to_name, key, choices = parse_label_config(body.label_config)
        job = await st.job(st.cfg.kind)

        def text_of(data: dict[str, Any]) -> str:
            # (lone surrogates in free-form task data are cleaned by Job.start, as in files)
            for k in (key, st.cfg.task.text_column, "text"):
                if k and isinstance(data.get(k), str):
                    return data[k]
            return next((v for v in data.values() if isinstance(v, str)), "")

        texts = [text_of(t.data) for t in body.tasks]
        check_text_sizes(texts, st.max_text_chars)
        recs = await label_items(job, [(t, None) for t in texts])
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

    return router
