"""The embedded models (behind llmlabel's own llama.cpp server) beyond sentiment: why they fail on topic and
question-type tasks, and which gold-free lever fixes what (issue 29). The script's own default is the 0.5B
(its result files keep their names); `--model qwen2.5-coder-1.5b` is llmlabel's default judge since issue 29.

    nice python benchmarks/embedded_quality.py [--tasks wos,clinc_domain,trec,sst2] [--rows 60]
        [--variants default,reversed,nodesc,codes] [--cache-dir /tmp/llmlabel-embedded-cache]

Each task is asked through llmlabel's own judge client (JudgeClient, the prompt templates, the response cache,
`probs_from_logprobs`) exactly as `llmlabel label` asks the embedded default, once per prompt variant:

- default:  the labels in the config's order, with descriptions, answered as JSON label names (one question a
            row: the embedded default for 2 labels and for 7+);
- reversed: the same labels in reverse order (position bias; with default: permutation debiasing);
- nodesc:   label names only;
- codes:    a one-token letter-code answer (A, B, ...) instead of the JSON name;
- per_label: one Yes/No question per label (judge.per_label; the embedded default for 3 to 5 labels): its
            `raw` is the labels' normalized odds of Yes, `bc` that with Batch Calibration, and "llmlabel's
            default" names whichever of the two reads `llmlabel label` makes.

Every variant but per_label also answers the content-free inputs ("N/A", "", "[MASK]"). From the same answers each lever
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
import contextlib
import csv
import hashlib
import itertools
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
from llmlabel.ensemble.calibration import (  # noqa: E402
    CONTENT_FREE,
    average_content_free,
    batch_min_rows,
    content_free_undone,
    contextual_calibrate,
)
from llmlabel.ensemble.calibration import batch_calibrate_rows as batch_calibrate  # noqa: E402
from llmlabel.ensemble.combine import combine_fits  # noqa: E402
from llmlabel.evaluation import metrics  # noqa: E402
from llmlabel.llm.cache import ResponseCache  # noqa: E402
from llmlabel.llm.judge import Budget, JudgeClient  # noqa: E402
from llmlabel.llm.ledger import JudgeLedger  # noqa: E402
from llmlabel.llm.prompts import Prompts, fits_kind  # noqa: E402
from llmlabel.llm.tokens import truncate  # noqa: E402
from llmlabel.pipeline.lifecycle import local_judges  # noqa: E402

DEFAULT_MODEL = "qwen2.5-coder-0.5b"  # this script's: unsuffixed result files (llmlabel's default is the 1.5B)
MODEL_NAMES = {
    "qwen2.5-coder-0.5b": "Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
    "qwen2.5-coder-1.5b": "Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
}
# /work/main/benchmarks and a worktree /work/wt/<name>/benchmarks both find ../shared/data
DC_INPUTS = 5  # domain-context inputs a variant is asked
MODEL = DEFAULT_MODEL  # --model: whose embedded judge "llmlabel's default" follows (per-label questions or not)
CACHED_ONLY = False  # --cached-only: score the answers in the cache, ask nothing (no server started)
TIMINGS = Path("timings.json")  # set by main: where the seconds of each request first asked are kept
# Neither there: ../shared/data, which does not exist (not Path(), the working folder, which always does).
DATA = next(
    (p for p in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data") if p.exists()),
    ROOT.parent / "shared" / "data",
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
# A news-topic task like issue 29's held-out one (which we never had): BBC News (Greene & Cunningham 2006),
# a 1,249-row copy of its bbc-text.csv (lower-cased, punctuation dropped) from github
# JhD10/DataSet-Espanol, sha256 332709fc...637a; kept outside the repository like ../shared. Four of its
# five topics, each story cut to its first 40 words (headline and lead), about a news item's length;
# a config written as the README shows (one line of instructions, a short description per label).
BBC_NEWS: dict[str, Any] = {
    "file": "bbc-text.csv",
    "path": Path(os.environ.get("LLMLABEL_NEWS_CSV", ROOT.parent / "newsdata" / "bbc-text.csv")),
    "column": "category",
    "in_labels_only": True,
    "lead_words": 40,
    "sha256": "332709fc87ca7e8a8091438e995ca5dbf8df57cc48ceba1a983145dd3e46637a",
    "source": "BBC News (Greene & Cunningham, ICML 2006), bbc-text.csv as in github JhD10/DataSet-Espanol "
    "(1,249 rows, sha256 332709fc87ca7e8a8091438e995ca5dbf8df57cc48ceba1a983145dd3e46637a), read from "
    "$LLMLABEL_NEWS_CSV (default ../newsdata/bbc-text.csv); each story's first 40 words; not in the repository.",
}
# AG News' four topics, with the one line of instructions and the descriptions a user of those names would write:
# the config of both stand-ins for issue 29's held-out set (news_ag, news_hp).
AG_NEWS_CONFIG: dict[str, Any] = {
    "instructions": "Which topic is this news article about?",
    "labels": {
        "World": "news about governments, politics, elections and world affairs",
        "Sports": "sports news: games, athletes and teams",
        "Business": "business news: companies, markets and the economy",
        "Sci/Tech": "science and technology news: computers, the internet, phones, games and research",
    },
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
        "in_labels_only": True,
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
    "sms": {
        "file": "sms_spam.csv",
        "column": "label",
        "kind": "spam (2 labels)",
        # benchmarks/real_quality.py's SMS task, word for word
        "instructions": "Is this SMS message spam (unsolicited advertising, prizes, scams) or ham (a normal message)?",
        "labels": {"ham": "a normal personal message", "spam": "unsolicited advertising, prize or scam"},
    },
    "news": {
        **BBC_NEWS,
        "kind": "topic (BBC news stories, first 40 words, 4 topics)",
        "instructions": "Which topic is this news story about?",
        "labels": {
            "business": "companies, markets, trade and the economy",
            "politics": "government, parties, elections and public policy",
            "sport": "sports, matches, athletes and teams",
            "tech": "technology, computers, the internet, phones and games",
        },
    },
    # The same stories under AG News' label names (its held-out set's kind): politics -> World, tech -> Sci/Tech,
    # with descriptions as a user of those names would write them. BBC's politics is mostly British, so "World"
    # fits it less well than AG News' world news: a check of the names, not of AG News.
    "news_ag": {
        **BBC_NEWS,
        **AG_NEWS_CONFIG,
        "kind": "topic (BBC news stories under AG News' label names, first 40 words, 4 topics)",
        "label_map": {"politics": "World", "sport": "Sports", "business": "Business", "tech": "Sci/Tech"},
    },
    # A second stand-in, nearer AG News' kind of text: HuffPost's News Category Dataset (Misra 2018), cased
    # headline + summary, its WORLD NEWS, SPORTS, BUSINESS and TECH/SCIENCE stories under AG News' names with
    # news_ag's config (AG_NEWS_CONFIG). The copy found is the dataset's first 4,782 rows (2018-02-28..05-26:
    # World 295, Sports 76, Business 48, Tech 37, Science 26), so labels are taken in turn.
    "news_hp": {
        "file": "News_Category_Dataset_v2.json",
        "path": Path(os.environ.get("LLMLABEL_NEWS_HP", ROOT.parent / "newsdata" / "huffpost_v2_part.jsonl")),
        "sha256": "4b236e29a76d7653354e0ff1be21df1432751bc750b63092fb9f89f6d70ed079",
        "source": "HuffPost News Category Dataset v2 (Misra 2018, CC BY 4.0), its first 4,782 rows as in github "
        "ongraphpythondev/elastic_search (News_Category_Dataset_v2.json, sha256 4b236e29a76d7653354e0ff1be21df"
        "1432751bc750b63092fb9f89f6d70ed079), read from $LLMLABEL_NEWS_HP (default ../newsdata/huffpost_v2_part."
        "jsonl); headline and short description; not in the repository.",
        "text_fields": ["headline", "short_description"],
        "column": "category",
        "in_labels_only": True,
        "balanced": True,
        **AG_NEWS_CONFIG,
        "kind": "topic (HuffPost headlines and summaries under AG News' label names, 4 topics)",
        "label_map": {
            "WORLD NEWS": "World",
            "SPORTS": "Sports",
            "BUSINESS": "Business",
            "TECH": "Sci/Tech",
            "SCIENCE": "Sci/Tech",
        },
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
    path = t.get("path", DATA / t["file"])
    if t.get("sha256") and hashlib.sha256(Path(path).read_bytes()).hexdigest() != t["sha256"]:
        raise SystemExit(f"{path}: not the file this task was measured on (sha256 differs)")
    if t.get("text_fields"):  # JSON lines: the text is these fields joined (a headline and its summary)
        rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
        for r in rows:
            r["text"] = " ".join(r[f].strip() for f in t["text_fields"] if r.get(f, "").strip())
    else:
        rows = list(csv.DictReader(open(path, encoding="utf-8")))
    for i, r in enumerate(rows):
        r.setdefault("id", str(i))
        r[t["column"]] = t.get("label_map", {}).get(r[t["column"]], r[t["column"]])
        if t.get("lead_words"):
            r["text"] = " ".join(r["text"].split()[: t["lead_words"]])
    random.Random(0).shuffle(rows)
    # CLINC150's out-of-scope requests have no domain: the 10-domain task is asked of in-scope requests only.
    rows = [r for r in rows if r[t["column"]] in t["labels"]] if t.get("in_labels_only") else rows
    if t.get("balanced"):  # labels taken in turn (a label with fewer rows runs out first)
        by: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by.setdefault(r[t["column"]], []).append(r)
        rows = [r for group in itertools.zip_longest(*by.values()) for r in group if r is not None]
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
    if variant == "codes":
        return base.model_copy(update={"response_format": "text"})
    # per_label: one Yes/No question per label (judge.per_label), the distribution read from each P(Yes).
    return base.model_copy(update={"per_label": True}) if variant == "per_label" else base


class Asker:
    """One variant's judge client over the shared cache, with the seconds each uncached request took."""

    def __init__(self, judge: Judge, task: Task, cache: ResponseCache, timings: dict[str, float], save=None) -> None:
        self.judge, self.task, self.timings, self.save = judge, task, timings, save
        self.client = JudgeClient(judge, cache, JudgeLedger(judge.name, judge.model), Budget(), task.label_names)
        self.prompts = Prompts(task, None)

    async def ask(self, text: str) -> tuple[Any, float]:
        text = truncate(text, self.judge.max_text_tokens)[0]
        if self.judge.per_label:  # as RowLabeler asks a per-label judge: each label's question, then combine_fits
            got = [await self.ask_kind(text, fits_kind(lab)) for lab in self.task.label_names]
            if any(a is None for a, _ in got):
                return None, 0.0
            return combine_fits([a for a, _ in got], self.task.label_names), sum(s for _, s in got)
        return await self.ask_kind(text, "label")

    async def ask_kind(self, text: str, kind: str) -> tuple[Any, float]:
        msgs = self.prompts.messages(self.judge, kind, text, None, self.client.codes is not None)
        key = self.last_key = self.client.key_for(msgs, kind)
        if CACHED_ONLY and self.client.cache.get(key) is None:
            return None, 0.0
        t = time.perf_counter()
        ans = await self.client.ask(msgs, kind)
        if key not in self.timings:
            if CACHED_ONLY:  # asked by another run (e.g. `llmlabel label`): its time is not known here
                return ans, 0.0
            self.timings[key] = time.perf_counter() - t
            if self.save:
                self.save()
        return ans, self.timings[key]


