"""`llmlabel serve` as Label Studio's ML backend, driven the way Label Studio 1.23 drives it (its requests' shapes
are copied from label_studio/ml/api_connector.py and webhooks/models.py): /setup refuses what it cannot serve,
/predict maps the project's choices and answers for any number of tasks, /webhook and /train turn annotations
into gold rows and refit the scores."""

import base64
import functools
import logging

import pytest

pytest.importorskip("fastapi")
from conftest import write_config  # noqa: E402
from fakeserver import pick  # noqa: E402
from fastapi.testclient import TestClient as _TestClient  # noqa: E402

from llmlabel.config import load_config  # noqa: E402
from llmlabel.service.app import create_app  # noqa: E402

TestClient = functools.partial(_TestClient, base_url="http://127.0.0.1:8000")
TOKEN = "ls-test-token-0123456789"
H = {"Authorization": f"Bearer {TOKEN}"}
LABELS = ["positive", "negative", "neutral"]


def ls_config(
    choices: list[str], name: str = "sentiment", to: str = "review", key: str = "body", extra: str = ""
) -> str:
    opts = "".join(f'<Choice value="{c}"/>' for c in choices)
    return (
        f'<View><Text name="{to}" value="${key}"/><Choices name="{name}" toName="{to}" choice="single">{opts}'
        f"</Choices>{extra}</View>"
    )


@pytest.fixture
def make(tmp_path, fake):
    def make(**kw):
        judges = [{"name": "a", "model": "fake-a", "base_url": fake.base_url, "timeout": 5, "max_attempts": 2}]
        task = {"name": "sentiment", "instructions": "Sentiment?", "labels": LABELS}
        cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=judges, task=task))
        return TestClient(create_app(cfg, token=TOKEN, state_dir=tmp_path / "state", **kw))

    return make


def setup(c, config: str, project: str = "5.1700000000", headers=H):
    return c.post("/setup", json={"project": project, "schema": config, "access_token": "ls"}, headers=headers)


