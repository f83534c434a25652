"""The review loop's Label Studio transport: rows to review go to a project (created or updated through its REST
API, with the model's suggestion as a prediction and the given label beside it), and the submitted annotations
come back as human answers (from the API or an export file).

Plain httpx with `Authorization: Token <key>` (Label Studio's legacy token; a personal access token, a JWT, is
exchanged for an access token first). Every failure a user can fix is one line (ConfigError / InputError)."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from llmlabel.errors import ConfigError, InputError
from llmlabel.io.labelstudio import (
    ROW_ID_KEY,
    choice_result,
    latest_per_row,
    map_taxonomy,
    parse_config,
    review_config,
    task_answers,
    taxonomy_config,
    taxonomy_result,
)
from llmlabel.review.kinds import LabelKind
from llmlabel.review.records import HumanAnswer, ReviewItem

MODEL_VERSION = "llmlabel-review"
IMPORT_BATCH = 500
PAGE_SIZE = 500


class _Token(httpx.Auth):
    """Label Studio's credentials: a legacy token as `Token <key>`; a personal access token (a JWT refresh
    token) exchanged for a short-lived access token, exchanged again when Label Studio says it expired."""

    def __init__(self, url: str, token: str, transport: httpx.BaseTransport | None) -> None:
        self.url, self.token, self.transport = url, token.strip(), transport
        if not self.token:
            raise ConfigError("no Label Studio token: pass the Access Token from Label Studio's Account & Settings")
        self.jwt = self.token.count(".") == 2 and self.token.startswith("eyJ")
        self.access: str | None = None

    def _refresh(self) -> str:
        with httpx.Client(base_url=self.url, timeout=30, transport=self.transport) as c:
            r = _send(c, "POST", "/api/token/refresh/", json={"refresh": self.token})
        self.access = str(r.json()["access"])
        return self.access

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not self.jwt:
            request.headers["Authorization"] = f"Token {self.token}"
            yield request
            return
        request.headers["Authorization"] = f"Bearer {self.access or self._refresh()}"
        response = yield request
        if response.status_code == 401:  # the access token expired (minutes): once more with a new one
            request.headers["Authorization"] = f"Bearer {self._refresh()}"
            yield request


def _send(c: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    """One API call; a failure as one line saying what to fix (the token never appears in it)."""
    try:
        r = c.request(method, path, **kw)
    except httpx.HTTPError as e:
        raise ConfigError(f"cannot reach Label Studio at {c.base_url} ({type(e).__name__}); check the URL") from None
    if r.status_code in (401, 403):
        raise ConfigError(
            f"Label Studio at {c.base_url} refused the token ({r.status_code}: {_detail(r)}) for {path}: use the "
            "Access Token from Account & Settings (a legacy token needs legacy tokens enabled in the organization)"
        )
    if r.status_code == 404 and path.startswith("/api/projects/"):
        project = path.split("/")[3]
        raise InputError(f"Label Studio at {c.base_url} has no project {project} (or this token cannot see it)")
    if r.status_code >= 400:
        raise InputError(f"Label Studio refused {method} {path} ({r.status_code}): {_detail(r)}")
    return r


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300].replace("\n", " ")
    if isinstance(body, dict):
        for k in ("validation_errors", "detail", "message", "error"):
            if body.get(k):
                return json.dumps(body[k], ensure_ascii=False)[:300]
    return json.dumps(body, ensure_ascii=False)[:300]


def _client(url: str, token: str, transport: httpx.BaseTransport | None) -> httpx.Client:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"Label Studio URL {url!r} must start with http:// or https://")
    return httpx.Client(base_url=url, auth=_Token(url, token, transport), timeout=120, transport=transport)


def _tasks(c: httpx.Client, project: int, fields: str = "all") -> Iterator[dict[str, Any]]:
    """Every task of a project, page by page."""
    page = 1
    while True:
        params: dict[str, str | int] = {"project": project, "page": page, "page_size": PAGE_SIZE, "fields": fields}
        r = c.get("/api/tasks", params=params)
        if r.status_code == 404 and page > 1:  # past the last page
            return
        body = _send(c, "GET", "/api/tasks", params=params).json() if r.status_code >= 400 else r.json()
        tasks = body.get("tasks", []) if isinstance(body, dict) else body
        yield from tasks
        total = body.get("total") if isinstance(body, dict) else None
        if len(tasks) < PAGE_SIZE or (total is not None and page * PAGE_SIZE >= total):
            return
        page += 1


def _result(kind: LabelKind, key: str, from_name: str, to_name: str, score: float | None) -> dict[str, Any] | None:
    """A suggestion as its control's result: a choice, a set of choices, a taxonomy path (an empty set: none)."""
    if kind.name == "multilabel":
        got = sorted(kind.members(key), key=kind.labels.index)
        return choice_result(got, from_name, to_name, score) if got else None
    if kind.name == "taxonomy":
        return taxonomy_result(kind.path(key), from_name, to_name, score)
    return choice_result(key, from_name, to_name, score)


def _task(item: ReviewItem, text_key: str, from_name: str, to_name: str, kind: LabelKind) -> dict[str, Any]:
    conf = "" if item.confidence is None else f"{item.confidence:.2f}"
    task: dict[str, Any] = {
        "data": {
            text_key: item.text,
            ROW_ID_KEY: item.id,
            "given_label": item.given_label if item.given_label is not None else "(none)",
            "suggested_label": item.label if item.label is not None else "(none)",
            "confidence": conf or "n/a",
            "why": item.why,
            "pick": item.pick,
        }
    }
    res = _result(kind, item.label, from_name, to_name, item.confidence) if item.label is not None else None
    if res is not None:
        task["predictions"] = [{"model_version": MODEL_VERSION, "score": item.confidence, "result": [res]}]
    return task


