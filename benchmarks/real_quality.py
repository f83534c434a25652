"""Real local models on real data: each embedded model as a judge, and their ensemble, on seeded samples of
TREC test, SST-2 dev and SMS spam (../shared/data), through `llmlabel label` against llama.cpp servers that
llmlabel starts (llmlabel.local). Writes benchmarks/results/real_quality.md, then rebuilds BENCHMARKS.md.

    python benchmarks/real_quality.py [--rows 40] [--models qwen2.5-coder-0.5b,smollm2-135m,gemma3-270m]

Per model and dataset: accuracy, macro-F1, ECE of its confidence, seconds and tokens per row; per dataset the
best single judge against the ensemble (majority soft vote after the aggregation leaves out uninformative
judges, and Dawid-Skene). llama.cpp's own prompt/generation tokens per second come from its verbose log
(LLMLABEL_LOCAL_VERBOSE=1), with the share of prompt tokens served from its prefix cache.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import TREC_LABELS  # noqa: E402

from llmlabel.evaluation import metrics  # noqa: E402

TASKS: dict[str, dict[str, Any]] = {
    "trec": {
        "file": "trec_test.csv",
        "pool": "trec_train.csv",  # labeled rows for retrieved demonstrations (--modes fewshot)
        "instructions": "Classify the question by the kind of answer it asks for.",
        "labels": TREC_LABELS,
    },
    "sst2": {
        "file": "sst2_dev.csv",
        "pool": "sst2_test.csv",
        "instructions": "Is the movie review positive or negative?",
        "labels": {"negative": "the reviewer dislikes the movie", "positive": "the reviewer likes the movie"},
    },
    "sms": {
        "file": "sms_spam.csv",
        "instructions": "Is this SMS message spam (unsolicited advertising, prizes, scams) or ham (a normal message)?",
        "labels": {"ham": "a normal personal message", "spam": "unsolicited advertising, prize or scam"},
    },
}
PERF = re.compile(r"(prompt eval|\beval) time =\s*([\d.]+) ms /\s*(\d+) (?:tokens|runs)")
MODES = ("candidates", "fewshot", "cascade")  # --modes: the quality levers measured beside the judges
PREFIX = re.compile(r"prefix-match hit, remaining (\d+) prompt tokens to eval")


def sample(data_dir: Path, task: str, n: int) -> list[dict[str, str]]:
    rows = list(csv.DictReader(open(data_dir / TASKS[task]["file"], encoding="utf-8")))
    random.Random(0).shuffle(rows)
    return rows[:n]


def pool(data_dir: Path, task: str, n: int, d: Path) -> Path:
    """The labeled pool for retrieved demonstrations: the task's own pool file, or (SMS has one file) every row
    outside the seeded sample of ``n``."""
    if "pool" in TASKS[task]:
        return data_dir / TASKS[task]["pool"]
    rows = list(csv.DictReader(open(data_dir / TASKS[task]["file"], encoding="utf-8")))
    random.Random(0).shuffle(rows)
    path = d / f"{task}.pool.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "label"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows[n:])
    return path


def llama_perf(logs: list[Path]) -> dict[str, float]:
    """Prompt and generation tokens/s from llama.cpp's verbose timings, and the prompt share it had cached."""
    sums = {"prompt eval": [0.0, 0], "eval": [0.0, 0]}
    remaining = 0
    for log in logs:
        text = log.read_text(errors="replace")
        for kind, ms, n in PERF.findall(text):
            sums[kind.strip()][0] += float(ms)
            sums[kind.strip()][1] += int(n)
        remaining += sum(int(x) for x in PREFIX.findall(text))
    out = {}
    for kind, (ms, n) in sums.items():
        out[kind] = n / (ms / 1000) if ms else float("nan")
        out[kind + " tokens"] = n
    return out