def predict(c, tasks, config: str | None, project: str = "5.1700000000"):
    body = {"tasks": tasks, "project": project, "params": {"login": None, "password": None, "context": None}}
    if config is not None:
        body["label_config"] = config
    r = c.post("/predict", json=body, headers=H)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def enums(fake) -> list[list[str]]:
    return [b["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] for b in fake.bodies]


def test_setup_refuses_what_it_cannot_serve(make, caplog):
    caplog.set_level(logging.WARNING, "llmlabel")
    ner = '<View><Text name="t" value="$text"/><Labels name="ner" toName="t"><Label value="PER"/></Labels></View>'
    multi = ls_config(["positive", "negative"]).replace('choice="single"', 'choice="multiple"')
    image = '<View><Image name="img" value="$url"/><Choices name="c" toName="img"><Choice value="positive"/><Choice value="negative"/></Choices></View>'
    two_bad = ls_config(
        ["positive", "negative"],
        extra='<Choices name="topic" toName="review"><Choice value="x"/><Choice value="y"/></Choices>',
    )
    two_bad = two_bad.replace('<Choice value="positive"/>', '<Choice value="good"/>')
    with make() as c:
        cases = [
            (ner, "<Labels> (span/NER) control"),
            (multi, 'choice="single"'),
            (image, "llmlabel reads text only"),
            (ls_config(["pos", "neg"]), "'pos', 'neg' are not labels of the task"),
            (ls_config(["positive", "Positive"]), "both map to the label 'positive'"),
            (two_bad, "2 <Choices> ('sentiment', 'topic') and none whose choices are the task's labels"),
            ("<View", "not valid XML"),
        ]
        for config, msg in cases:
            r = setup(c, config)
            assert r.status_code == 422 and msg in r.json()["detail"], (msg, r.text)
            assert "\n" not in r.json()["detail"]
        # Label Studio shows only "422 Client Error": the reason is on the server's console too.
        assert "'pos', 'neg' are not labels of the task" in caplog.text and "--ls-label pos=LABEL" in caplog.text
        assert setup(c, ls_config(["Positive", "NEGATIVE"])).status_code == 200


def test_predict_uses_the_projects_choices(make, fake):
    tasks = [{"id": i, "data": {"body": f"review {i}", "other": "NOT THIS"}} for i in range(12)]
    with make(ls_label_map={"pos": "positive", "neg": "negative"}) as c:
        # Two of the task's three labels, spelled otherwise: the judges choose among those two only.
        config = ls_config(["POSITIVE", "Negative"])
        first = setup(c, config).json()
        assert first["labels"] == ["POSITIVE", "Negative"]
        res = predict(c, tasks, config)
        assert all(e == ["positive", "negative"] for e in enums(fake))
        for t, p in zip(tasks, res):
            (ann,) = p["result"]
            want = {"positive": "POSITIVE", "negative": "Negative"}[pick(t["data"]["body"], ["positive", "negative"])]
            assert (ann["from_name"], ann["to_name"], ann["value"]["choices"]) == ("sentiment", "review", [want])
        assert not any("NOT THIS" in str(b) for b in fake.bodies)  # the config's text field, never another
        # A changed choice set (mapped by --ls-label) is served at once, with all three labels when named.
        fake.bodies.clear()
        config = ls_config(["pos", "neg", "Neutral"])
        # another model version: Label Studio asks again for tasks it has predictions of the old choices for
        assert setup(c, config).json()["model_version"] != first["model_version"]
        res = predict(c, tasks, config)
        assert all(e == LABELS for e in enums(fake))
        assert {p["result"][0]["value"]["choices"][0] for p in res} <= {"pos", "neg", "Neutral"}
        # Two <Choices>: the one whose choices are the labels is filled, not the first.
        config = ls_config(
            ["x", "y"],
            name="topic",
            extra='<Choices name="sentiment" toName="review"><Choice value="positive"/><Choice value="negative"/></Choices>',
        )
        res = predict(c, tasks[:2], config)
        assert res[0]["result"][0]["from_name"] == "sentiment"


@pytest.mark.slow
def test_predict_300_tasks_each_failing_alone(make, fake):
    fake.answers = {"bad one": "not-a-label"}  # that task's judge answers out of the label set, every time
    tasks = [{"id": i, "data": {"text": f"text {i}"}} for i in range(300)]
    tasks[3]["data"]["text"] = None
    tasks[4]["data"]["text"] = 42
    del tasks[5]["data"]["text"]
    tasks[5]["data"]["title"] = "a string field that must not be labeled"
    tasks[6]["data"]["text"] = "bad one"
    tasks[7]["data"]["text"] = "long " * 400  # over --max-text-chars: cut, not refused
    with make(max_text_chars=1000) as c:
        config = ls_config(LABELS, name="label", to="text", key="text")
        res = predict(c, tasks, config)
    assert len(res) == 300
    failed = {i: r["error"] for i, r in enumerate(res) if "result" not in r}
    assert set(failed) == {3, 4, 5, 6}, failed
    assert "data.text is null" in failed[3] and "data.text is int" in failed[4] and "data has no 'text'" in failed[5]
    assert all(r["result"][0]["value"]["choices"][0] in LABELS for i, r in enumerate(res) if i not in failed)
    assert not any("must not be labeled" in str(b) for b in fake.bodies)
    assert max(len(str(b)) for b in fake.bodies) < 3000  # the long text went out cut


def test_a_deadline_returns_what_is_done_and_the_rest_comes_from_the_cache(make, fake):
    tasks = [{"id": i, "data": {"text": f"deadline {i}"}} for i in range(20)]
    with make(predict_deadline=0) as c:  # nothing can be done by then: every task is still labeling
        res = predict(c, tasks, None)
        assert all("result" not in r and "still labeling" in r["error"] for r in res)
        c.app.state.llmlabel.predict_deadline = 80.0
        res = predict(c, tasks, None)
        assert all(r["result"][0]["value"]["choices"][0] in LABELS for r in res)
    assert fake.requests == 20  # the first call's work went on and was cached: never asked twice


def annotation(task_id: int, choice: str, ann_id: int, updated: str = "2026-01-01T00:00:00Z", by: int = 1) -> dict:
    return {
        "id": ann_id,
        "task": task_id,
        "completed_by": by,
        "was_cancelled": False,
        "updated_at": updated,
        "result": [{"from_name": "sentiment", "to_name": "review", "type": "choices", "value": {"choices": [choice]}}],
    }


def event(action: str, project_config: str, **payload) -> dict:
    return {"action": action, "project": {"id": 5, "label_config": project_config}, **payload}


@pytest.mark.slow  # ~8 s: scikit-learn's first import for the refit
def test_webhook_annotations_become_gold_and_training_refits(make, fake, tmp_path):
    config = ls_config(["Positive", "Negative"])
    tasks = [{"id": i, "data": {"body": f"gold {i}"}} for i in range(30)]
    truth = {i: pick(t["data"]["body"], ["positive", "negative"]).capitalize() for i, t in enumerate(tasks)}
    with make() as c:
        hook = functools.partial(c.post, "/webhook")
        # Unknown projects are refused before any is connected (Label Studio's webhook sends no auth).
        r = hook(json=event("ANNOTATION_CREATED", config, annotation=annotation(1, "Positive", 1), task=tasks[1]))
        assert r.status_code == 404 and "not connected" in r.json()["detail"]
        assert setup(c, config).status_code == 200
        res = predict(c, tasks, config)
        assert all(r["score"] == 1.0 for r in res)  # no logprobs: the judge says 1.0 on every task
        for i, t in enumerate(tasks[:24]):
            # 6 of 24 annotators disagree with the model
            choice = truth[i] if i % 4 else ("Negative" if truth[i] == "Positive" else "Positive")
            r = hook(json=event("ANNOTATION_CREATED", config, annotation=annotation(i, choice, 100 + i), task=t))
            assert r.status_code == 200 and r.json()["gold_rows_stored"] == 1, r.text
        # An update replaces the row's gold; a wrong token is refused; unknown actions are refused.
        r = hook(
            json=event(
                "ANNOTATION_UPDATED",
                config,
                annotation=annotation(0, truth[0], 100, "2026-02-01T00:00:00Z"),
                task=tasks[0],
            )
        )
        assert r.status_code == 200
        assert hook(json=event("START_TRAINING", config), headers={"Authorization": "Bearer nope"}).status_code == 401
        assert hook(json=event("DROP_DATABASE", config)).status_code == 422
        r = hook(json=event("START_TRAINING", config))
        body = r.json()
        assert r.status_code == 200 and body["gold_rows"] == 24 and body["confidence_calibrated"], body
        assert "recalibrated (Platt) on 24 gold rows (19 predicted right)" in body["message"]
        # The new model version makes Label Studio ask again (from the cache: free); scores are the gold accuracy.
        before = fake.requests
        assert (
            body["model_version"]
            != setup(c, ls_config(["Positive", "Negative"]), project="6.1").json()["model_version"]
        )
        res = predict(c, tasks, config)
        assert fake.requests == before
        assert all(r["score"] == pytest.approx(19 / 24, abs=0.01) for r in res), res[0]
        assert all(r["model_version"] == body["model_version"] for r in res)
        assert (
            c.get("/versions", params={"project": "5.1700000000"}, headers=H).json()["model_version"]
            == body["model_version"]
        )
        # Deleting annotations removes their gold rows.
        r = hook(json=event("ANNOTATIONS_DELETED", config, annotations=[{"id": 101}, {"id": 102}]))
        assert r.json()["gold_rows_removed"] == 2
        gold = c.get("/labelstudio/projects/5/gold", headers=H).json()
        assert gold["gold_rows"] == 22 and gold["calibrated"] and gold["rows"][0]["label"] == truth[0]
        assert c.get("/labelstudio/projects/5/gold").status_code == 401
    # The gold rows outlive the server: a restart refits them when the project is next used.
    with make() as c:
        assert setup(c, config).json()["model_version"].endswith("-cal22")


def test_webhook_needs_auth_when_asked_and_legacy_train(make):
    config = ls_config(["Positive", "Negative"])
    with make(webhook_needs_auth=True) as c:
        assert setup(c, config).status_code == 200
        assert c.post("/webhook", json=event("START_TRAINING", config)).status_code == 401
        assert c.post("/webhook", json=event("START_TRAINING", config), headers=H).status_code == 200
        # Label Studio's older /train: the annotated tasks in the request become gold rows.
        exported = [
            {"id": i, "data": {"body": f"t{i}"}, "annotations": [annotation(i, "Positive", i)]} for i in range(3)
        ]
        r = c.post(
            "/train", json={"annotations": exported, "project": "5.1700000000", "label_config": config}, headers=H
        )
        assert r.status_code == 200 and r.json()["gold_rows_received"] == 3
        assert "scores not recalibrated: needs 20+ gold rows" in r.json()["message"]
        assert c.get("/versions", headers=H).json()["versions"]
        # Odd shapes from anyone who can reach the server: a clear 4xx or nothing stored, never a 500.
        odd = [
            {"action": "ANNOTATION_CREATED", "project": 5, "annotation": {"task": [1], "result": "x"}},
            {"action": "ANNOTATION_CREATED", "project": {"id": 5}, "annotation": [1, None], "task": "t"},
            {
                "action": "ANNOTATIONS_CREATED",
                "project": "5",
                "annotation": [{"task": 1, "result": [{"type": "choices", "value": [1]}]}],
            },
            {"action": "TASKS_CREATED", "project": 5, "tasks": [{"id": True, "data": [], "annotations": {}}]},
            {"action": "ANNOTATIONS_DELETED", "project": 5, "annotations": [{"id": "1"}, 7]},
            {"action": "START_TRAINING", "project": 2**70},
            {"action": 5},
        ]
        for body in odd:
            r = c.post("/webhook", json=body, headers=H)
            assert r.status_code in (200, 404, 422), (body, r.text)
            assert r.json().get("gold_rows_stored", 0) == 0, body


def test_health_checks_credentials_and_a_foreign_host_is_logged(make, caplog):
    caplog.set_level(logging.WARNING, "llmlabel")
    with make() as c:
        basic = base64.b64encode(b"ls:wrong").decode()
        r = c.get("/health", headers={"Authorization": f"Basic {basic}"})
        # Label Studio reads a 401 from /health as "authentication parameters ... incorrect" (its own words)
        assert r.status_code == 401 and "Basic auth" in r.json()["detail"]
        basic = base64.b64encode(f"ls:{TOKEN}".encode()).decode()
        assert c.get("/health", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        r = c.get("/health", headers={**H, "Host": "llmlabel:9090"})
        assert r.status_code == 403
    assert "--allowed-host llmlabel" in caplog.text


def test_a_multi_label_task_fills_a_multiple_choice_control(tmp_path, fake):
    fake.answers = {"both": "positive|neutral", "none": ""}
    judges = [{"name": "a", "model": "fake-a", "base_url": fake.base_url, "timeout": 5, "max_attempts": 2}]
    task = {"name": "tags", "instructions": "Tags?", "labels": LABELS, "multi_label": True}
    cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=judges, task=task))
    multi = ls_config(["Positive", "Negative", "Neutral"]).replace('choice="single"', 'choice="multiple"')
    with TestClient(create_app(cfg, token=TOKEN, state_dir=tmp_path / "state")) as c:
        r = setup(c, ls_config(["Positive", "Negative", "Neutral"]))
        assert r.status_code == 422 and 'use choice="multiple"' in r.json()["detail"]
        assert setup(c, multi).status_code == 200
        res = predict(c, [{"id": 1, "data": {"body": "both"}}, {"id": 2, "data": {"body": "none"}}], multi)
        assert res[0]["result"][0]["value"]["choices"] == ["Positive", "Neutral"]
        assert res[1]["result"] == [] and "score" in res[1]  # an empty set is a prediction, not a failure


TREE = {"Animals": {"Mammals": ["Dog", "Cat"], "Birds": ["Eagle", "Owl"]}, "Vehicles": ["Car", "Bike"]}


def taxonomy_config(tree: dict, name: str = "topic", to: str = "review", key: str = "body") -> str:
    def choices(node) -> str:
        items = node.items() if isinstance(node, dict) else ((k, None) for k in node)
        return "".join(
            f'<Choice value="{k}">{choices(v)}</Choice>' if v else f'<Choice value="{k}"/>' for k, v in items
        )

    return (
        f'<View><Text name="{to}" value="${key}"/><Taxonomy name="{name}" toName="{to}">{choices(tree)}</Taxonomy>'
        "</View>"
    )


@pytest.fixture
def tax_client(tmp_path):
    # Two judges that agree on the dog's whole path and part of the bike's; the bird's leaf is a coin toss.
    paths = [
        {
            "a dog barks": ["animals", "mammals", "dog"],
            "a bike": ["vehicles", "bike"],
            "a bird": ["animals", "birds", "eagle"],
        },
        {
            "a dog barks": ["animals", "mammals", "dog"],
            "a bike": ["vehicles", "bike"],
            "a bird": ["animals", "birds", "owl"],
        },
    ]
    from fakeserver import FakeLLM

    servers = [FakeLLM(paths=p).start() for p in paths]
    judges = [
        {"name": n, "model": "m", "base_url": s.base_url, "timeout": 5, "max_attempts": 2}
        for n, s in zip("ab", servers)
    ]
    tree = {"animals": {"mammals": ["dog", "cat"], "birds": ["eagle", "owl"]}, "vehicles": ["car", "bike"]}
    task = {"name": "things", "instructions": "What is it about?", "taxonomy": tree, "taxonomy_threshold": 0.6}
    cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=judges, task=task))
    with TestClient(create_app(cfg, token=TOKEN, state_dir=tmp_path / "state")) as c:
        yield c
    for s in servers:
        s.stop()