def dropped_shared(top: Any, labels: list[str], codes: dict[str, str] | None) -> dict[str, float] | None:
    """The distribution as llmlabel read it before issue 29's fix: the first label token only, a token that
    is a prefix of several labels dropped (for the "before the fix" row)."""
    if not top:
        return None
    lookup = {lab.casefold(): lab for lab in labels} | {c.casefold(): lab for lab, c in (codes or {}).items()}
    mass: dict[str, float] = {}
    for tok, lp in top:
        key = str(tok).strip().strip("\"'.{:").casefold()
        if not key or lp is None or not math.isfinite(lp):
            continue
        lab = lookup.get(key)
        if lab is None:
            hits = [name for name in labels if name.casefold().startswith(key)]
            lab = hits[0] if len(hits) == 1 else None
        if lab is not None:
            mass[lab] = mass.get(lab, 0.0) + math.exp(lp)
    return normalize(mass, labels) if mass else None


def domain_context(rows: list[dict[str, str]], k: int = DC_INPUTS) -> list[str]:
    """Domain-context calibration's inputs (Fei et al. 2023): k strings of words drawn at random from the
    unlabeled texts themselves, each as long as a typical text: they carry the task's vocabulary and length,
    not its labels. None without rows."""
    words = [w for r in rows for w in r["text"].split()]
    if not words or not k:
        return []
    length = int(np.median([len(r["text"].split()) for r in rows]))
    rng = random.Random(0)
    return [" ".join(rng.choice(words) for _ in range(max(1, length))) for _ in range(k)]


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