def run_task(
    task: str,
    rows: list[dict[str, str]],
    judges: list[dict[str, Any]],
    d: Path,
    agg: str,
    n_gold: int = 0,
    extra: dict[str, Any] | None = None,
    tag: str = "",
) -> dict:
    """Label `rows` with `judges` and aggregate `agg`; the first `n_gold` rows' labels are given as gold rows.
    ``extra``: config keys on top (``task`` keys merge into the task); ``tag``: its own config and output."""
    t = TASKS[task]
    extra = dict(extra or {})
    task_extra = {**t.get("task_extra", {}), **extra.pop("task", {})}
    with open(d / f"{task}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        w.writeheader()
        w.writerows(rows)
    cfg = {
        "task": {"name": task, "instructions": t["instructions"], "labels": t["labels"], **task_extra},
        "judges": judges,
        "aggregate": agg,
        "cache_dir": str(d / "cache"),
        **extra,
    }
    if n_gold:
        with open(d / f"{task}.gold.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["id", "label"], extrasaction="ignore")
            w.writeheader()
            w.writerows(rows[:n_gold])
        cfg["gold"] = str(d / f"{task}.gold.csv")
    (d / f"{task}{tag}.yaml").write_text(json.dumps(cfg))
    out = d / f"{task}.{agg}{tag}.jsonl"
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "llmlabel", "label", str(d / f"{task}.csv"), "-c", str(d / f"{task}{tag}.yaml")]
    subprocess.run(
        [*cmd, "-o", str(out), "-q"],
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    wall = time.perf_counter() - start
    scored = {r["id"] for r in rows[n_gold:]}
    recs = [r for r in (json.loads(x) for x in open(out)) if r["id"] in scored]
    ledger = json.loads(out.with_name(out.name + ".ledger.json").read_text())["runs"][-1]
    return {"recs": recs, "wall": wall, "ledger": ledger}


def judge_config(j: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The judge entry for one of the embedded servers' models (``state.judges()``), as the real-model
    benchmarks ask it: one request at a time, JSON schema, cached under the model's name (ports change)."""
    return {
        "name": j["name"],
        "model": j["model"],
        "base_url": j["base_url"],
        "concurrency": 1,
        "response_format": "json_object_schema",
        "cache_as": f"llmlabel-local/{j['model']}",
        "timeout": 600,
        **extra,
    }


def scored(res: dict, rows: list[dict[str, str]], labels: list[str]) -> tuple[dict[str, float], list, list, list]:
    """(scores, gold, predicted labels, confidences) of a run_task result over ``rows``, in their order."""
    by_id = {r["id"]: r for r in res["recs"]}
    gold = [r["label"] for r in rows]
    pred = [by_id[r["id"]]["label"] for r in rows]
    conf = [by_id[r["id"]]["confidence"] for r in rows]
    return score(gold, pred, conf, labels), gold, pred, conf


def score(gold: list[str], pred: list[str | None], conf: list[float | None], labels: list[str]) -> dict[str, float]:
    g = np.array(gold, dtype=object)
    p = np.array([x if x is not None else "\x00" for x in pred], dtype=object)
    c = np.array([x if x is not None else 0.0 for x in conf], dtype=np.float64)
    ok = g == p
    sel = metrics.selective_threshold(c, ok, 0.9)
    return {
        "acc": metrics.accuracy(g, p),
        "f1": metrics.macro_f1(g, p, labels=labels),
        "ece": metrics.expected_calibration_error(c, ok),
        "cov90": sel["coverage"] if sel["coverage"] is not None else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=40, help="rows per dataset (seeded sample)")
    ap.add_argument("--tasks", default="sst2,sms,trec")
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,smollm2-135m,gemma3-270m")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--no-logprobs", action="store_true", help="plain JSON answers (confidence 1.0), no calibration")
    ap.add_argument("--name", default="real_quality", help="results file benchmarks/results/NAME.md")
    ap.add_argument(
        "--gold-rows", type=int, default=0, help="give the first N sampled rows as gold (scores: the other rows)"
    )
    ap.add_argument("--work", help="keep inputs, outputs and the answer cache here (a rerun is then free)")
    # One thread per server: llama.cpp's threads spin while they wait, so 3 servers x 2 threads on 2 shared
    # cores thrash (measured: 2.6 s per generated token for Qwen against ~0.1 s alone).
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--modes",
        default="",
        help=f"extra rows per dataset, comma-separated: {', '.join(MODES)} (candidate sets and retrieved "
        "demonstrations on the first model; the cascade over every model, cheapest first)",
    )
    a = ap.parse_args()
    modes = tuple(m for m in a.modes.split(",") if m)
    if set(modes) - set(MODES):
        ap.error(f"--modes: unknown {', '.join(sorted(set(modes) - set(MODES)))}; choose from {', '.join(MODES)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below: stop the servers
    os.environ["LLMLABEL_LOCAL_MODELS"] = a.models
    os.environ["LLMLABEL_LOCAL_VERBOSE"] = "1"
    from llmlabel.local import servers

    load = os.getloadavg()[0]
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(a.work or tmp)
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        state, procs = servers.launch(d / "run", threads=a.threads)
        startup = time.perf_counter() - t0
        try:
            judges = [judge_config(j, logprobs=not a.no_logprobs) for j in state.judges()]
            for task in a.tasks.split(","):
                rows = sample(Path(a.data_dir), task, a.rows)
                lines += table(task, rows, judges, d, state, a.gold_rows, modes, Path(a.data_dir))
        finally:
            for p in procs:
                servers._terminate(p.pid)
    head = [
        "## Real local models on real data (benchmarks/real_quality.py" + (", no logprobs)" if a.no_logprobs else ")"),
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores ({platform.machine()}) shared with other jobs "
        f"(load {load:.1f} at start), llama.cpp threads {a.threads}, servers up in {startup:.0f}s. Command: "
        f"`python benchmarks/real_quality.py --rows {a.rows} --tasks {a.tasks} --models {a.models}"
        + (" --no-logprobs" if a.no_logprobs else "")
        + (f" --gold-rows {a.gold_rows}" if a.gold_rows else "")
        + (f" --modes {a.modes}" if modes else "")
        + (f" --name {a.name}" if a.name != "real_quality" else "")
        + "`",
        "",
        f"Seeded samples of {a.rows} rows per dataset"
        + (
            f"; the first {a.gold_rows} are given to llmlabel as gold rows (`gold:`: judge weights, left-out "
            "judges and confidence calibration use them) and every score is on the other rows"
            if a.gold_rows
            else ""
        )
        + ". Each judge: label mode, "
        + (
            "JSON-schema constrained answer without logprobs (confidence 1.0). "
            if a.no_logprobs
            else "JSON-schema constrained answer, the label token's logprobs calibrated on content-free inputs "
            "(the embedded default). "
        )
        + "`ensemble (majority)`: soft vote after the aggregation leaves out judges with ~0 kappa; "
        "`ensemble (dawid_skene)`: the same over Dawid-Skene. cov@0.9: share of rows kept at the confidence "
        "threshold that reaches 0.9 accuracy (0 if none does). s/row: wall seconds of the whole run per row "
        "(a row's judges are asked at the same time, each server on its own thread). llama.cpp tok/s: prompt / generation tokens per second from its "
        "own timings; cached: share of prompt tokens served from its prefix cache."
        + (
            " Lever rows (`--modes`): candidate sets (CanDist's prompt; coverage: share of sets holding the gold "
            "label), 4 retrieved demonstrations per row (TF-IDF nearest rows of a labeled pool: TREC train, "
            "SST-2 test, SMS rows outside the sample), and the cascade, which asks the judges cheapest first and "
            "stops a row once the trusted judges asked so far reach confidence 0.8; its first rows (the probe, "
            "`cascade.probe_rows`, 64 by default) ask every judge, and a judge the uninformative check flags on "
            "them is no longer trusted (its s/row column: judges asked per row)."
            if modes
            else ""
        ),
        "",
    ]
    text = "\n".join(head + lines) + "\n"
    print(text)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"{a.name}.md").write_text(text)
    from benchmarks import collect  # rebuilds BENCHMARKS.md from every results file

    collect.main([])


def mode_row(
    task: str, rows: list[dict[str, str]], judges: list[dict[str, Any]], d: Path, n_gold: int, mode: str, data: Path
) -> str:
    """A table row for one quality lever (--modes): on the first judge (the embedded default's model), or for the
    cascade on every judge, the first one last (the cheap ones are asked first)."""
    labels = list(TASKS[task]["labels"])
    gold = [r["label"] for r in rows[n_gold:]]
    first = judges[0]
    js: list[dict[str, Any]] = [first]
    if mode == "candidates":
        extra: dict[str, Any] = {"mode": "candidates"}
        name = f"{first['name']}, candidate sets"
    elif mode == "fewshot":
        extra = {"task": {"examples_file": str(pool(data, task, len(rows), d)), "examples_k": 4}}
        name = f"{first['name']}, 4 retrieved demonstrations"
    else:
        js = judges[1:] + judges[:1]
        extra = {"cascade": {"threshold": 0.8}}
        name = f"cascade ({' > '.join(j['name'] for j in js)}, threshold 0.8)"
    res = run_task(task, rows, js, d, "majority", n_gold, extra, tag=f".{mode}")
    recs = res["recs"]
    s = score(gold, [x["label"] for x in recs], [x["confidence"] for x in recs], labels)
    led = res["ledger"]["judges"].values()
    sent = sum(j["requests"] for j in led)
    toks = f"{sum(j['input_tokens'] + j['output_tokens'] for j in led) / sent:.0f}" if sent else ""
    if mode == "candidates":
        sets = [x.get("candidates") or [] for x in recs]
        cov = np.mean([g in c for g, c in zip(gold, sets)])
        name += f" (coverage {cov:.2f}, mean size {np.mean([len(c) for c in sets]):.2f})"
    # The cascade's answers are the judges' cached answers from the table's first run: its cost is the share of
    # judges it asks, not seconds.
    asked = np.mean([len(x.get("judges") or {}) for x in recs])
    sec = f"{asked:.2f} judges/row" if mode == "cascade" else f"{res['wall'] / len(rows):.2f}"
    if mode != "cascade" and sent < len(rows):
        sec = "cached"
    return f"| {name} | {s['acc']:.3f} | {s['f1']:.3f} | {s['ece']:.3f} | {s['cov90']:.2f} | {sec} | {toks} | | |"


def table(
    task: str,
    rows: list[dict[str, str]],
    judges: list[dict[str, Any]],
    d: Path,
    state: Any,
    n_gold: int = 0,
    modes: tuple[str, ...] = (),
    data: Path | None = None,
) -> list[str]:
    labels = list(TASKS[task]["labels"])
    gold = [r["label"] for r in rows[n_gold:]]
    logs = [Path(s.log) for s in state.servers]
    before = [p.stat().st_size for p in logs]
    res = run_task(task, rows, judges, d, "majority", n_gold)
    perf = {}
    for s, p, b in zip(state.servers, logs, before):
        part = d / f"{p.name}.{task}.part"
        part.write_bytes(p.read_bytes()[b:])
        perf[s.models[0]] = llama_perf([part])
    ds = run_task(task, rows, judges, d, "dawid_skene", n_gold)  # answers come from the cache: only the fit differs
    n = len(rows)
    out = [
        f"### {task} ({len(gold)} rows scored" + (f", {n_gold} gold" if n_gold else "") + f", {len(labels)} labels)",
        "",
        "| judge / mode | accuracy | macro-F1 | ECE | cov@0.9 | s/row | tokens/row (in+out) "
        "| llama.cpp prompt / gen tok/s | cached |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    best = ("", -1.0)
    for j in judges:
        name = j["name"]
        ans = [r["judges"].get(name) or {} for r in res["recs"]]
        pred = [a.get("label") for a in ans]
        conf = [(a.get("probs") or {}).get(a.get("label"), 1.0 if a.get("label") else None) for a in ans]
        s = score(gold, pred, conf, labels)
        if s["acc"] > best[1]:
            best = (name, s["acc"])
        lj = res["ledger"]["judges"][name]
        toks = (lj["input_tokens"] + lj["output_tokens"]) / max(lj["requests"], 1)
        pf = perf.get(j["model"], {})
        cached = 1 - pf.get("prompt eval tokens", 0) / max(lj["input_tokens"], 1)
        speed = (
            f"{res['wall'] / n:.2f} (all judges) | {toks:.0f} | "
            f"{pf.get('prompt eval', float('nan')):.0f} / {pf.get('eval', float('nan')):.1f} | {cached:.0%} |"
        )
        if lj["requests"] < n:  # answers from an earlier run's cache (--work): its seconds are not this run's
            speed = "cached | | | |"
        out.append(
            f"| {name} ({j['model']}) | {s['acc']:.3f} | {s['f1']:.3f} | {s['ece']:.3f} | {s['cov90']:.2f} | {speed}"
        )
    combined = []
    for agg, r in (("majority", res), ("dawid_skene", ds)):
        s = score(gold, [x["label"] for x in r["recs"]], [x["confidence"] for x in r["recs"]], labels)
        combined.append(f"{agg} {s['acc']:.3f} ({'>=' if s['acc'] >= best[1] else 'BELOW'} best)")
        left = r["ledger"].get("quality", {}).get("left_out") or []
        note = f"; left out: {', '.join(left)}" if left else ""
        out.append(
            f"| **ensemble ({agg}{note})** | {s['acc']:.3f} | {s['f1']:.3f} | {s['ece']:.3f} "
            f"| {s['cov90']:.2f} | | | | |"
        )
    for mode in modes:
        out.append(mode_row(task, rows, judges, d, n_gold, mode, data or Path()))
        print(out[-1], flush=True)
    out += ["", f"Best single judge: {best[0]} {best[1]:.3f}; combined: {', '.join(combined)}.", ""]
    return out


if __name__ == "__main__":
    main()
