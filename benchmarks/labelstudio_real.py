"""llmlabel with a REAL Label Studio (pip `label-studio`, in its own virtualenv): `llmlabel serve` as its ML
backend, and the review loop's transport (llmlabel.review.labelstudio).

What it does, as a Label Studio user would, through Label Studio's REST API:
  1. starts Label Studio on 127.0.0.1 (ML_BLOCK_LOCAL_IP=false, SSRF_PROTECTION_ENABLED=false, a temporary data
     dir, a created user) and creates a personal access token (a JWT: Label Studio 1.23's default);
  2. starts fakellm (SST-2 texts, two simulated judges) and `llmlabel serve` on them;
  3. creates a project (<Choices name="sentiment"> over <Text name="review" value="$body">, Positive/Negative),
     imports 300 SST-2 texts, connects the backend (Basic auth; first with a wrong password);
  4. "Retrieve predictions" for all 300 tasks (one /predict request of 300 tasks);
  5. changes the choice set to pos / neg / Neutral (mapped with --ls-label) and retrieves predictions again;
  6. annotates 25 tasks through the API (their SST-2 labels): the auto-created webhook stores them as gold
     rows; "Start training" refits the scores; review's pull reads the same 25 answers back;
  7. pushes 20 review rows to a new project twice (no duplicates) and pulls an annotation back;
  8. connects a second backend on a slow model with a short --predict-deadline: each "Retrieve predictions"
     saves what was done in time, the rest keeps going into the cache, until every task has a prediction;
  9. (--kinds) a taxonomy project (CLINC150's 10 domains -> 150 intents as a <Taxonomy>) and a multi-label
     project (GoEmotions' 28 emotions as <Choices choice="multiple">), each with its own `llmlabel serve`:
     predictions for every task, annotations through the API into gold (webhook) and back (review's pull), and
     a whole `llmlabel review --labelstudio` round (push, annotate from the gold, merge, stated accuracy).

  python benchmarks/labelstudio_real.py [--ls-venv /work/lsvenv] [--tasks 300] [--kinds] [--out NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    DATA,
    LLMLABEL,
    RESULTS,
    FakeLLM,
    clean_env,
    command_line,
    free_port,
    judge,
    machine,
    now,
    read_csv,
    tempdir,
    write_config,
)
from llmlabel.io.labelstudio import taxonomy_config  # noqa: E402
from llmlabel.review.labelstudio import pull, push  # noqa: E402
from llmlabel.review.records import ReviewItem  # noqa: E402
from llmlabel.taxonomy import Taxonomy  # noqa: E402

EMAIL, PASSWORD = "bench@example.com", "bench-password-123"
SERVE_TOKEN = "bench-serve-token-0123456789"


def config(choices: list[str]) -> str:
    opts = "".join(f'<Choice value="{c}"/>' for c in choices)
    return (
        '<View><Text name="review" value="$body"/>'
        f'<Choices name="sentiment" toName="review" choice="single" showInline="true">{opts}</Choices></View>'
    )


def wait(url: str, timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(url, timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{what} did not come up in {timeout:.0f}s; see {log}")


def ls_session(base: str) -> tuple[httpx.Client, str]:
    """A logged-in session and a new personal access token (a JWT refresh token)."""
    s = httpx.Client(base_url=base, timeout=60)
    s.get("/user/login/")
    r = s.post(
        "/user/login/", data={"email": EMAIL, "password": PASSWORD, "csrfmiddlewaretoken": s.cookies["csrftoken"]}
    )
    assert r.status_code in (200, 302), r.text[:300]
    r = s.post("/api/token/", headers={"X-CSRFToken": s.cookies["csrftoken"]})
    assert r.status_code == 201, r.text[:300]
    return s, r.json()["token"]


class Refreshing(httpx.Auth):
    """Bearer access tokens from the personal access token, renewed when one expires (after minutes)."""

    def __init__(self, base: str, pat: str) -> None:
        self.base, self.pat, self.access = base, pat, ""

    def renew(self) -> str:
        self.access = httpx.post(f"{self.base}/api/token/refresh/", json={"refresh": self.pat}, timeout=30).json()[
            "access"
        ]
        return self.access

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers["Authorization"] = f"Bearer {self.access or self.renew()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self.renew()}"
            yield request


def api(base: str, pat: str) -> httpx.Client:
    return httpx.Client(base_url=base, auth=Refreshing(base, pat), timeout=300)


def all_tasks(c: httpx.Client, project: int) -> list[dict[str, Any]]:
    out, page = [], 1
    while True:
        r = c.get("/api/tasks", params={"project": project, "page": page, "page_size": 500, "fields": "all"})
        if r.status_code == 404:
            return out
        body = r.json()
        out += body["tasks"]
        if len(out) >= body["total"]:
            return out
        page += 1


def retrieve_predictions(c: httpx.Client, project: int) -> float:
    t0 = time.time()
    r = c.post(
        "/api/dm/actions",
        params={"id": "retrieve_tasks_predictions", "project": project},
        json={"selectedItems": {"all": True, "excluded": []}},
    )
    assert r.status_code == 200, r.text[:500]
    return time.time() - t0


def serve(cfg: Path, tmp: Path, name: str, procs: list[subprocess.Popen[bytes]]) -> str:
    """`llmlabel serve` on a config, as Label Studio's ML backend; its URL."""
    port = free_port()
    log = tmp / f"serve-{name}.log"
    cmd = [LLMLABEL, "serve", "-c", str(cfg), "--port", str(port), "--state-dir", str(tmp / f"state-{name}")]
    env = {**clean_env(), "LLMLABEL_SERVE_TOKEN": SERVE_TOKEN, "OPENAI_API_KEY": "sk-fake"}
    procs.append(subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT))
    wait(f"http://127.0.0.1:{port}/livez", 120, f"llmlabel serve ({name})", procs[-1], log)
    return f"http://127.0.0.1:{port}"


