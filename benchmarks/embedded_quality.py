"""The embedded default (Qwen2.5-Coder-0.5B behind llmlabel's own llama.cpp server) beyond sentiment: why it
fails on topic and question-type tasks, and which gold-free lever fixes what (issue 29).

    nice python benchmarks/embedded_quality.py [--tasks wos,clinc_domain,trec,sst2] [--rows 60]
        [--variants default,reversed,nodesc,codes] [--cache-dir /tmp/llmlabel-embedded-cache]

Each task is asked through llmlabel's own judge client (JudgeClient, the prompt templates, the response cache,
`probs_from_logprobs`) exactly as `llmlabel label` asks the embedded default, once per prompt variant:

- default:  the labels in the config's order, with descriptions, answered as JSON label names (the default);
- reversed: the same labels in reverse order (position bias; with default: permutation debiasing);
- nodesc:   label names only;
- codes:    a one-token letter-code answer (A, B, ...) instead of the JSON name.

Every variant also answers the content-free inputs ("N/A", "", "[MASK]"). From the same answers each lever
is scored without asking again: `decoded` (the model's own JSON answer), `raw` (argmax of the label
distribution), `cc` (content-free calibration: the shipped default), `bc` (Batch Calibration: the bias is the
mean distribution over the unlabeled rows themselves, Zhou et al. 2024), `perm` / `perm+bc` (the mean of the
default and reversed orders' distributions). Per lever: accuracy with a 95% Wilson interval, macro-F1, ECE
(confidence = the lever's top probability; the decoded answer's is the raw probability of its label), and
the share of the most frequent answer. s/row: seconds of the requests actually sent (cached answers: the
time recorded when they were first asked). Answers are cached in --cache-dir, so reruns ask nothing.
Writes benchmarks/results/embedded_<task>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import TREC_LABELS  # noqa: E402

from llmlabel.config import Judge, Task  # noqa: E402
from llmlabel.ensemble.calibration import CONTENT_FREE, average_content_free, contextual_calibrate  # noqa: E402
from llmlabel.evaluation import metrics  # noqa: E402
from llmlabel.llm.cache import ResponseCache  # noqa: E402
from llmlabel.llm.judge import Budget, JudgeClient  # noqa: E402
from llmlabel.llm.ledger import JudgeLedger  # noqa: E402
from llmlabel.llm.prompts import Prompts  # noqa: E402
from llmlabel.llm.tokens import truncate  # noqa: E402

# /work/main/benchmarks and a worktree /work/wt/<name>/benchmarks both find ../shared/data
DATA = next(
    (p for p in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data") if p.exists()), Path()
)
CLINC_DOMAINS = {
    "auto_and_commute": "cars, driving, traffic, fuel and getting around",
    "banking": "bank accounts, balances, transfers and transactions",
    "credit_cards": "credit cards: limits, rewards, payments, applying, a lost or damaged card",
    "home": "the home: shopping lists, to-do lists, reminders, smart home devices",
    "kitchen_and_dining": "cooking, recipes, food, nutrition and restaurants",
    "meta": "talking to the assistant itself: its settings, name, voice, repeating or cancelling",
    "small_talk": "chit-chat: greetings, jokes, thanks, questions about the assistant's opinions",
    "travel": "trips, flights, hotels, visas, translation and travel alerts",
    "utility": "time, date, weather, alarms, timers, calculations, definitions, spelling",
    "work": "work: meetings, paid time off, payday, insurance, W-2 and direct deposit",
}
TASKS: dict[str, dict[str, Any]] = {
    "wos": {
        "file": "wos1k_test.csv",
        "column": "label_l1",
        "kind": "topic (scientific abstracts, 7 domains)",
        "instructions": "Which scientific domain is this paper's abstract from?",
        "labels": json.loads((DATA / "wos1k_l1_descriptions.json").read_text()) if DATA.exists() else {},
    },
    "clinc_domain": {
        "file": "clinc150_hier_test.csv",
        "column": "label_l1",
        "kind": "topic (requests to a voice assistant, 10 domains)",
        "instructions": "Which domain does this request to a voice assistant belong to?",
        "labels": CLINC_DOMAINS,
    },
    "trec": {
        "file": "trec_test.csv",
        "column": "label",
        "kind": "question type (6 labels)",
        "instructions": "Classify the question by the kind of answer it asks for.",
        "labels": TREC_LABELS,
    },
    "sst2": {
        "file": "sst2_dev.csv",
        "column": "label",
        "kind": "sentiment (2 labels)",
        "instructions": "Is the movie review positive or negative?",
        "labels": {"negative": "the reviewer dislikes the movie", "positive": "the reviewer likes the movie"},
    },
    "clinc_intent": {
        "file": "clinc150_test.csv",
        "column": "label",
        "kind": "intent (151 labels: 150 intents and oos, names only)",
        "instructions": "Which intent does this request to a voice assistant express? oos: none of them.",
        "labels": {lab: "" for lab in (DATA / "clinc150_labels.txt").read_text().split()} if DATA.exists() else {},
    },
}


def sample(task: str, n: int) -> list[dict[str, str]]:
    t = TASKS[task]
    rows = list(csv.DictReader(open(DATA / t["file"], encoding="utf-8")))
    random.Random(0).shuffle(rows)
    return [{"id": r["id"], "text": r["text"], "label": r[t["column"]]} for r in rows[:n]]


def variant_task(task: str, variant: str) -> Task:
    t = TASKS[task]
    labels = dict(t["labels"])
    if variant == "reversed":
        labels = dict(reversed(list(labels.items())))
    if variant == "nodesc":
        labels = {lab: "" for lab in labels}
    return Task(name=task, instructions=t["instructions"], labels=labels)


def variant_judge(base: Judge, variant: str) -> Judge:
    # codes: llmlabel asks for one letter code when logprobs are on and the format is text/auto.
    return base.model_copy(update={"response_format": "text"}) if variant == "codes" else base


class Asker:
    """One variant's judge client over the shared cache, with the seconds each uncached request took."""

    def __init__(self, judge: Judge, task: Task, cache: ResponseCache, timings: dict[str, float]) -> None:
        self.judge, self.task, self.timings = judge, task, timings
        self.client = JudgeClient(judge, cache, JudgeLedger(judge.name, judge.model), Budget(), task.label_names)
        self.prompts = Prompts(task, None)

    async def ask(self, text: str) -> tuple[Any, float]:
        text = truncate(text, self.judge.max_text_tokens)[0]
        msgs = self.prompts.messages(self.judge, "label", text, None, self.client.codes is not None)
        key = self.client.key_for(msgs, "label")
        t = time.perf_counter()
        ans = await self.client.ask(msgs, "label")
        if key not in self.timings:
            self.timings[key] = time.perf_counter() - t
        return ans, self.timings[key]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if not n:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def normalize(p: dict[str, float], labels: list[str]) -> dict[str, float]:
    s = sum(max(p.get(lab, 0.0), 0.0) for lab in labels)
    return {lab: max(p.get(lab, 0.0), 0.0) / s for lab in labels} if s > 0 else {lab: 1 / len(labels) for lab in labels}