def embedded_judge(n_labels: int) -> Judge:
    """The embedded judge `llmlabel label` uses for these tasks' configs (no demonstrations, one label a text)
    with --model."""
    return local_judges([{"name": "e", "model": MODEL, "base_url": "http://127.0.0.1:9/v1"}], n_labels, True)[0]


def library_default(
    raw: list[dict[str, float]], p_cf: dict[str, float] | None, labels: list[str]
) -> tuple[str, list[dict[str, float]]]:
    """What `llmlabel label` makes of the embedded judge's distributions `raw` (the job's rows) with its
    content-free distribution `p_cf`, named: cc on each answer; then, where the judge has Batch Calibration
    (3+ labels) and the job the rows it needs, Batch Calibration at the job's end, after undoing cc where it
    turned the job's lean around (calibration.content_free_undone, the library's own decision)."""
    cc = [normalize(contextual_calibrate(p, p_cf), labels) for p in raw] if p_cf else raw
    judge = embedded_judge(len(labels))
    if not (judge.batch_calibration and len(raw) >= batch_min_rows(len(labels))):
        return "cc", cc
    cf = [p_cf[lab] for lab in labels] if p_cf else None
    undone = cf is not None and content_free_undone([[p[lab] for lab in labels] for p in cc], cf) is not None
    return ("bc", batch_calibrate(raw, labels)) if undone else ("cc+bc", batch_calibrate(cc, labels))


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


