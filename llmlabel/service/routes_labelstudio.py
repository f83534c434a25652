"""Label Studio's ML backend protocol: /setup, /predict (pre-annotations from the ensemble), /webhook (its
events: annotations become gold rows, START_TRAINING refits), /train and /versions.

The project's choices are the label set: each maps to a task label (same name ignoring case, or
`llmlabel serve --ls-label CHOICE=LABEL`), and the judges choose among the mapped labels only. A taxonomy task
is served through a <Taxonomy> control whose tree must be task.taxonomy's (its predictions are the path reached,
its annotations gold paths); a multi-label task through <Choices choice="multiple">. A config llmlabel cannot
fill (span labels, multi-choice for a single-label task, no text, choices that map to no label, another tree) is
refused at /setup.

Label Studio shows none of a backend's error text (only "403 Client Error: Forbidden for url"), so each refusal
is also logged on the server's console in one line."""

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict

from llmlabel.errors import InputError, LLMLabelError
from llmlabel.io.labelstudio import (
    LSAnswer,
    LSControl,
    choice_result,
    map_choices,
    map_taxonomy,
    parse_config,
    task_answers,
    taxonomy_result,
)
from llmlabel.redaction import one_line
from llmlabel.service.error_handlers import DETAIL
from llmlabel.service.gold import project_id
from llmlabel.service.schemas import LSSetup, LSTask, errors
from llmlabel.service.state import ItemSink, ServerState, item_row, run_items
from llmlabel.taxonomy import Taxonomy, path_key

log = logging.getLogger("llmlabel.service.labelstudio")