def batch_calibrate(dists: list[dict[str, float]], labels: list[str]) -> list[dict[str, float]]:
    """Batch Calibration: divide each row's distribution by the batch's mean distribution (the bias the
    model shows across these very inputs), renormalized. No gold, no content-free prompt."""
    mean = {lab: sum(d[lab] for d in dists) / len(dists) for lab in labels}
    floor = min([v for v in mean.values() if v > 0] or [1.0])
    return [normalize({lab: d[lab] / max(mean[lab], floor * 1e-3) for lab in labels}, labels) for d in dists]


def score(name: str, preds: list[str], conf: list[float], gold: list[str], labels: list[str]) -> dict[str, Any]:
    ok = np.array([p == g for p, g in zip(preds, gold)])
    n, k = len(ok), int(ok.sum())
    lo, hi = wilson(k, n)
    counts = {lab: preds.count(lab) for lab in labels}
    top = max(counts, key=counts.__getitem__)
    return {
        "lever": name,
        "n": n,
        "acc": k / n,
        "lo": lo,
        "hi": hi,
        "f1": float(metrics.macro_f1(np.array(gold, dtype=object), np.array(preds, dtype=object), labels=labels)),
        "ece": float(metrics.expected_calibration_error(np.array(conf, dtype=float), ok)),
        "top": f"{top} {counts[top] / n:.0%}",
    }


async def run_variant(task: str, variant: str, base: Judge, rows: list[dict[str, str]], cache, timings) -> dict:
    t = variant_task(task, variant)
    asker = Asker(variant_judge(base, variant), t, cache, timings)
    labels = t.label_names
    cf = []
    for text in CONTENT_FREE:
        ans, _ = await asker.ask(text)
        cf.append({"label": ans.label, "probs": ans.probs})
    out = []
    for r in rows:
        ans, secs = await asker.ask(r["text"])
        out.append({"id": r["id"], "gold": r["label"], "label": ans.label, "probs": ans.probs, "secs": secs})
    await asker.client.aclose()
    return {"labels": labels, "cf": cf, "rows": out}


def levers(task: str, got: dict[str, dict], order: list[str]) -> list[dict[str, Any]]:
    labels = order
    res = []
    for variant, g in got.items():
        rows = [r for r in g["rows"]]
        gold = [r["gold"] for r in rows]
        raw = [normalize(r["probs"] or {}, labels) for r in rows]
        dec = [r["label"] or "" for r in rows]
        tag = "" if variant == "default" else f" [{variant}]"
        res.append(score("decoded" + tag, dec, [p.get(d, 0.0) for p, d in zip(raw, dec)], gold, labels))
        res.append(
            score("raw" + tag, [max(p, key=p.__getitem__) for p in raw], [max(p.values()) for p in raw], gold, labels)
        )
        cf = [c["probs"] for c in g["cf"] if c["probs"]]
        if cf:
            p_cf = average_content_free(cf, labels)
            cc = [normalize(contextual_calibrate(p, p_cf), labels) for p in raw]
            res.append(
                score("cc" + tag, [max(p, key=p.__getitem__) for p in cc], [max(p.values()) for p in cc], gold, labels)
            )
        bc = batch_calibrate(raw, labels)
        res.append(
            score("bc" + tag, [max(p, key=p.__getitem__) for p in bc], [max(p.values()) for p in bc], gold, labels)
        )
    if "default" in got and "reversed" in got:
        a = [normalize(r["probs"] or {}, labels) for r in got["default"]["rows"]]
        b = [normalize(r["probs"] or {}, labels) for r in got["reversed"]["rows"]]
        gold = [r["gold"] for r in got["default"]["rows"]]
        perm = [{lab: (x[lab] + y[lab]) / 2 for lab in labels} for x, y in zip(a, b)]
        res.append(
            score("perm", [max(p, key=p.__getitem__) for p in perm], [max(p.values()) for p in perm], gold, labels)
        )
        pb = batch_calibrate(perm, labels)
        res.append(
            score("perm+bc", [max(p, key=p.__getitem__) for p in pb], [max(p.values()) for p in pb], gold, labels)
        )
    return res