async def run_variant(
    task: str, variant: str, base: Judge, rows: list[dict[str, str]], cache, timings, sample_rows=None
) -> dict:
    t = variant_task(task, variant)
    asker = Asker(variant_judge(base, variant), t, cache, timings, lambda: TIMINGS.write_text(json.dumps(timings)))
    labels = t.label_names
    cf = []
    # (a per-label judge is not content-free calibrated: its Yes/No answers have no label set to bias)
    for text in [] if variant == "per_label" else CONTENT_FREE:
        ans, _ = await asker.ask(text)
        if ans is not None:
            top = (asker.client.cache.get(asker.last_key) or {}).get("top_logprobs")
            cf.append(
                {"label": ans.label, "probs": ans.probs, "before": dropped_shared(top, labels, asker.client.codes)}
            )
    dc = []
    for text in (
        [] if variant == "per_label" else domain_context(rows if sample_rows is None else sample_rows, DC_INPUTS)
    ):
        ans, _ = await asker.ask(text)
        if ans is not None:
            dc.append({"label": ans.label, "probs": ans.probs})
    out = []
    for r in rows:
        ans, secs = await asker.ask(r["text"])
        if ans is None:
            continue
        top = (asker.client.cache.get(asker.last_key) or {}).get("top_logprobs")
        before = ans.probs if variant == "per_label" else dropped_shared(top, labels, asker.client.codes)
        out.append(
            {"id": r["id"], "gold": r["label"], "label": ans.label, "probs": ans.probs, "before": before, "secs": secs}
        )
    await asker.client.aclose()
    return {"labels": labels, "cf": cf, "dc": dc, "rows": out}