# The events of Label Studio's webhooks that carry what llmlabel learns from; others are acknowledged.
GOLD_ACTIONS = frozenset({"ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "TASKS_CREATED"})
KNOWN_ACTIONS = GOLD_ACTIONS | {
    "START_TRAINING",
    "ANNOTATIONS_DELETED",
    "TASKS_DELETED",
    "PROJECT_CREATED",
    "PROJECT_UPDATED",
    "PROJECT_DELETED",
    "LABEL_LINK_CREATED",
    "LABEL_LINK_UPDATED",
    "LABEL_LINK_DELETED",
}
WEBHOOK_BURST, WEBHOOK_PER_SECOND = 600, 10.0  # unauthenticated webhook requests: a token bucket


@dataclass(frozen=True)
class Served:
    """How a project's config is served: its control, each choice's task label, and the labels asked; for a
    <Taxonomy> control, each of its node paths' task.taxonomy node (the judges then walk the whole tree)."""

    control: LSControl
    to_label: dict[str, str]  # choice -> task label
    to_node: dict[tuple[str, ...], tuple[str, ...]] | None = None  # <Taxonomy> path -> task.taxonomy path

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.to_label.values())

    def choice(self, label: str) -> str:
        return next(c for c, lab in self.to_label.items() if lab == label)

    def node(self, path: list[str]) -> list[str]:
        """A task.taxonomy path as the project's <Taxonomy> spells it."""
        assert self.to_node is not None
        return list(next(p for p, n in self.to_node.items() if list(n) == path))


def served(st: ServerState, label_config: str | None) -> Served:
    """The project's control and label mapping, or InputError saying what to change in its config."""
    labels = st.cfg.task.label_names
    if st.cfg.task.taxonomy is not None:
        tax = Taxonomy.parse(st.cfg.task.taxonomy)
        if not label_config or not label_config.strip():  # no config sent: the task's own tree
            nodes = tuple(tax.paths())
            ctl = LSControl("taxonomy", "text", None, taxonomy=nodes)
        else:
            ctl = parse_config(label_config, labels, st.ls_label_map, taxonomy=True)
        return Served(ctl, {lab: lab for lab in labels}, map_taxonomy(ctl.taxonomy, tax))
    ctl = parse_config(label_config, labels, st.ls_label_map, st.cfg.task.multi_label, taxonomy=False)
    if not label_config or not label_config.strip():
        return Served(ctl, {lab: lab for lab in labels})
    return Served(ctl, map_choices(ctl.choices, labels, st.ls_label_map))


class TaskFailed(Exception):
    """One task cannot be labeled (its text is missing or not a string): its result says why, the others go on."""


def task_text(data: Mapping[str, Any], key: str, limit: int) -> tuple[str, bool]:
    """The task's text under `key` (never another field), cut to `limit` characters (the judges then read
    their max_text_tokens of it, as they would of the full text); and whether it was cut."""
    if key not in data:
        raise TaskFailed(f"data has no {key!r} (the config's text field); its fields: {', '.join(list(data)[:10])}")
    value = data[key]
    if not isinstance(value, str):
        what = "null" if value is None else type(value).__name__
        raise TaskFailed(f"data.{key} is {what}, not a text")
    if not value.strip():
        raise TaskFailed(f"data.{key} is empty")
    return (value[:limit], True) if len(value) > limit else (value, False)


class WebhookBucket:
    """How many unauthenticated webhook requests may come now: WEBHOOK_BURST, refilled WEBHOOK_PER_SECOND."""

    def __init__(self) -> None:
        self.tokens, self.at = float(WEBHOOK_BURST), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(WEBHOOK_BURST, self.tokens + (now - self.at) * WEBHOOK_PER_SECOND)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[LSTask]  # any number: labeled in chunks of --max-items
    label_config: str | None = None
    project: str | int | None = None


class WebhookEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    action: str
    project: dict[str, Any] | int | str | None = None


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    annotations: list[dict[str, Any]] = []
    project: str | int | None = None
    label_config: str | None = None


def router(st: ServerState) -> APIRouter:
    router = APIRouter(tags=["label studio"])
    bucket = WebhookBucket()
    refitted: set[int] = set()  # projects whose stored gold was refit since the server started

    def refused(where: str, e: LLMLabelError) -> HTTPException:
        log.warning("Label Studio %s refused: %s", where, one_line(e, DETAIL))
        return HTTPException(422, one_line(e, DETAIL))

    def version(project: int | None, how: Served | None) -> str:
        """The model version of a project's predictions: the judges and task (st.model_version), the project's
        control and choice mapping (a changed choice set is a new model: Label Studio asks again), and its
        refit (a new one after each: Label Studio asks again, from the cache, for the new scores)."""
        v = st.model_version
        if how is not None and how.control != LSControl():
            c = how.control
            what = json.dumps([c.from_name, c.to_name, c.text_key, how.to_label] + ([c.taxonomy] if c.taxonomy else []))
            v += "-" + hashlib.sha256(what.encode()).hexdigest()[:6]
        if project is not None and st.gold is not None and project in st.gold.calibration:
            v += f"-cal{st.gold.calibrated_on.get(project, 0)}"
        return v

    def stored(project: int | None) -> Served | None:
        """The served form of the config a project's last /setup sent."""
        xml = st.gold.label_config(project) if project is not None and st.gold is not None else None
        try:
            return served(st, xml) if xml else None
        except LLMLabelError:
            return None

    async def ensure_refit(project: int | None) -> None:
        if project is None or project in refitted or st.gold is None:
            return
        refitted.add(project)
        if st.gold.gold(project):
            await asyncio.to_thread(st.gold.refit, project)

    @router.post("/setup", responses=errors(401, 422))
    async def ls_setup(body: LSSetup) -> dict[str, Any]:
        """Label Studio connects a project: its labeling config is checked (422 when llmlabel cannot fill it)
        and the model version returned. Its access_token is neither kept nor echoed."""
        try:
            how = served(st, body.schema_)
        except LLMLabelError as e:
            raise refused("/setup", e) from None
        project = project_id(body.project)
        if project is not None and st.gold is not None:
            st.gold.connect(project, body.schema_)
        await ensure_refit(project)
        return {"model_version": version(project, how), "labels": list(how.to_label)}

    @router.post("/predict", responses=errors(401, 422, 502))
    async def ls_predict(body: PredictRequest) -> dict[str, Any]:
        """Pre-annotations: one `choices` result per task, scored by the ensemble's confidence (recalibrated on
        the project's gold rows after /train). A task that cannot be labeled gets an entry without `result`
        (Label Studio logs it and saves nothing, so the next "Retrieve predictions" asks again); so does one
        still being labeled at --predict-deadline: it goes on, and the next call takes it from the cache."""
        try:
            how = served(st, body.label_config)
        except LLMLabelError as e:
            raise refused("/predict", e) from None
        project = project_id(body.project)
        await ensure_refit(project)
        labeler = await st.labeler(st.cfg.kind, how.labels)
        ver = version(project, how)
        key = how.control.text_key or (st.cfg.task.text_column if body.label_config is None else "text")
        if body.label_config is None and not any(key in t.data for t in body.tasks):
            key = "text"
        n = len(body.tasks)
        done: list[dict[str, Any] | None] = [None] * n
        cut = 0
        rows = []
        for i in range(n):
            try:
                text, was_cut = task_text(body.tasks[i].data, key, st.max_text_chars)
            except TaskFailed as e:
                done[i] = {"error": str(e)}
                continue
            cut += was_cut
            rows.append((i, item_row(text, None)))

        async def run_all() -> None:
            # Every task as a row of one run (the local executor: the window, the clean stop); each finished
            # task is in `done` at once, so a deadline answers what is done. No whole-request refit: a task's
            # prediction does not depend on which other tasks came with it.
            def finished(i: int, outcome: dict[str, Any]) -> None:
                done[i] = outcome

            try:
                await run_items(labeler, rows, ItemSink(n, finished))
            except LLMLabelError as e:  # a judge that stops the run: the tasks not labeled say why
                failure = {"error": one_line(e, DETAIL)}
            except Exception as e:
                log.error("/predict: the tasks failed: %s", one_line(f"{type(e).__name__}: {e}", DETAIL))
                failure = {"error": "internal error; see the llmlabel server's log"}
            else:
                return
            for i, _ in rows:
                if done[i] is None:
                    done[i] = failure

        runner = asyncio.ensure_future(run_all())
        # Held until done, past the deadline or a client that gave up: it finishes into the cache, and the next
        # call is served from it.
        st.background.add(runner)
        runner.add_done_callback(st.background.discard)
        try:
            await asyncio.wait_for(asyncio.shield(runner), st.predict_deadline)
        except asyncio.TimeoutError:
            log.warning(
                "/predict: %d of %d tasks still labeling at the %gs deadline; they go on, and Label Studio's next "
                "'Retrieve predictions' gets them from the cache",
                sum(d is None for d in done),
                n,
                st.predict_deadline,
            )
        out: list[dict[str, Any]] = []
        saved = []
        failed = 0
        for t, r in zip(body.tasks, done):
            if r is None:
                out.append({"model_version": ver, "error": "still labeling: retrieve predictions again"})
                continue
            multi = how.control.multiple and r.get("labels") is not None  # a set, possibly empty
            path = r.get("path") if how.to_node is not None else None
            if r.get("label") is None and not multi or (how.to_node is not None and not path):
                failed += 1
                out.append({"model_version": ver, "error": r.get("error") or "no judge gave a valid label"})
                continue
            conf = r.get("confidence")
            score = st.gold.score(project, conf) if st.gold is not None else conf
            if path:  # a taxonomy: the path reached (a row that stopped early ends at an inner node)
                node = how.node(list(path))
                res = taxonomy_result(node, how.control.from_name, how.control.to_name, score)
                out.append({"result": [res], "score": score, "model_version": ver})
                if project is not None and isinstance(t.id, int):
                    saved.append((t.id, path_key(node), conf))
                continue
            choice: str | list[str] = [how.choice(x) for x in r["labels"]] if multi else how.choice(r["label"])
            res = choice_result(choice, how.control.from_name, how.control.to_name, score)
            # an empty set is a prediction with no result (Label Studio refuses a choices result without choices)
            out.append({"result": [res] if choice else [], "score": score, "model_version": ver})
            if project is not None and isinstance(t.id, int):
                saved.append((t.id, choice if isinstance(choice, str) else "|".join(choice), conf))
        if saved and st.gold is not None and project is not None:
            st.gold.predicted(project, saved, ver)
        if failed:
            log.warning("/predict: %d of %d tasks failed (each alone; the others were labeled)", failed, n)
        if cut:
            log.info("/predict: %d texts over --max-text-chars were cut to it", cut)
        st.items["predict"] = st.items.get("predict", 0) + n
        return {"results": out, "model_version": ver}

    def store_gold(project: int, how: Served | None, tasks: list[dict[str, Any]]) -> int:
        if st.gold is None:
            return 0
        answers: list[LSAnswer] = []
        for t in tasks:
            if isinstance(t, dict):
                answers += task_answers(
                    t, how.control.from_name if how else None, how.control.text_key if how else None
                )
        return int(st.gold.add_gold(project, answers))

    def project_config(body: WebhookEvent) -> Served | None:
        cfg = body.project.get("label_config") if isinstance(body.project, dict) else None
        try:
            return served(st, cfg) if cfg else None
        except LLMLabelError:
            return None

    @router.post("/webhook", responses=errors(401, 404, 422, 429))
    async def ls_webhook(body: WebhookEvent, request: Request) -> dict[str, Any]:
        """Label Studio's events. Annotations (ANNOTATION_CREATED/UPDATED, ANNOTATIONS_CREATED, tasks imported
        with annotations) become the project's gold rows; ANNOTATIONS_DELETED removes them; START_TRAINING
        refits (see /train). Label Studio's own webhook sends no credentials: such a request is accepted only
        for a project an authenticated /setup connected, only ever stores gold rows or refits (never asks a
        judge, never spends), and is rate-limited. `llmlabel serve --webhook-needs-auth` refuses it."""
        trusted = bool(request.scope.get("llmlabel.authorized"))
        if not trusted and not bucket.take():
            raise HTTPException(429, "too many unauthenticated webhook requests; retry later")
        action = body.action
        if action not in KNOWN_ACTIONS:
            raise HTTPException(422, f"unknown Label Studio webhook action {action[:60]!r}")
        project = project_id(body.project)
        if project is None:
            raise HTTPException(422, "the event names no project (project.id)")
        if st.gold is None or (not trusted and not st.gold.connected(project)):
            raise HTTPException(
                404, f"project {project} is not connected to this backend (Label Studio's /setup connects it)"
            )
        how = project_config(body)
        extra = body.model_extra or {}
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"):
            anns = extra.get("annotation")
            tasks = extra.get("task")
            anns = anns if isinstance(anns, list) else [anns]
            tasks = tasks if isinstance(tasks, list) else [tasks]
            by_id = {t.get("id"): t for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), int)}
            merged = []
            for a in anns:
                if isinstance(a, dict) and isinstance(a.get("task", 0), int):
                    t = by_id.get(a.get("task")) or (tasks[0] if len(tasks) == 1 and isinstance(tasks[0], dict) else {})
                    merged.append({**t, "id": a.get("task", t.get("id")), "annotations": [a]})
            n = store_gold(project, how, merged)
            return {"status": "ok", "action": action, "gold_rows_stored": n}
        if action == "TASKS_CREATED":
            tasks = extra.get("tasks")
            n = store_gold(project, how, tasks if isinstance(tasks, list) else [])
            return {"status": "ok", "action": action, "gold_rows_stored": n}
        if action == "ANNOTATIONS_DELETED":
            ids = [a.get("id") for a in extra.get("annotations") or [] if isinstance(a, dict)]
            n = st.gold.remove_annotations(project, [i for i in ids if isinstance(i, int)])
            return {"status": "ok", "action": action, "gold_rows_removed": n}
        if action == "START_TRAINING":
            refit = await asyncio.to_thread(st.gold.refit, project)
            refitted.add(project)
            log.info("Label Studio training, project %d: %s", project, refit.message)
            ver = version(project, how or stored(project))
            return {"status": "ok", "action": action, "model_version": ver, **refit.as_dict()}
        return {"status": "ignored", "action": action}

    @router.post("/train", responses=errors(401, 422))
    async def ls_train(body: TrainRequest) -> dict[str, Any]:
        """Label Studio's older training call: the project's annotated tasks become gold rows, then the
        prediction scores are refit on them (Platt scaling; labels never change)."""
        project = project_id(body.project)
        if project is None or st.gold is None:
            raise HTTPException(422, "the request names no project")
        try:
            how = served(st, body.label_config) if body.label_config else None
        except InputError as e:
            raise refused("/train", e) from None
        n = store_gold(project, how, body.annotations)
        refit = await asyncio.to_thread(st.gold.refit, project)
        refitted.add(project)
        ver = version(project, how or stored(project))
        return {"status": "ok", "gold_rows_received": n, "model_version": ver, **refit.as_dict()}

    @router.get("/versions", responses=errors(401))
    async def ls_versions(project: str | None = None) -> dict[str, Any]:
        """The model versions this backend serves (one: the judges and task; a refit project adds its own)."""
        pid = project_id(project)
        current = version(pid, stored(pid))
        return {"versions": sorted({st.model_version, current}), "model_version": current}

    @router.get("/labelstudio/projects/{project}/gold", responses=errors(401, 404))
    async def ls_gold(project: Annotated[int, Path(ge=1, lt=2**63)]) -> dict[str, Any]:
        """What the backend learned from a project: its gold rows (the latest annotation per task), how many
        predictions it made there, and whether its scores are recalibrated."""
        if st.gold is None or not st.gold.connected(project):
            raise HTTPException(404, f"project {project} is not connected to this backend")
        return {**st.gold.summary(project), "rows": st.gold.gold(project)}

    return router