def content_free_table(got: dict[str, dict], order: list[str]) -> list[str]:
    lines = ["| variant | input | decoded | top label (p) | its place in the list |", "|---|---|---|---|---|"]
    for variant, g in got.items():
        for text, c in zip(CONTENT_FREE, g["cf"]):
            p = normalize(c["probs"] or {}, order)
            top = max(p, key=p.__getitem__)
            lines.append(
                f"| {variant} | {text!r} | {c['label']} | {top} ({p[top]:.2f}) | {g['labels'].index(top) + 1} of {len(order)} |"
            )
    return lines


def report(task: str, rows: list[dict], got: dict[str, dict], res: list[dict], wall: dict[str, float], cmd: str) -> str:
    t = TASKS[task]
    gold_counts: dict[str, int] = {}
    for r in rows:
        gold_counts[r["label"]] = gold_counts.get(r["label"], 0) + 1
    lines = [
        f"## Embedded default on {task}: {t['kind']}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores ({platform.machine()}) shared with "
        f"other jobs (load {os.getloadavg()[0]:.1f}). Qwen2.5-Coder-0.5B-Instruct Q4_K_M via llmlabel's llama.cpp server. "
        f"Command: `{cmd}`",
        "",
        f"n = {len(rows)} seeded rows of {t['file']} (gold: "
        + ", ".join(f"{k} {v}" for k, v in sorted(gold_counts.items(), key=lambda kv: -kv[1])[:10])
        + ("" if len(gold_counts) <= 10 else f", ... {len(gold_counts)} labels")
        + ").",
        "",
        "s/row per variant (seconds the requests took when first asked): "
        + ", ".join(f"{v} {s:.2f}" for v, s in wall.items())
        + ".",
        "",
        "| lever | n | accuracy | 95% interval | macro-F1 | ECE | most frequent answer |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res:
        lines.append(
            f"| {r['lever']} | {r['n']} | {r['acc']:.3f} | {r['lo']:.2f}-{r['hi']:.2f} | {r['f1']:.3f} | {r['ece']:.3f} | {r['top']} |"
        )
    if len(t["labels"]) <= 12:
        lines += ["", "Content-free inputs: what the model answers when the text says nothing.", ""]
        lines += content_free_table(got, list(t["labels"]))
    return "\n".join(lines) + "\n"


async def main_async(a: argparse.Namespace) -> None:
    from llmlabel.local import servers
    from llmlabel.pipeline.run import _local_judges

    cache = ResponseCache(a.cache_dir)
    tpath = Path(a.cache_dir) / "timings.json"
    timings: dict[str, float] = json.loads(tpath.read_text()) if tpath.exists() else {}
    with servers.local_judges() as dicts:
        base = _local_judges(dicts)[0]
        for spec in a.tasks.split(","):  # task or task:rows
            task, _, n = spec.partition(":")
            rows = sample(task, int(n or a.rows))
            got: dict[str, dict] = {}
            wall: dict[str, float] = {}
            for variant in a.variants.split(","):
                if task == "clinc_intent" and variant in ("reversed", "nodesc"):
                    continue
                got[variant] = await run_variant(task, variant, base, rows, cache, timings)
                wall[variant] = float(np.mean([r["secs"] for r in got[variant]["rows"]]))
                tpath.write_text(json.dumps(timings))
                print(f"{task} {variant}: done ({wall[variant]:.2f} s/row)", flush=True)
            res = levers(task, got, list(TASKS[task]["labels"]))
            cmd = (
                f"nice python benchmarks/embedded_quality.py --tasks {task} --rows {len(rows)} --variants {a.variants}"
            )
            text = report(task, rows, got, res, wall, cmd)
            print(text, flush=True)
            out = Path(a.out_dir) / f"embedded_{task}.md"
            out.write_text(text)
            (Path(a.cache_dir) / f"answers_{task}.json").write_text(json.dumps(got))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="clinc_domain,trec,wos,sst2", help="task or task:rows, comma-separated")
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--variants", default="default,reversed,nodesc,codes")
    ap.add_argument("--cache-dir", default="/tmp/llmlabel-embedded-cache")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