def levers(task: str, got: dict[str, dict], order: list[str]) -> list[dict[str, Any]]:
    labels = order
    res = []

    def argmax(name: str, dists: list[dict[str, float]], gold: list[str]) -> None:
        preds = [max(p, key=p.__getitem__) for p in dists]
        res.append(score(name, preds, [max(p.values()) for p in dists], gold, labels))

    for variant, g in got.items():
        rows = g["rows"]
        if not rows:
            continue
        gold = [r["gold"] for r in rows]
        raw = [normalize(r["probs"] or {}, labels) for r in rows]
        dec = [r["label"] or "" for r in rows]
        tag = "" if variant == "default" else f" [{variant}]"
        res.append(score("decoded" + tag, dec, [p.get(d, 0.0) for p, d in zip(raw, dec)], gold, labels))
        argmax("raw" + tag, raw, gold)
        cf = [c["probs"] for c in g["cf"] if c["probs"]]
        if cf:
            p_cf = average_content_free(cf, labels)
            if variant == "default" and all("before" in r for r in rows):  # the shipped default before the fix
                old = [normalize(r["before"] or {}, labels) for r in rows]
                argmax("raw, before the fix", old, gold)
                cf_old = [c["before"] for c in g["cf"] if c.get("before")]
                p_old = average_content_free(cf_old, labels) if cf_old else p_cf
                argmax("cc, before the fix", [normalize(contextual_calibrate(p, p_old), labels) for p in old], gold)
            cc = [normalize(contextual_calibrate(p, p_cf), labels) for p in raw]
            argmax("cc" + tag, cc, gold)
            argmax("cc+bc" + tag, batch_calibrate(cc, labels), gold)
        argmax("bc" + tag, batch_calibrate(raw, labels), gold)
        if variant == "default":
            name, dist = library_default(raw, average_content_free(cf, labels) if cf else None, labels)
            if embedded_judge(len(labels)).per_label:  # what the default was before it asked per label
                argmax(f"one question a row: llmlabel's reading before per_label ({name})", dist, gold)
            else:
                argmax(f"llmlabel's default ({name})", dist, gold)
        if variant == "per_label" and embedded_judge(len(labels)).per_label:  # the default for 3-5 labels
            bc = embedded_judge(len(labels)).batch_calibration and len(raw) >= batch_min_rows(len(labels))
            argmax(
                f"llmlabel's default (per_label{'+bc' if bc else ''})",
                batch_calibrate(raw, labels) if bc else raw,
                gold,
            )
        dcd = [c["probs"] for c in g.get("dc", []) if c["probs"]]
        if dcd:
            p_dc = average_content_free(dcd, labels)
            argmax("dc" + tag, [normalize(contextual_calibrate(p, p_dc), labels) for p in raw], gold)
            p_both = average_content_free(cf + dcd, labels)
            argmax("cc+dc" + tag, [normalize(contextual_calibrate(p, p_both), labels) for p in raw], gold)
    if "default" in got and "reversed" in got and len(got["reversed"]["rows"]) == len(got["default"]["rows"]) > 0:
        a = [normalize(r["probs"] or {}, labels) for r in got["default"]["rows"]]
        b = [normalize(r["probs"] or {}, labels) for r in got["reversed"]["rows"]]
        gold = [r["gold"] for r in got["default"]["rows"]]
        perm = [{lab: (x[lab] + y[lab]) / 2 for lab in labels} for x, y in zip(a, b)]
        argmax("perm", perm, gold)
        argmax("perm+bc", batch_calibrate(perm, labels), gold)
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