def push(
    url: str,
    token: str,
    items: list[ReviewItem],
    labels: list[str],
    project: int | None = None,
    title: str = "llmlabel review",
    text_key: str = "text",
    from_name: str = "label",
    to_name: str = "text",
    *,
    transport: httpx.BaseTransport | None = None,
    kind: LabelKind | None = None,
) -> int:
    """Create (project None) or update a review project and import the items not already in it (by row id:
    pushing again adds no duplicates); returns the project's id. Its labeling config shows the text, the given
    label, the model's suggestion with its confidence, and why the row was picked; each choice is a label."""
    kind = kind or LabelKind("single", tuple(labels))
    if len(set(labels)) < 2:
        raise InputError(f"a review needs at least two labels, not {labels}")
    for it in items:
        for what, lab in (("label", it.label), ("given_label", it.given_label)):
            if lab is not None and kind.parse(lab) != lab:
                raise InputError(
                    f"row {it.id}: its {what} {lab!r} is not "
                    + (f"one of the labels ({', '.join(labels)})" if kind.single else kind.example())
                    + "; "
                    "review with the config the output was labeled with"
                )
    if kind.name == "taxonomy":
        assert kind.tree is not None
        config = taxonomy_config(kind.tree, text_key, from_name, to_name, review=True)
    else:
        config = review_config(labels, text_key, from_name, to_name, multiple=kind.name == "multilabel")
    with _client(url, token, transport) as c:
        if project is None:
            r = _send(c, "POST", "/api/projects", json={"title": title, "label_config": config})
            project = int(r.json()["id"])
            known: set[str] = set()
        else:
            current = _send(c, "GET", f"/api/projects/{project}").json()
            if current.get("label_config") != config:
                _check_choices(current.get("label_config"), labels, project, kind)
                _send(c, "PATCH", f"/api/projects/{project}", json={"label_config": config})
            known = {
                str((t.get("data") or {}).get(ROW_ID_KEY))
                for t in _tasks(c, project, fields="all")
                if (t.get("data") or {}).get(ROW_ID_KEY) is not None
            }
        new, seen = [], set(known)
        for it in items:
            if it.id not in seen:
                seen.add(it.id)
                new.append(_task(it, text_key, from_name, to_name, kind))
        for at in range(0, len(new), IMPORT_BATCH):
            _send(c, "POST", f"/api/projects/{project}/import", json=new[at : at + IMPORT_BATCH])
    return project


def _check_choices(xml: str | None, labels: Sequence[str], project: int, kind: LabelKind) -> None:
    """A project whose choices (or taxonomy) are not the labels (another task's project) is refused, not
    rewritten."""
    if kind.name == "taxonomy" and xml and "<Taxonomy" in xml:
        assert kind.tree is not None
        try:
            ctl = parse_config(xml, taxonomy=True)
        except InputError:
            return
        map_taxonomy(ctl.taxonomy, kind.tree, f"Label Studio project {project}")
        return
    if not xml or "<Choices" not in xml:
        return
    try:
        ctl = parse_config(xml)
    except InputError:
        return  # not one we wrote: Label Studio itself refuses a change that breaks its annotations
    extra = [c for c in ctl.choices if c not in labels]
    if extra:
        raise InputError(
            f"Label Studio project {project} has choices {', '.join(map(repr, extra))} that are not labels of this "
            f"task ({', '.join(labels)}): push to a new project (no --project) or one made for this task"
        )


def _answers(tasks: list[dict[str, Any]], from_name: str | None, users: dict[str, str]) -> list[HumanAnswer]:
    got = []
    for t in tasks:
        if not isinstance(t, dict):
            raise InputError("not a Label Studio JSON export: expected a list of tasks (export as JSON)")
        got += task_answers(t, from_name)
    return [
        HumanAnswer(
            id=a.row_id, label=a.label, annotator=users.get(a.annotator or "", a.annotator), source="labelstudio"
        )
        for a in latest_per_row(got)
    ]


def pull(url: str, token: str, project: int, *, transport: httpx.BaseTransport | None = None) -> list[HumanAnswer]:
    """The project's submitted annotations (skipped ones left out), the latest per task, with who answered."""
    with _client(url, token, transport) as c:
        cfg = _send(c, "GET", f"/api/projects/{project}").json().get("label_config")
        try:
            from_name: str | None = parse_config(cfg).from_name
        except InputError:
            from_name = None
        tasks = [t for t in _tasks(c, project) if t.get("annotations")]
        users: dict[str, str] = {}
        r = c.get("/api/users")
        if r.status_code == 200 and isinstance(r.json(), list):
            users = {
                str(u.get("id")): str(u.get("email") or u.get("username")) for u in r.json() if isinstance(u, dict)
            }
    return _answers(tasks, from_name, users)


def read_export(path: str | Path) -> list[HumanAnswer]:
    """The answers in a Label Studio JSON export (Export > JSON): the latest annotation per task."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"Label Studio export {p} not found") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{p} is not a Label Studio JSON export ({type(e).__name__}); export as JSON") from None
    if not isinstance(data, list):
        raise InputError(f"{p} is not a Label Studio JSON export: expected a list of tasks (export as JSON)")
    if data and isinstance(data[0], dict) and "annotations" not in data[0] and "data" not in data[0]:
        raise InputError(f"{p} looks like a JSON-MIN or CSV-style export; export as JSON (full), which has annotations")
    return _answers(data, None, {})
