"""The review loop's Label Studio transport (llmlabel.review.labelstudio) against a fake of Label Studio's REST
API (respx): push creates or updates a project and imports each row once, pull and read_export give the
latest submitted answer per row with who answered, and what a user can get wrong is one line."""

import json

import httpx
import pytest
import respx

from llmlabel.errors import ConfigError, InputError
from llmlabel.io.labelstudio import parse_config
from llmlabel.review.labelstudio import pull, push, read_export
from llmlabel.review.records import HumanAnswer, ReviewItem

URL = "http://ls.test:8080"
TOKEN = "ls-legacy-token-abc"
LABELS = ["positive", "negative"]
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2ln"  # a personal access token's shape


class FakeLS:
    """Projects, tasks and users, as Label Studio 1.23's API returns them (legacy token auth)."""

    def __init__(self) -> None:
        self.projects: dict[int, dict] = {}
        self.tasks: list[dict] = []
        self.imports = 0
        self.access = 0  # the current access token's number (a personal access token's exchange)
        self.refreshes = 0
        self.expire_on_get = False  # the access token expires right after a GET of a project
        self.router = respx.MockRouter(base_url=URL, assert_all_called=False)
        r = self.router
        r.route(method="POST", path="/api/projects").mock(side_effect=self.create)
        r.route(method="GET", path__regex=r"^/api/projects/(?P<pid>\d+)$").mock(side_effect=self.get_project)
        r.route(method="PATCH", path__regex=r"^/api/projects/(?P<pid>\d+)$").mock(side_effect=self.patch_project)
        r.route(method="POST", path__regex=r"^/api/projects/(?P<pid>\d+)/import$").mock(side_effect=self.import_)
        r.route(method="GET", path="/api/tasks").mock(side_effect=self.list_tasks)
        r.route(method="POST", path="/api/token/refresh/").mock(side_effect=self.refresh)
        r.route(method="GET", path="/api/users").mock(
            return_value=httpx.Response(200, json=[{"id": 1, "email": "ann@example.com"}, {"id": 2, "email": "bob@x"}])
        )

    def refresh(self, request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["refresh"] != JWT:
            return httpx.Response(401, json={"detail": "Token is invalid or expired"})
        self.access += 1
        self.refreshes += 1
        return httpx.Response(200, json={"access": f"acc-{self.access}"})

    def auth(self, request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("authorization") not in (f"Token {TOKEN}", f"Bearer acc-{self.access}"):
            return httpx.Response(401, json={"detail": "Invalid token."})
        return None

    def create(self, request: httpx.Request) -> httpx.Response:
        if (bad := self.auth(request)) is not None:
            return bad
        body = json.loads(request.content)
        pid = len(self.projects) + 1
        self.projects[pid] = {"id": pid, **body}
        return httpx.Response(201, json=self.projects[pid])

    def get_project(self, request: httpx.Request, pid: str) -> httpx.Response:
        if (bad := self.auth(request)) is not None:
            return bad
        p = self.projects.get(int(pid))
        if self.expire_on_get:
            self.access += 1
        return httpx.Response(200, json=p) if p else httpx.Response(404, json={"detail": "Not found."})

    def patch_project(self, request: httpx.Request, pid: str) -> httpx.Response:
        self.projects[int(pid)].update(json.loads(request.content))
        return httpx.Response(200, json=self.projects[int(pid)])

    def import_(self, request: httpx.Request, pid: str) -> httpx.Response:
        self.imports += 1
        for t in json.loads(request.content):
            self.tasks.append({"id": len(self.tasks) + 1, "project": int(pid), "annotations": [], **t})
        return httpx.Response(201, json={"task_count": len(self.tasks)})

    def list_tasks(self, request: httpx.Request) -> httpx.Response:
        if (bad := self.auth(request)) is not None:
            return bad
        q = request.url.params
        mine = [t for t in self.tasks if t["project"] == int(q["project"])]
        page, size = int(q.get("page", 1)), int(q.get("page_size", 100))
        chunk = mine[(page - 1) * size : page * size]
        if page > 1 and not chunk:
            return httpx.Response(404, json={"detail": "Invalid page."})
        return httpx.Response(200, json={"tasks": chunk, "total": len(mine)})


@pytest.fixture
def ls():
    fake = FakeLS()
    with fake.router:
        yield fake


def items(n: int, start: int = 0) -> list[ReviewItem]:
    return [
        ReviewItem(
            id=f"r{i}",
            text=f"text {i}",
            label=LABELS[i % 2],
            confidence=0.55 + i / 100,
            pick="validation" if i % 3 == 0 else "targeted",
            why="random validation sample" if i % 3 == 0 else "judges disagree",
            given_label=LABELS[(i + 1) % 2] if i % 2 else None,
        )
        for i in range(start, start + n)
    ]


def test_push_creates_then_updates_without_duplicates(ls):
    pid = push(URL, TOKEN, items(5), LABELS, title="round 1")
    config = ls.projects[pid]["label_config"]
    ctl = parse_config(config, LABELS)
    assert (ctl.from_name, ctl.to_name, ctl.text_key, ctl.choices) == ("label", "text", "text", tuple(LABELS))
    assert "$given_label" in config and "$suggested_label" in config and "$why" in config
    t = ls.tasks[1]
    assert t["data"] == {
        "text": "text 1",
        "row_id": "r1",
        "given_label": "positive",
        "suggested_label": "negative",
        "confidence": "0.56",
        "why": "judges disagree",
        "pick": "targeted",
    }
    (pred,) = t["predictions"]
    assert pred["score"] == 0.56 and pred["result"][0]["value"]["choices"] == ["negative"]
    assert pred["result"][0]["from_name"] == "label" and pred["result"][0]["to_name"] == "text"
    # Pushing again (the same rows and two new ones) imports only the new ones, into the same project.
    assert push(URL, TOKEN, items(7), LABELS, project=pid) == pid
    assert [t["data"]["row_id"] for t in ls.tasks] == [f"r{i}" for i in range(7)]
    assert push(URL, TOKEN, items(7), LABELS, project=pid) == pid and len(ls.tasks) == 7


def test_push_with_other_names(ls):
    pid = push(URL, TOKEN, items(2), LABELS, text_key="body", from_name="sentiment", to_name="review")
    ctl = parse_config(ls.projects[pid]["label_config"], LABELS)
    assert (ctl.from_name, ctl.to_name, ctl.text_key) == ("sentiment", "review", "body")
    assert ls.tasks[0]["data"]["body"] == "text 0"
    assert ls.tasks[0]["predictions"][0]["result"][0]["from_name"] == "sentiment"


def annotate(task: dict, choice: str, ann_id: int, by: int, updated: str, cancelled: bool = False) -> None:
    task["annotations"].append(
        {
            "id": ann_id,
            "completed_by": by,
            "was_cancelled": cancelled,
            "updated_at": updated,
            "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}],
        }
    )


def test_pull_gives_the_latest_answer_per_row_and_who_gave_it(ls, tmp_path):
    pid = push(URL, TOKEN, items(4), LABELS)
    annotate(ls.tasks[0], "positive", 1, 1, "2026-01-01T10:00:00Z")
    annotate(ls.tasks[0], "negative", 2, 2, "2026-01-02T10:00:00Z")  # later: this one counts
    annotate(ls.tasks[1], "negative", 3, 1, "2026-01-01T10:00:00Z")
    annotate(ls.tasks[2], "positive", 4, 1, "2026-01-01T10:00:00Z", cancelled=True)  # skipped: no answer
    got = pull(URL, TOKEN, pid)
    assert got == [
        HumanAnswer("r0", "negative", "bob@x", "labelstudio"),
        HumanAnswer("r1", "negative", "ann@example.com", "labelstudio"),
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(ls.tasks))
    assert [(a.id, a.label, a.annotator) for a in read_export(export)] == [
        ("r0", "negative", "2"),
        ("r1", "negative", "1"),
    ]


def test_errors_are_one_clear_line(ls, tmp_path):
    with pytest.raises(ConfigError, match=r"refused the token \(401: \"Invalid token.\"\)") as e:
        push(URL, "wrong-token", items(1), LABELS)
    assert "wrong-token" not in str(e.value)
    with pytest.raises(InputError, match="has no project 99"):
        pull(URL, TOKEN, 99)
    with pytest.raises(InputError, match=r"row r0: its label 'positive' is not one of the labels \(yes, no\)"):
        push(URL, TOKEN, items(1), ["yes", "no"])
    other = push(URL, TOKEN, [], ["spam", "ham"])
    with pytest.raises(InputError, match=r"project 1 has choices 'spam', 'ham' that are not labels of this task"):
        push(URL, TOKEN, items(1), LABELS, project=other)
    with pytest.raises(ConfigError, match="must start with http"):
        push("ls.test", TOKEN, items(1), LABELS)
    with pytest.raises(InputError, match="not found"):
        read_export(tmp_path / "none.json")
    (tmp_path / "min.json").write_text(json.dumps([{"id": 1, "text": "x", "label": "positive"}]))
    with pytest.raises(InputError, match="export as JSON"):
        read_export(tmp_path / "min.json")


def test_a_personal_access_token_is_exchanged_and_renewed(ls):
    pid = push(URL, JWT, items(3), LABELS)
    assert ls.refreshes == 1 and len(ls.tasks) == 3
    ls.expire_on_get = True  # mid-push, the access token expires: a 401, and the client renews it once
    assert push(URL, JWT, items(4), LABELS, project=pid) == pid and len(ls.tasks) == 4
    assert ls.refreshes == 3  # a new client exchanges once, then once more after the 401


def test_a_taxonomy_or_multi_label_review_project(ls, tmp_path):
    from llmlabel.review.kinds import LabelKind
    from llmlabel.taxonomy import Taxonomy

    tree = Taxonomy.parse({"animals": {"mammals": ["dog", "cat"]}, "vehicles": ["car", "bike"]})
    kind = LabelKind("taxonomy", tuple(tree.names()), tree)
    rows = [
        ReviewItem("r0", "a dog", "animals > mammals > dog", 0.5, "validation", "random sample"),
        ReviewItem("r1", "wheels", "vehicles", 0.9, "targeted", "path confidence 0.90 at depth 1"),
    ]
    pid = push(URL, TOKEN, rows, kind.labels, from_name="taxonomy", kind=kind)
    config = ls.projects[pid]["label_config"]
    ctl = parse_config(config, taxonomy=True)
    assert ctl.from_name == "taxonomy" and ("animals", "mammals", "dog") in ctl.taxonomy and "$why" in config
    pred = ls.tasks[0]["predictions"][0]["result"][0]
    assert pred["type"] == "taxonomy" and pred["value"] == {"taxonomy": [["animals", "mammals", "dog"]]}
    assert ls.tasks[1]["predictions"][0]["result"][0]["value"] == {"taxonomy": [["vehicles"]]}
    # A reviewer's path comes back as the path (one path per task; two chosen in one task are no one answer).
    ls.tasks[0]["annotations"].append(
        {
            "id": 1,
            "completed_by": 1,
            "updated_at": "2026-01-01T00:00:00Z",
            "result": [
                {
                    "from_name": "taxonomy",
                    "to_name": "text",
                    "type": "taxonomy",
                    "value": {"taxonomy": [["animals", "mammals", "cat"]]},
                }
            ],
        }
    )
    ls.tasks[1]["annotations"].append(
        {
            "id": 2,
            "completed_by": 1,
            "updated_at": "2026-01-01T00:00:00Z",
            "result": [
                {
                    "from_name": "taxonomy",
                    "to_name": "text",
                    "type": "taxonomy",
                    "value": {"taxonomy": [["vehicles", "car"], ["vehicles", "bike"]]},
                }
            ],
        }
    )
    assert pull(URL, TOKEN, pid) == [HumanAnswer("r0", "animals > mammals > cat", "ann@example.com", "labelstudio")]
    # Pushing into a project of another tree is refused, not rewritten.
    other = Taxonomy.parse({"plants": ["tree", "bush"], "vehicles": ["car", "bike"]})
    with pytest.raises(InputError, match="has the node 'animals', which task.taxonomy has not"):
        push(
            URL,
            TOKEN,
            [ReviewItem("r9", "a car", "vehicles > car", 0.5, "targeted", "")],
            tuple(other.names()),
            project=pid,
            from_name="taxonomy",
            kind=LabelKind("taxonomy", tuple(other.names()), other),
        )

    # Multi-label: a multiple-choice project; the suggestion is the set, a reviewer's set comes back joined.
    mk = LabelKind("multilabel", ("joy", "anger", "fear"))
    mrows = [ReviewItem("m0", "yay", "joy|fear", 0.4, "targeted", "unsure of fear (0.50)")]
    mid = push(URL, TOKEN, mrows, mk.labels, kind=mk)
    assert parse_config(ls.projects[mid]["label_config"]).multiple
    task = next(t for t in ls.tasks if t["project"] == mid)
    assert task["predictions"][0]["result"][0]["value"] == {"choices": ["joy", "fear"]}
    annotate(task, "anger", 3, 2, "2026-01-01T00:00:00Z")
    task["annotations"][-1]["result"][0]["value"]["choices"] = ["fear", "anger"]
    export = tmp_path / "export.json"
    export.write_text(json.dumps([task]))
    (got,) = read_export(export)
    assert got.label == "fear|anger" and mk.parse(got.label) == "anger|fear"  # the review reads it as the set