def test_a_taxonomy_task_fills_a_taxonomy_control(tax_client):
    c = tax_client
    config = taxonomy_config(TREE)  # the task's tree, spelled with capitals: the same nodes
    # Configs that do not fit the task's tree are refused in one line naming the difference.
    cases = [
        (ls_config(["Animals", "Vehicles"]), "no <Taxonomy> control"),
        (taxonomy_config({**TREE, "Plants": ["Tree"]}), "the node 'Plants', which task.taxonomy has not"),
        (taxonomy_config({**TREE, "Vehicles": ["Car"]}), "task.taxonomy has the node 'vehicles > bike'"),
        (config.replace("<Taxonomy ", '<Taxonomy apiUrl="http://x/t.json" '), "apiUrl"),
    ]
    for bad, msg in cases:
        r = setup(c, bad)
        assert r.status_code == 422 and msg in r.json()["detail"] and "\n" not in r.json()["detail"], (msg, r.text)
    first = setup(c, config)
    assert first.status_code == 200, first.text
    tasks = [{"id": i, "data": {"body": t}} for i, t in enumerate(["a dog barks", "a bike", "a bird"])]
    dog, bike, bird = predict(c, tasks, config)
    # Label Studio's taxonomy result: one path, top first, in the project's spelling, scored by the path's confidence.
    assert dog["result"] == [
        {
            "from_name": "topic",
            "to_name": "review",
            "type": "taxonomy",
            "value": {"taxonomy": [["Animals", "Mammals", "Dog"]]},
            "score": 1.0,
        }
    ]
    assert bike["result"][0]["value"] == {"taxonomy": [["Vehicles", "Bike"]]} and bike["score"] == 1.0
    # The judges split on the bird's leaf (0.5 < 0.6): the path stops at its parent, and says so.
    assert bird["result"][0]["value"] == {"taxonomy": [["Animals", "Birds"]]}
    # Another tree is another model version: Label Studio asks again.
    other = taxonomy_config(TREE, name="kind")
    assert setup(c, other).json()["model_version"] != first.json()["model_version"]