def connect(c: httpx.Client, backend: str, project: int, title: str) -> dict[str, Any]:
    r = c.post(
        "/api/ml",
        json={
            "url": backend,
            "project": project,
            "title": title,
            "auth_method": "BASIC_AUTH",
            "basic_auth_user": "labelstudio",
            "basic_auth_pass": SERVE_TOKEN,
        },
    )
    return {
        "status": r.status_code,
        **(r.json() if r.headers.get("content-type", "").startswith("application/json") else {}),
    }


def annotate(c: httpx.Client, task: int, result: dict[str, Any]) -> None:
    r = c.post(f"/api/tasks/{task}/annotations/", json={"result": [result], "was_cancelled": False})
    assert r.status_code == 201, r.text[:300]


def kinds_checks(
    base: str, pat: str, c: httpx.Client, tmp: Path, procs: list[subprocess.Popen[bytes]], check: Any, n: int
) -> None:
    """Step 9: a taxonomy project and a multi-label project, each: predictions, annotations into gold and back,
    and a whole `llmlabel review --labelstudio` round answered from the data set's gold."""
    h = {"Authorization": f"Bearer {SERVE_TOKEN}"}
    for kind in ("taxonomy", "multilabel"):
        if kind == "taxonomy":
            data = DATA / "clinc150_hier_test.csv"
            rows = read_csv(data)[::50][:n]  # every 50th: the test set is sorted by intent
            gold = {r["id"]: [r["label_l1"], r["label_l2"]] for r in rows}
            tree = Taxonomy.load(str(DATA / "clinc150_taxonomy.json"))
            task = {
                "name": "intents",
                "instructions": "Which request to a virtual assistant is this? oos: out of scope.",
                "taxonomy": str(DATA / "clinc150_taxonomy.json"),
                "taxonomy_threshold": 0.5,
            }
            label_config = taxonomy_config(tree, "body", "intent", "utterance")
        else:
            data = DATA / "goemotions_test.csv"
            rows = read_csv(data)[:n]
            gold = {r["id"]: r["labels"].split("|") for r in rows}
            labels = (DATA / "goemotions_labels.txt").read_text().split()
            task = {"name": "emotions", "instructions": "Which emotions does it express?", "labels": labels}
            task["multi_label"] = True
            opts = "".join(f'<Choice value="{x}"/>' for x in labels)
            label_config = (
                '<View><Text name="utterance" value="$body"/><Choices name="emotions" toName="utterance" '
                f'choice="multiple" showInline="true">{opts}</Choices></View>'
            )
        fake = FakeLLM([data], log_dir=tmp).start()
        try:
            cfg = write_config(
                tmp / f"{kind}.yaml",
                [judge(x, x, fake.base_url, 8, max_attempts=3) for x in ("judge-a", "judge-b", "judge-c")],
                tmp / f"cache-{kind}",
                task=task,
            )
            backend = serve(cfg, tmp, kind, procs)
            p = c.post("/api/projects", json={"title": f"llmlabel {kind}", "label_config": label_config})
            check(f"{kind}: Label Studio accepts the labeling config", p.status_code == 201, f"HTTP {p.status_code}")
            pid = p.json()["id"]
            c.post(f"/api/projects/{pid}/import", json=[{"data": {"body": r["text"], "src_id": r["id"]}} for r in rows])
            ml = connect(c, backend, pid, f"llmlabel-{kind}")
            check(
                f"{kind}: backend connected (health + setup)",
                ml["status"] == 201,
                f"HTTP {ml['status']}, state {ml.get('state')}",
            )
            secs = retrieve_predictions(c, pid)
            got = all_tasks(c, pid)
            preds = [(t, t["predictions"][-1]) for t in got if t["predictions"]]
            if kind == "taxonomy":
                nodes = set(tree.paths())
                paths = [tuple(pr["result"][0]["value"]["taxonomy"][0]) for _, pr in preds if pr["result"]]
                ok = all(
                    pr["result"]
                    and pr["result"][0]["type"] == "taxonomy"
                    and (pr["result"][0]["from_name"], pr["result"][0]["to_name"]) == ("intent", "utterance")
                    and tuple(pr["result"][0]["value"]["taxonomy"][0]) in nodes
                    for _, pr in preds
                )
                l1 = sum(pr["result"][0]["value"]["taxonomy"][0][0] == gold[t["data"]["src_id"]][0] for t, pr in preds)
                full = [pr["result"][0]["value"]["taxonomy"][0] for _, pr in preds]
                reached = sum(gold[t["data"]["src_id"]][: len(x)] == x for (t, _), x in zip(preds, full))
                detail = (
                    f"{len(preds)}/{len(got)} tasks predicted in {secs:.1f}s; taxonomy results with valid paths: {ok}; "
                    f"level-1 right {l1}/{len(preds)}, path reached right {reached}/{len(preds)}, stopped at a domain "
                    f"{sum(len(x) == 1 for x in paths)}"
                )
            else:
                ok = all(
                    pr["result"] == []
                    or (
                        pr["result"][0]["type"] == "choices" and set(pr["result"][0]["value"]["choices"]) <= set(labels)
                    )
                    for _, pr in preds
                )
                sets = [set(pr["result"][0]["value"]["choices"]) if pr["result"] else set() for _, pr in preds]
                exact = sum(s_ == set(gold[t["data"]["src_id"]]) for (t, _), s_ in zip(preds, sets))
                detail = (
                    f"{len(preds)}/{len(got)} tasks predicted in {secs:.1f}s; choice sets within the 28 labels: {ok}; "
                    f"whole set right {exact}/{len(preds)}; sets of 2+ labels {sum(len(x) > 1 for x in sets)}"
                )
            check(
                f"{kind}: every task predicted (Label Studio validated and saved each)", len(preds) == n and ok, detail
            )

            # annotations (the gold) -> the backend's gold rows (webhook) and review's pull
            k = 10
            for t in got[:k]:
                g = gold[t["data"]["src_id"]]
                if kind == "taxonomy":
                    res = {
                        "from_name": "intent",
                        "to_name": "utterance",
                        "type": "taxonomy",
                        "value": {"taxonomy": [g]},
                    }
                else:
                    res = {"from_name": "emotions", "to_name": "utterance", "type": "choices", "value": {"choices": g}}
                annotate(c, t["id"], res)
            time.sleep(2)
            gr = httpx.get(f"{backend}/labelstudio/projects/{pid}/gold", headers=h, timeout=30).json()
            sep = " > " if kind == "taxonomy" else "|"
            want = {t["id"]: sep.join(gold[t["data"]["src_id"]]) for t in got[:k]}
            stored = {row["task"]: row["label"] for row in gr["rows"]}
            back = pull(base, pat, pid)
            check(
                f"{kind}: annotations reach /webhook as gold and come back through review's pull",
                stored == want and len(back) == k and {x.label for x in back} == set(want.values()),
                f"{len(stored)} gold rows, as annotated: {stored == want} (e.g. {next(iter(stored.values()), None)!r}); "
                f"pull: {len(back)} answers",
            )

            # a whole review round through Label Studio: label, push, annotate from the gold, merge
            inp = tmp / f"{kind}.csv"
            with open(inp, "w", newline="") as fh:
                import csv

                w = csv.writer(fh)
                w.writerow(["id", "text"])
                w.writerows([[r["id"], r["text"]] for r in rows])
            out = tmp / f"{kind}-out.jsonl"
            env = {**clean_env(), "OPENAI_API_KEY": "sk-fake", "LABEL_STUDIO_API_KEY": pat}
            r1 = subprocess.run(
                [LLMLABEL, "label", str(inp), "-c", str(cfg), "-o", str(out)], env=env, capture_output=True, text=True
            )
            assert r1.returncode == 0, r1.stderr[-500:]
            budget = n // 2
            r2 = subprocess.run(
                [
                    LLMLABEL,
                    "review",
                    str(out),
                    "-c",
                    str(cfg),
                    "--budget",
                    str(budget),
                    "--validation",
                    str(budget * 3 // 4),
                    "--labelstudio",
                    base,
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            assert r2.returncode == 0, r2.stderr[-800:]
            state = json.loads((tmp / f"{kind}-out.jsonl.review.json").read_text())
            rpid = state["labelstudio"]["project"]
            rtasks = all_tasks(c, rpid)
            pred_ok = all(t["predictions"] for t in rtasks)
            for t in rtasks:
                g = gold[t["data"]["row_id"]]
                if kind == "taxonomy":
                    res = {"from_name": "taxonomy", "to_name": "text", "type": "taxonomy", "value": {"taxonomy": [g]}}
                else:
                    res = {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": g}}
                annotate(c, t["id"], res)
            final = tmp / f"{kind}-final.jsonl"
            r3 = subprocess.run(
                [
                    LLMLABEL,
                    "review",
                    str(out),
                    "-c",
                    str(cfg),
                    "--labelstudio",
                    base,
                    "--project",
                    str(rpid),
                    "-o",
                    str(final),
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            ok3 = r3.returncode == 0
            summ = json.loads((tmp / f"{kind}-final.jsonl.summary.json").read_text()) if ok3 else {}
            recs = [json.loads(x) for x in final.read_text().splitlines()] if ok3 else []
            if kind == "taxonomy":
                right = sum(gold[x["id"]][: len(x["path"])] == x["path"] for x in recs)
                levels = ", ".join(
                    f"level {lv['level']} {lv['estimated_accuracy']}" for lv in summ.get("per_level", [])
                )
                extra = f"stated per level: {levels}"
            else:
                right = sum(set(x["labels"]) == set(gold[x["id"]]) for x in recs)
                extra = "per-label precision/recall for " + str(len(summ.get("per_label", {}))) + " labels"
            humans = sum(x.get("label_source") == "human" for x in recs)
            true_acc = right / max(len(recs), 1)
            check(
                f"{kind}: a `llmlabel review --labelstudio` round (push, annotate, merge) states the accuracy",
                ok3
                and len(rtasks) == budget
                and pred_ok
                and humans == budget
                and summ.get("ci_low", 2) <= true_acc <= summ.get("ci_high", -1),
                f"{len(rtasks)} rows pushed with the model's {'path' if kind == 'taxonomy' else 'set'} as a prediction "
                f"({pred_ok}); {humans} human answers merged; stated accuracy {summ.get('estimated_accuracy')} "
                f"({summ.get('ci_low')}-{summ.get('ci_high')}), true {true_acc:.3f} over {len(recs)} rows; {extra}"
                + ("" if ok3 else f"; error: {r3.stderr.strip().splitlines()[-1:]}"),
            )
        finally:
            fake.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ls-venv", default="/work/lsvenv", help="virtualenv with label-studio installed")
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--annotate", type=int, default=25)
    ap.add_argument("--out", default="labelstudio_real")
    ap.add_argument("--slow-latency", type=float, default=0.4, help="the slow model's seconds a request (0: skip)")
    ap.add_argument("--deadline", type=float, default=10.0, help="the slow backend's --predict-deadline")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary directory)")
    ap.add_argument("--kinds", action="store_true", help="also check a taxonomy and a multi-label project")
    ap.add_argument("--kind-tasks", type=int, default=60, help="tasks in each of those projects")
    ap.add_argument("--only-kinds", action="store_true", help="check only those (skip steps 3-8)")
    a = ap.parse_args()
    a.kinds = a.kinds or a.only_kinds
    ls_bin = Path(a.ls_venv) / "bin" / "label-studio"
    ls_version = subprocess.run(
        [str(Path(a.ls_venv) / "bin" / "python"), "-c", "import label_studio; print(label_studio.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    rows = read_csv(DATA / "sst2_dev.csv")[: a.tasks]
    checks: list[tuple[str, str]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append((("PASS" if ok else "FAIL") + f" {name}", detail))
        print(("PASS" if ok else "FAIL"), name, "-", detail, file=sys.stderr, flush=True)

    with tempdir("lsreal-", keep=a.keep) as tmp:
        procs: list[subprocess.Popen[bytes]] = []
        fake = FakeLLM([DATA / "sst2_dev.csv"], log_dir=tmp).start()
        try:
            # -- Label Studio ----------------------------------------------------------------------------------
            ls_port = free_port()
            base = f"http://127.0.0.1:{ls_port}"
            env = {
                **os.environ,
                "ML_BLOCK_LOCAL_IP": "false",
                "SSRF_PROTECTION_ENABLED": "false",
                "LABEL_STUDIO_BASE_DATA_DIR": str(tmp / "ls"),
                "SENTRY_DSN": "",  # no error reports to sentry.io (unreachable here: each one retries)
                "FRONTEND_SENTRY_DSN": "",
            }
            ls_log = tmp / "labelstudio.log"
            t0 = time.time()
            cmd = [str(ls_bin), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(ls_port)]
            cmd += ["--data-dir", str(tmp / "ls"), "--username", EMAIL, "--password", PASSWORD]
            procs.append(subprocess.Popen(cmd, env=env, stdout=open(ls_log, "wb"), stderr=subprocess.STDOUT))
            wait(f"{base}/health", 1200, "Label Studio", procs[-1], ls_log)
            ls_start = time.time() - t0
            print(f"Label Studio {ls_version} up in {ls_start:.0f}s", file=sys.stderr, flush=True)
            _, pat = ls_session(base)
            c = api(base, pat)

            judge_requests = 0
            if not a.only_kinds:
                # -- llmlabel serve --------------------------------------------------------------------------------
                cfg = write_config(
                    tmp / "config.yaml",
                    [judge(n, n, fake.base_url, 16, max_attempts=3) for n in ("judge-a", "judge-b")],
                    tmp / "cache",
                    task={
                        "name": "sentiment",
                        "instructions": "The sentiment of the movie review.",
                        "labels": {"positive": "", "negative": "", "neutral": "neither"},
                    },
                )
                port = free_port()
                serve_log = tmp / "serve.log"
                scmd = [LLMLABEL, "serve", "-c", str(cfg), "--port", str(port), "--state-dir", str(tmp / "state")]
                scmd += ["--ls-label", "pos=positive", "--ls-label", "neg=negative"]
                senv = {**clean_env(), "LLMLABEL_SERVE_TOKEN": SERVE_TOKEN, "OPENAI_API_KEY": "sk-fake"}
                procs.append(subprocess.Popen(scmd, env=senv, stdout=open(serve_log, "wb"), stderr=subprocess.STDOUT))
                wait(f"http://127.0.0.1:{port}/livez", 120, "llmlabel serve", procs[-1], serve_log)
                backend = f"http://127.0.0.1:{port}"

                # -- project, tasks, backend -----------------------------------------------------------------------
                p = c.post(
                    "/api/projects",
                    json={"title": "llmlabel ML backend", "label_config": config(["Positive", "Negative"])},
                )
                assert p.status_code == 201, p.text[:300]
                pid = p.json()["id"]
                tasks = [{"data": {"body": r["text"], "sst2_id": r["id"]}} for r in rows]
                r = c.post(f"/api/projects/{pid}/import", json=tasks)
                assert r.status_code == 201, r.text[:300]
                # Two tasks whose text field is a number (Label Studio accepts numbers for a <Text>, refuses null):
                # each fails alone, and no other field is labeled instead.
                bad_tasks = [
                    {"data": {"body": 12345, "title": "not this"}},
                    {"data": {"body": 3.5, "title": "nor this"}},
                ]
                r = c.post(f"/api/projects/{pid}/import", json=bad_tasks)
                assert r.status_code == 201, r.text[:300]
                gold = {r["id"]: r["label"] for r in rows}
                ml = {"url": backend, "project": pid, "title": "llmlabel", "auth_method": "BASIC_AUTH"}
                bad = c.post("/api/ml", json={**ml, "basic_auth_user": "ls", "basic_auth_pass": "wrong"})
                check(
                    "wrong Basic password refused at connect",
                    bad.status_code == 400 and "authentication parameters" in bad.text,
                    f"HTTP {bad.status_code}: {json.dumps(bad.json().get('validation_errors', bad.json()))[:200]}",
                )
                r = c.post("/api/ml", json={**ml, "basic_auth_user": "labelstudio", "basic_auth_pass": SERVE_TOKEN})
                assert r.status_code == 201, r.text[:500]
                ml_id = r.json()["id"]
                check(
                    "backend connected (health + setup)",
                    r.json().get("state") in ("CO", "TR", None),
                    f"state {r.json().get('state')}",
                )

                # -- predictions for every task --------------------------------------------------------------------
                secs = retrieve_predictions(c, pid)
                got = all_tasks(c, pid)
                preds = [t["predictions"][-1] for t in got if t["predictions"]]
                right = sum(
                    p["result"][0]["value"]["choices"][0].lower() == gold[t["data"]["sst2_id"]]
                    for t, p in zip([t for t in got if t["predictions"]], preds)
                )
                ok = all(
                    p["result"][0]["from_name"] == "sentiment"
                    and p["result"][0]["to_name"] == "review"
                    and p["result"][0]["value"]["choices"][0] in ("Positive", "Negative")
                    for p in preds
                )
                v1 = {p["model_version"] for p in preds}
                bad_ids = {t["id"] for t in got if not isinstance(t["data"].get("body"), str)}
                ls_said = ls_log.read_text(errors="replace")
                check(
                    f"{a.tasks} tasks predicted in one Retrieve predictions",
                    len(preds) == a.tasks and ok and not any(t["predictions"] for t in got if t["id"] in bad_ids),
                    f"{len(preds)}/{len(got)} tasks got a prediction in {secs:.1f}s (Label Studio's whole action); right "
                    f"control and choices: {ok}; accuracy vs SST-2 {right}/{len(preds)}; model version {sorted(v1)}",
                )
                check(
                    "a task whose $body is a number fails alone",
                    len(bad_ids) == 2 and "data.body is int" in ls_said and "data.body is float" in ls_said,
                    f"{len(bad_ids)} such tasks, no prediction saved; Label Studio's log has llmlabel's reason: "
                    f"{'data.body is int' in ls_said}",
                )

                # -- a changed choice set --------------------------------------------------------------------------
                r = c.patch(f"/api/projects/{pid}", json={"label_config": config(["pos", "neg", "Neutral"])})
                assert r.status_code == 200, r.text[:500]
                secs = retrieve_predictions(c, pid)
                got = all_tasks(c, pid)
                new = [p for t in got for p in t["predictions"] if p["model_version"] not in v1]
                values = {p["result"][0]["value"]["choices"][0] for p in new}
                check(
                    "changed choice set (pos/neg/Neutral) predicted again",
                    len(new) == a.tasks and values <= {"pos", "neg", "Neutral"} and "Neutral" in values,
                    f"{len(new)} new predictions in {secs:.1f}s, choices used {sorted(values)}, "
                    f"model version {sorted({p['model_version'] for p in new})}",
                )

                # -- annotations -> gold (webhook), training, review's pull ----------------------------------------
                to_choice = {"positive": "pos", "negative": "neg"}
                annotated = [t for t in got if t["id"] not in bad_ids][: a.annotate]
                for t in annotated:
                    res = [
                        {
                            "from_name": "sentiment",
                            "to_name": "review",
                            "type": "choices",
                            "value": {"choices": [to_choice[gold[t["data"]["sst2_id"]]]]},
                        }
                    ]
                    r = c.post(f"/api/tasks/{t['id']}/annotations/", json={"result": res, "was_cancelled": False})
                    assert r.status_code == 201, r.text[:300]
                time.sleep(2)  # webhooks are sent synchronously without a queue; a margin all the same
                h = {"Authorization": f"Bearer {SERVE_TOKEN}"}
                g = httpx.get(f"{backend}/labelstudio/projects/{pid}/gold", headers=h, timeout=30).json()
                labels_ok = all(
                    row["label"]
                    == to_choice[gold[next(t for t in annotated if t["id"] == row["task"])["data"]["sst2_id"]]]
                    for row in g["rows"]
                )
                check(
                    "annotations reached /webhook as gold rows",
                    g["gold_rows"] == a.annotate and labels_ok,
                    f"{g['gold_rows']} gold rows stored for {a.annotate} annotations, labels match: {labels_ok}",
                )
                r = c.post(f"/api/ml/{ml_id}/train", json={"use_ground_truth": False})
                g = httpx.get(f"{backend}/labelstudio/projects/{pid}/gold", headers=h, timeout=30).json()
                log = serve_log.read_text(errors="replace")
                line = next((x for x in log.splitlines() if "Label Studio training" in x), "")
                check(
                    "Start training reached the backend (START_TRAINING webhook)",
                    r.status_code == 200 and "Label Studio training" in log,
                    f"HTTP {r.status_code}; server: {line.split('INFO:', 1)[-1].strip()[:300]}; calibrated {g['calibrated']}",
                )
                answers = pull(base, pat, pid)
                check(
                    "review pull reads the annotations back",
                    len(answers) == a.annotate and {x.annotator for x in answers} == {EMAIL},
                    f"{len(answers)} answers, annotators {sorted({str(x.annotator) for x in answers})}",
                )

                # -- review push: create, re-push, annotate, pull --------------------------------------------------
                items = [
                    ReviewItem(
                        id=r["id"],
                        text=r["text"],
                        label=r["label"],
                        confidence=0.6,
                        pick="targeted",
                        why="judges disagree",
                        given_label="negative" if r["label"] == "positive" else "positive",
                    )
                    for r in rows[:20]
                ]
                rpid = push(base, pat, items[:15], ["positive", "negative"], title="llmlabel review")
                push(base, pat, items, ["positive", "negative"], project=rpid)
                rt = all_tasks(c, rpid)
                first = rt[0]
                res = [
                    {
                        "from_name": "label",
                        "to_name": "text",
                        "type": "choices",
                        "value": {"choices": [gold[first["data"]["row_id"]]]},
                    }
                ]
                c.post(f"/api/tasks/{first['id']}/annotations/", json={"result": res, "was_cancelled": False})
                back = pull(base, pat, rpid)
                check(
                    "review push creates, re-push adds no duplicates, pull reads the answer",
                    len(rt) == 20
                    and len({t["data"]["row_id"] for t in rt}) == 20
                    and all(t["predictions"] for t in rt)
                    and [(x.id, x.label) for x in back] == [(first["data"]["row_id"], gold[first["data"]["row_id"]])],
                    f"{len(rt)} tasks after pushing 15 then 20; {sum(bool(t['predictions']) for t in rt)} with predictions; "
                    f"pulled {[(x.id, x.label, x.annotator) for x in back]}",
                )
                judge_requests = fake.requests()

                # -- a slow model: answers within --predict-deadline, the rest on the next rounds ------------------
                if a.slow_latency > 0:
                    slow = FakeLLM([DATA / "sst2_dev.csv"], latency=a.slow_latency, log_dir=tmp).start()
                    try:
                        cfg2 = write_config(
                            tmp / "slow.yaml",
                            [judge(n, n, slow.base_url, 4, max_attempts=3) for n in ("judge-a", "judge-b")],
                            tmp / "cache-slow",
                            task={
                                "name": "sentiment",
                                "instructions": "The sentiment.",
                                "labels": ["positive", "negative"],
                            },
                        )
                        port2 = free_port()
                        slog = tmp / "serve-slow.log"
                        scmd = [
                            LLMLABEL,
                            "serve",
                            "-c",
                            str(cfg2),
                            "--port",
                            str(port2),
                            "--state-dir",
                            str(tmp / "state2"),
                        ]
                        scmd += ["--predict-deadline", str(a.deadline)]
                        procs.append(
                            subprocess.Popen(scmd, env=senv, stdout=open(slog, "wb"), stderr=subprocess.STDOUT)
                        )
                        wait(f"http://127.0.0.1:{port2}/livez", 120, "llmlabel serve (slow)", procs[-1], slog)
                        p2 = c.post(
                            "/api/projects", json={"title": "slow", "label_config": config(["Positive", "Negative"])}
                        )
                        pid2 = p2.json()["id"]
                        c.post(f"/api/projects/{pid2}/import", json=tasks)
                        r = c.post(
                            "/api/ml",
                            json={
                                "url": f"http://127.0.0.1:{port2}",
                                "project": pid2,
                                "title": "llmlabel-slow",
                                "auth_method": "BASIC_AUTH",
                                "basic_auth_user": "labelstudio",
                                "basic_auth_pass": SERVE_TOKEN,
                            },
                        )
                        assert r.status_code == 201, r.text[:300]
                        rounds = []
                        for _ in range(15):
                            secs = retrieve_predictions(c, pid2)
                            have = sum(bool(t["predictions"]) for t in all_tasks(c, pid2))
                            rounds.append(f"{have} after {secs:.0f}s")
                            if have >= a.tasks:
                                break
                        check(
                            f"a slow model ({a.slow_latency}s a request, 4 at a time) within --predict-deadline {a.deadline}",
                            have == a.tasks and len(rounds) > 1 and slow.requests() == 2 * a.tasks,
                            f"Retrieve predictions rounds: {'; '.join(rounds)}; {slow.requests()} judge requests for "
                            f"{a.tasks} tasks x 2 judges (none asked twice)",
                        )
                    finally:
                        slow.stop()
            if a.kinds:
                kinds_checks(base, pat, c, tmp, procs, check, a.kind_tasks)
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            fake.stop()

    lines = [
        "# llmlabel with a real Label Studio",
        "",
        f"- date: {now()}",
        f"- machine: {machine()}",
        f"- Label Studio {ls_version} (pip `label-studio`, own virtualenv), started in {ls_start:.0f}s with "
        "ML_BLOCK_LOCAL_IP=false SSRF_PROTECTION_ENABLED=false, a temporary data dir, a created user and a "
        "personal access token (JWT; legacy tokens are off by default in 1.23)",
        f"- `llmlabel serve` on fakellm (SST-2 dev, 2 simulated judges), labels positive/negative/neutral, "
        f"`--ls-label pos=positive --ls-label neg=negative`; {judge_requests} judge requests in all",
        f"- {a.tasks} SST-2 dev texts as tasks (`$body`), {a.annotate} annotated through the API"
        + (" (steps 3-8 skipped: --only-kinds)" if a.only_kinds else ""),
        *(
            [
                f"- --kinds: {a.kind_tasks} CLINC150 test texts in a <Taxonomy> project (10 domains and oos -> 150 "
                f"intents; 3 simulated judges, taxonomy_threshold 0.5) and {a.kind_tasks} GoEmotions test texts in a "
                '<Choices choice="multiple"> project (28 emotions; 3 simulated judges), each with its own '
                "`llmlabel serve`; the review rounds answered from the data sets' gold through Label Studio's API"
            ]
            if a.kinds
            else []
        ),
        f"- command: `{command_line()}`",
        "",
        "| check | result |",
        "|---|---|",
        *[f"| {name} | {detail} |" for name, detail in checks],
        "",
    ]
    out = RESULTS / f"{a.out}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if all(n.startswith("PASS") for n, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