def report(
    task: str, rows: list[dict], got: dict[str, dict], res: list[dict], wall: dict[str, float], cmd: str, model: str
) -> str:
    t = TASKS[task]
    gold_counts: dict[str, int] = {}
    for r in rows:
        gold_counts[r["label"]] = gold_counts.get(r["label"], 0) + 1
    lines = [
        f"## Embedded {model} on {task}: {t['kind']}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores ({platform.machine()}) shared with "
        f"other jobs (load {os.getloadavg()[0]:.1f}). {MODEL_NAMES.get(model, model)} via llmlabel's llama.cpp server. "
        f"Command: `{cmd}`"
        + (
            " (rescored with --cached-only from answers asked earlier: s/row is from when they were asked)"
            if CACHED_ONLY
            else ""
        ),
        "",
        f"n = {len(rows)} seeded rows of {t['file']} (gold: "
        + ", ".join(f"{k} {v}" for k, v in sorted(gold_counts.items(), key=lambda kv: -kv[1])[:10])
        + ("" if len(gold_counts) <= 10 else f", ... {len(gold_counts)} labels")
        + ")."
        + (f" Data: {t['source']}" if t.get("source") else ""),
        "",
        "s/row per variant (seconds the requests took when first asked): "
        + ", ".join(f"{v} {s:.2f}" for v, s in wall.items() if s == s)
        + ".",
        "",
        "| lever | n | accuracy | 95% interval | macro-F1 | ECE | most frequent answer |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res:
        lines.append(
            f"| {r['lever']} | {r['n']} | {r['acc']:.3f} | {r['lo']:.2f}-{r['hi']:.2f} | {r['f1']:.3f} | {r['ece']:.3f} | {r['top']} |"
        )
    d = got.get("default", {}).get("rows", [])
    if d:

        def top(p: Any) -> str | None:
            return max(p, key=p.get) if p else None

        same = sum(top(r["probs"]) == r["label"] for r in d)
        before = sum(top(r.get("before")) == r["label"] for r in d)
        lines += [
            "",
            f"The distribution's top label is the model's decoded answer on {same} of {len(d)} rows "
            f"(read as before the shared-first-token fix: {before} of {len(d)}).",
        ]
    if len(t["labels"]) <= 12:
        lines += ["", "Content-free inputs: what the model answers when the text says nothing.", ""]
        lines += content_free_table(got, list(t["labels"]))
    return "\n".join(lines) + "\n"


async def main_async(a: argparse.Namespace) -> None:
    from llmlabel.local import servers

    cache = ResponseCache(a.cache_dir)
    global TIMINGS
    tpath = TIMINGS = Path(a.cache_dir) / "timings.json"
    timings: dict[str, float] = json.loads(tpath.read_text()) if tpath.exists() else {}
    from llmlabel.local.models import MODELS

    spec_m = MODELS[a.model]
    offline = [{"name": spec_m.judge, "model": a.model, "base_url": "http://127.0.0.1:9/v1", "concurrency": 1}]
    if a.base_url:  # a server already running (llmlabel local start): no health check that a busy server fails
        offline[0]["base_url"] = a.base_url
    # The server started must be --model's: llmlabel starts LLMLABEL_LOCAL_MODELS, else its own default (the
    # 1.5B since issue 29), and a run of the 0.5B once got the default's answers under the 0.5B's name.
    os.environ["LLMLABEL_LOCAL_MODELS"] = a.model
    with contextlib.nullcontext(offline) if CACHED_ONLY or a.base_url else servers.local_judges() as dicts:
        base = local_judges(dicts)[0]
        if base.model != a.model:
            raise SystemExit(f"the server answers as {base.model}, not --model {a.model}")
        for spec in a.tasks.split(","):  # task or task:rows
            task, _, n = spec.partition(":")
            rows = sample(task, int(n or a.rows))
            got: dict[str, dict] = {}
            wall: dict[str, float] = {}
            for vspec in a.variants.split(","):  # variant or variant:rows (0: the content-free inputs only)
                variant, _, vn = vspec.partition(":")
                if task == "clinc_intent" and variant in ("reversed", "nodesc"):
                    continue
                part = rows[: int(vn)] if vn else rows
                got[variant] = await run_variant(task, variant, base, part, cache, timings, rows)
                secs = [r["secs"] for r in got[variant]["rows"]]
                # (nan, left out of the report: answers this script never timed, e.g. asked by `llmlabel label`)
                wall[variant] = float(np.mean(secs)) if any(secs) else float("nan")
                tpath.write_text(json.dumps(timings))
                print(f"{task} {variant}: done ({wall[variant]:.2f} s/row)", flush=True)
            res = levers(task, got, list(TASKS[task]["labels"]))
            cmd = (
                f"nice python benchmarks/embedded_quality.py --tasks {task} --rows {len(rows)} --variants {a.variants}"
                + ("" if a.model == DEFAULT_MODEL else f" --model {a.model}")
                + (f" --suffix {a.suffix}" if a.suffix else "")
            )
            text = report(task, rows, got, res, wall, cmd, a.model)
            print(text, flush=True)
            # The default model's results keep their names; another model's carry its size, e.g. _1.5b.
            tag = "" if a.model == DEFAULT_MODEL else "_" + a.model.rsplit("-", 1)[-1]
            out = Path(a.out_dir) / f"embedded_{task}{tag}{a.suffix}.md"
            out.write_text(text)
            (Path(a.cache_dir) / f"answers_{task}{tag}.json").write_text(json.dumps(got))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="clinc_domain,trec,wos,sst2", help="task or task:rows, comma-separated")
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--variants", default="default,reversed,nodesc,codes")
    ap.add_argument("--cache-dir", default="/tmp/llmlabel-embedded-cache")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--base-url", help="an embedded server already running, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the embedded model's alias (llmlabel/local/models.py)")
    ap.add_argument("--dc-inputs", type=int, default=5, help="domain-context inputs asked (0: none)")
    ap.add_argument("--suffix", default="", help="appended to the result file's name (a subset run beside a full one)")
    ap.add_argument("--cached-only", action="store_true", help="score cached answers only; ask nothing")
    args = ap.parse_args()
    global CACHED_ONLY, DC_INPUTS, MODEL
    CACHED_ONLY, DC_INPUTS, MODEL = args.cached_only, args.dc_inputs, args.model
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