def test_taxonomy_and_multiple_choice_annotations_become_gold(tax_client, tmp_path, fake):
    c = tax_client
    config = taxonomy_config(TREE)
    assert setup(c, config).status_code == 200
    tasks = [{"id": i, "data": {"body": t}} for i, t in enumerate(["a dog barks", "a bike", "a bird"])]
    predict(c, tasks, config)

    def tax_annotation(task_id: int, path: list[str], ann_id: int) -> dict:
        a = annotation(task_id, "x", ann_id)
        a["result"] = [{"from_name": "topic", "to_name": "review", "type": "taxonomy", "value": {"taxonomy": [path]}}]
        return a

    for i, path in enumerate([["Animals", "Mammals", "Dog"], ["Vehicles", "Car"], ["Animals", "Birds", "Owl"]]):
        r = c.post(
            "/webhook",
            json=event("ANNOTATION_CREATED", config, annotation=tax_annotation(i, path, 10 + i), task=tasks[i]),
        )
        assert r.status_code == 200 and r.json()["gold_rows_stored"] == 1, r.text
    gold = c.get("/labelstudio/projects/5/gold", headers=H).json()
    assert [g["label"] for g in gold["rows"]] == ["Animals > Mammals > Dog", "Vehicles > Car", "Animals > Birds > Owl"]

    # A multi-label project: a multiple-choice annotation is a gold set.
    judges = [{"name": "a", "model": "fake-a", "base_url": fake.base_url, "timeout": 5, "max_attempts": 2}]
    task = {"name": "tags", "instructions": "Tags?", "labels": LABELS, "multi_label": True}
    cfg = load_config(write_config(tmp_path / "m.yaml", None, judges=judges, task=task))
    multi = ls_config(["Positive", "Negative", "Neutral"]).replace('choice="single"', 'choice="multiple"')
    with TestClient(create_app(cfg, token=TOKEN, state_dir=tmp_path / "mstate")) as m:
        assert setup(m, multi).status_code == 200
        a = annotation(1, "x", 7)
        a["result"][0]["value"]["choices"] = ["Neutral", "Positive"]
        r = m.post(
            "/webhook", json=event("ANNOTATION_CREATED", multi, annotation=a, task={"id": 1, "data": {"body": "t"}})
        )
        assert r.status_code == 200 and r.json()["gold_rows_stored"] == 1
        (row,) = m.get("/labelstudio/projects/5/gold", headers=H).json()["rows"]
        assert row["label"] == "Neutral|Positive"


def test_a_flat_task_refuses_a_taxonomy_control(make):
    with make() as c:
        r = setup(c, taxonomy_config({"positive": None, "negative": None}))
        assert (
            r.status_code == 422
            and "<Taxonomy name='topic'> control and the task has no task.taxonomy" in r.json()["detail"]
        )
