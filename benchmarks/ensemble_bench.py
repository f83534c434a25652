#!/usr/bin/env python3
"""Ensemble benchmark: three simulated judges (accuracy 0.85 / 0.70 / 0.60, each with its own systematic
confusions) served by shared/tools/fakellm.py, labeled through the `llmlabel` CLI.

(a) TREC test (500 questions, 6 labels) and (b) SST-2 dev (872 sentences, 2 labels): accuracy of each
    single judge, majority, weighted and Dawid-Skene (one labeling pass; reruns with another aggregate
    come from the cache, free).
(c) Cascade (no logprobs, so a row stops once the first two judges agree): both judge orders, calls saved
    and accuracy against asking all three. Each cascade gets its own fresh cache, so its ledger shows
    what it really costs.
(d) Candidate mode on TREC: coverage, mean set size, beta and candidate F1 of the aggregated and the
    per-judge sets.

Every figure comes from `llmlabel eval` against the datasets' gold labels. Writes
benchmarks/results/ensemble.md.

    python benchmarks/ensemble_bench.py [--data-dir ../shared/data] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
JUDGES = [  # name, model, simulated accuracy, $ per million input/output tokens (cheaper = weaker)
    ("strong", "judge-a", 0.85, 0.15, 0.60),
    ("medium", "judge-b", 0.70, 0.10, 0.40),
    ("weak", "judge-c", 0.60, 0.05, 0.20),
]
TASKS = {
    "trec": {
        "file": "trec_test.csv",
        "limit": 500,
        "name": "trec",
        "instructions": "Classify the question by the kind of answer it asks for.",
        "labels": {
            "ABBR": "an abbreviation or its expansion",
            "DESC": "a description, definition, manner or reason",
            "ENTY": "an entity (animal, color, food, product, term, ...)",
            "HUM": "a person, group or organization",
            "LOC": "a location (city, country, mountain, ...)",
            "NUM": "a number, date, amount, distance, ...",
        },
    },
    "sst2": {
        "file": "sst2_dev.csv",
        "limit": None,
        "name": "sst2",
        "instructions": "Is the sentiment of the movie review sentence positive or negative?",
        "labels": {"negative": "the reviewer dislikes the film", "positive": "the reviewer likes the film"},
    },
}
ORDERS = {"weak->strong": ["weak", "medium", "strong"], "strong->weak": ["strong", "medium", "weak"]}
THRESHOLD = 0.8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fakellm(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [
        sys.executable,
        str(data_dir.parent / "tools" / "fakellm.py"),
        "--port",
        str(port),
        "--data",
        str(data_dir / "trec_test.csv"),
        "--data",
        str(data_dir / "sst2_dev.csv"),
    ]
    cmd += [f"--accuracy={model}={acc}" for _, model, acc, _, _ in JUDGES]
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"fakellm exited with {proc.returncode}; see {log}")
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            return proc, url + "/v1"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("fakellm did not start listening")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cli(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    r = subprocess.run([sys.executable, "-m", "llmlabel", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"llmlabel {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")


class Runner:
    def __init__(self, work: Path, data_dir: Path, base_url: str) -> None:
        self.work, self.data_dir, self.base_url = work, data_dir, base_url

    def input(self, task: str) -> Path:
        """The dataset, cut to its row limit (the CLI's --limit would do too; a file keeps eval's join exact)."""
        t = TASKS[task]
        src = self.data_dir / t["file"]
        if t["limit"] is None:
            return src
        dst = self.work / f"{task}.csv"
        if not dst.exists():
            lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
            dst.write_text("".join(lines[: t["limit"] + 1]), encoding="utf-8")
        return dst

    def run(
        self,
        task: str,
        tag: str,
        cache: str,
        aggregate: str,
        order: list[str] | None = None,
        mode: str = "label",
        cascade: bool = False,
    ) -> dict[str, Any]:
        """One `llmlabel label` + `llmlabel eval`; returns the eval report and the run's ledger."""
        t = TASKS[task]
        by_name = {j[0]: j for j in JUDGES}
        judges = [
            {
                "name": n,
                "model": by_name[n][1],
                "base_url": self.base_url,
                "concurrency": 32,
                "price_per_million": {"input": by_name[n][3], "output": by_name[n][4]},
            }
            for n in (order or [j[0] for j in JUDGES])
        ]
        cfg: dict[str, Any] = {
            "task": {"name": t["name"], "instructions": t["instructions"], "labels": t["labels"]},
            "judges": judges,
            "mode": mode,
            "aggregate": aggregate,
            "cache_dir": str(self.work / f"cache-{cache}"),
        }
        if cascade:
            cfg["cascade"] = {"enabled": True, "threshold": THRESHOLD}
        cpath = self.work / f"{task}-{tag}.yaml"
        cpath.write_text(yaml.safe_dump(cfg, sort_keys=False))
        out = self.work / f"{task}-{tag}.jsonl"
        inp = self.input(task)
        cli("label", str(inp), "-c", str(cpath), "-o", str(out), "-q")
        cli("eval", str(out), "--gold", str(inp))
        rep = json.loads(out.with_name(out.name + ".eval.json").read_text())
        rep["ledger"] = json.loads(out.with_name(out.name + ".ledger.json").read_text())["runs"][-1]
        print(f"{task:5s} {tag:28s} accuracy {rep['accuracy']:.4f}", flush=True)
        return rep


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def f3(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ensemble.md"))
    ap.add_argument("--keep", help="keep configs, outputs, eval reports and caches in this folder")
    a = ap.parse_args(argv)
    data_dir = Path(a.data_dir).resolve()
    work = Path(a.keep).resolve() if a.keep else Path(tempfile.mkdtemp(prefix="ensemble-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc, base_url = start_fakellm(data_dir, work / "fakellm.log")
    try:
        r = Runner(work, data_dir, base_url)
        res: dict[str, dict[str, Any]] = {}
        for task in TASKS:
            res[task] = {agg: r.run(task, agg, "full", agg) for agg in ("majority", "weighted", "dawid_skene")}
            for oname, order in ORDERS.items():
                key = "cascade " + oname
                # A fresh cache per order: its ledger then shows the requests the cascade really makes.
                for agg in ("dawid_skene", "majority"):
                    res[task][f"{key} {agg}"] = r.run(
                        task, f"cascade-{order[0]}-{agg}", f"cascade-{order[0]}", agg, order=order, cascade=True
                    )
        res["trec"]["candidates"] = r.run("trec", "candidates", "candidates", "dawid_skene", mode="candidates")
        stats = json.loads(urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=5).read())
    finally:
        stop(proc)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    secs = time.perf_counter() - t0
    md, ok = report(res, a, secs, stats)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(md)
    print(f"wrote {a.out}; acceptance {'holds' if ok else 'FAILS'}")
    return 0 if ok else 1


def report(
    res: dict[str, dict[str, Any]], a: argparse.Namespace, secs: float, stats: dict[str, Any]
) -> tuple[str, bool]:
    cmd = "python benchmarks/ensemble_bench.py" + "".join(
        f" {shlex.quote(x)}" for x in (sys.argv[1:] if sys.argv[1:] else [])
    )
    L = [
        "# Ensemble benchmark",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `{cmd}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores (`nproc`), Python {platform.python_version()}; "
        f"whole benchmark {secs:.0f}s, {stats.get('requests', '?')} requests to the simulated server",
        "- judges: shared/tools/fakellm.py, seed 0; "
        + ", ".join(f"`{n}` = {m} (accuracy {acc}, ${pi}/${po} per M tokens)" for n, m, acc, pi, po in JUDGES)
        + ". A wrong answer is the model's fixed confusion for the gold label 70% of the time, else another "
        "random wrong label.",
        "- every number is from `llmlabel eval OUTPUT --gold DATA` (accuracy over all rows; unlabeled rows count wrong).",
        "",
    ]
    ok = True
    for task, title in (
        ("trec", "TREC test, first 500 questions (6 labels)"),
        ("sst2", "SST-2 dev, 872 sentences (2 labels)"),
    ):
        R = res[task]
        full = R["dawid_skene"]
        paid = R["majority"]["ledger"]  # the first run filled the cache; the other aggregates replayed it
        L += [f"## {title}", "", "| method | accuracy | macro-F1 | ECE |", "|---|---|---|---|"]
        for name, d in full["judges"].items():
            L.append(f"| single judge `{name}` | {f3(d['accuracy'])} | | |")
        for agg in ("majority", "weighted", "dawid_skene"):
            e = R[agg]
            L.append(
                f"| {agg.replace('_', '-')} | {f3(e['accuracy'])} | {f3(e['macro_f1'])} | "
                f"{f3(e['calibration']['ece'])} |"
            )
        ag = full["agreement"]
        est = ", ".join(f"`{n}` {d.get('estimated_accuracy', 'n/a')}" for n, d in full["judges"].items())
        L += [
            "",
            f"Inter-judge agreement: Fleiss' kappa {f3(ag['fleiss_kappa'])}, Krippendorff's alpha "
            f"{f3(ag['krippendorff_alpha'])}. Judge accuracies estimated by Dawid-Skene without gold: {est}. "
            f"All three judges on every row: {paid['requests']} requests, ${paid['cost']:.4f}.",
            "",
        ]

        L += [
            f"### Cascade (threshold {THRESHOLD}; without logprobs a row stops as soon as the judges asked so "
            "far agree, i.e. after two)",
            "",
            "| order | aggregate | requests | calls saved | rows settled by two judges | cost (vs all three) "
            "| accuracy | change vs all three judges |",
            "|---|---|---|---|---|---|---|---|",
        ]
        n_calls = full["rows_evaluated"] * len(JUDGES)
        for oname in ORDERS:
            for agg in ("dawid_skene", "majority"):
                e = R[f"cascade {oname} {agg}"]
                led = e["ledger"]
                saved = sum(j.get("calls_saved", 0) for j in led["judges"].values())
                # Only the first run of each order paid; the second aggregate replayed its cache.
                first = R[f"cascade {oname} dawid_skene"]["ledger"]
                rows = full["rows_evaluated"]
                L.append(
                    f"| {oname} | {agg.replace('_', '-')} | {first['requests']} | {saved} of {n_calls} "
                    f"({pct(saved / n_calls)}) | {pct(saved / rows)} | ${first['cost']:.4f} "
                    f"({100 * (first['cost'] / paid['cost'] - 1):+.0f}%) | {f3(e['accuracy'])} | "
                    f"{100 * (e['accuracy'] - R[agg]['accuracy']):+.1f} pts |"
                )
        L += [
            "",
            "With three judges, two that agree already decide the majority, so the cascade never changes a "
            "majority vote. Dawid-Skene loses a little: where the first two judges agree on the same wrong label, "
            "the third answer, weighed by the learned confusions, could still overturn them, but the cascade "
            "never asks for it.",
            "",
        ]
        if task == "trec":
            ds, mj = R["dawid_skene"]["accuracy"], R["majority"]["accuracy"]
            best_name, best = max(((n, d["accuracy"]) for n, d in full["judges"].items()), key=lambda x: x[1])
            checks = [
                (ds >= 0.92, f"Dawid-Skene accuracy {ds:.3f} >= 0.92"),
                (ds - mj >= 0.02 - 1e-9, f"{100 * (ds - mj):+.1f} points over majority vote {mj:.3f} (need >= +2)"),
                (ds > best, f"above the best single judge (`{best_name}` {best:.3f})"),
            ]
            ok = all(c for c, _ in checks)
            L += (
                [
                    "### Acceptance check",
                    "",
                    "Issue: three simulated judges of accuracy 0.85 / 0.70 / 0.60, each with its own systematic "
                    "confusions, on 500 TREC questions with `aggregate: dawid_skene`: Dawid-Skene accuracy >= 0.92, "
                    "at least 2 points above the plain majority vote of the same answers, and above the best single judge.",
                    "",
                ]
                + [f"- [{'x' if c else ' '}] {s}" for c, s in checks]
                + ["", f"**{'Holds' if ok else 'Does not hold'}.**", ""]
            )

    c = res["trec"]["candidates"]
    L += [
        "## Candidate mode on TREC (500 questions, `aggregate: dawid_skene`)",
        "",
        "Each judge returns a set of plausible labels; the row's set keeps labels in at least half of the judges' "
        "sets (always including the row's label).",
        "",
        "| sets | coverage (1-alpha) | mean set size | beta (share with >1 label) | candidate F1 |",
        "|---|---|---|---|---|",
    ]
    for name, d in c["judges"].items():
        m = d["candidates"]
        L.append(
            f"| judge `{name}` | {f3(m['coverage'])} | {f3(m['mean_set_size'])} | {f3(m['beta'])} | {f3(m['candidate_f1'])} |"
        )
    m = c["candidates"]
    L += [
        f"| aggregated | {f3(m['coverage'])} | {f3(m['mean_set_size'])} | {f3(m['beta'])} | {f3(m['candidate_f1'])} |",
        "",
        f"Single-label accuracy of the same run: {f3(c['accuracy'])}. (fakellm seeds each answer with the first "
        "200 characters of the system prompt, the same in both modes, so the judges' single labels here equal "
        "their label-mode answers; the sets are what candidate mode adds.)",
        "",
    ]
    return "\n".join(L), ok


if __name__ == "__main__":
    sys.exit(main())
