#!/usr/bin/env python3
"""Label sets with the embedded real model (no key: Qwen2.5-Coder-0.5B-Instruct behind llmlabel's llama.cpp
server), on small seeded samples: the real-model counterpart of multilabel_bench.py, shortlist_bench.py and
taxonomy_bench.py (which use simulated judges).

1. GoEmotions test, multi-label (28 emotions): micro-F1, macro-F1 (llmlabel.evaluation.multilabel), mean set size.
2. CLINC150 test (151 labels): every label listed vs `shortlist: 10` (9 nearest + `oos` pinned, the train split
   as demonstrations): accuracy, prompt tokens a row (the server's counts, from the run's ledger), and the
   shortlister's recall@k (shortlist_bench.recall).
3. CLINC150 as a taxonomy (10 domains + oos -> 150 intents), node names only and with the domains described,
   and Web of Science (7 domains -> 132 areas): accuracy per level, and level-2 precision with the default
   back-off (taxonomy_threshold 0.5) vs none (0). The threshold-0 run asks every row both levels; the 0.5 run
   reads the same cache (the threshold decides from the answers, it does not change the prompts).

Each part is one `llmlabel label` process (common.label: no key, so the embedded model). Outputs and caches
stay in --work, so a rerun only scores. `--parts` picks parts (to label them in parallel processes);
`--score` writes the results file from whatever is labeled.

    LLMLABEL_LOCAL_THREADS=1 nice python benchmarks/labelsets_real.py --work /tmp/labelsets-real --parts clinc_all
    LLMLABEL_LOCAL_THREADS=1 nice python benchmarks/labelsets_real.py --work /tmp/labelsets-real --parts tax,goemo
    LLMLABEL_LOCAL_THREADS=1 nice python benchmarks/labelsets_real.py --work /tmp/labelsets-real --score
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import DATA, ROOT, loadavg  # noqa: E402
from embedded_quality import CLINC_DOMAINS  # noqa: E402


# The tasks read their label lists from the data when a run asks for them: importing this module (or --help)
# needs no data (tests/unit/test_benchmarks_smoke.py).
def clinc_task() -> dict[str, Any]:
    return {
        "name": "clinc150",
        "instructions": "Which intent does this request to a virtual assistant express? oos: none of the intents.",
        "labels": (DATA / "clinc150_labels.txt").read_text().split(),
    }


def goemo_task() -> dict[str, Any]:
    return {
        "name": "goemotions",
        "instructions": "Which emotions does this Reddit comment express? neutral: no emotion.",
        "labels": (DATA / "goemotions_labels.txt").read_text().split(),
        "multi_label": True,
    }


CLINC_TAX = {
    "name": "clinc150_tax",
    "instructions": "Which request to a virtual assistant is this? oos: out of scope, none of the domains.",
    "taxonomy": str(DATA / "clinc150_taxonomy.json"),
}


def wos_tax() -> dict[str, Any]:
    return {
        "name": "wos1k_tax",
        "instructions": "Which research domain, then which area, is this abstract from?",
        "taxonomy": str(DATA / "wos1k_taxonomy.json"),
        "labels": json.loads((DATA / "wos1k_l1_descriptions.json").read_text()),
    }


# the same tree with the domains described (embedded_quality.py's descriptions): names like `meta` or `utility`
# say little to a 0.5B model
CLINC_TAX_DESC = {**CLINC_TAX, "labels": {**CLINC_DOMAINS, "oos": "out of scope: none of the other domains"}}
ROWS = {"goemo": 40, "clinc_all": 30, "clinc_sl": 30, "tax": 30, "taxd": 30, "wos": 15}
PARTS = ("clinc_all", "tax", "clinc_sl", "goemo", "taxd", "wos")


def sample(fname: str, n: int, seed: int = 0) -> list[dict[str, str]]:
    return random.Random(seed).sample(common.read_csv(DATA / fname), n)


def setups(rows: dict[str, int]) -> dict[str, list[tuple[str, dict, list[dict[str, str]]]]]:
    """part -> [(run name, task, rows)]; the CLINC parts share one sample of ids (the hier file has the same)."""
    clinc = sample("clinc150_test.csv", max(rows[k] for k in ("clinc_all", "clinc_sl", "tax", "taxd")))
    by_id = {r["id"]: r for r in common.read_csv(DATA / "clinc150_hier_test.csv")}
    sl = {"shortlist": 10, "shortlist_pinned": ["oos"], "examples_file": str(DATA / "clinc150_train.csv")}
    tax_rows = [by_id[r["id"]] for r in clinc[: rows["tax"]]]
    taxd_rows = [by_id[r["id"]] for r in clinc[: rows["taxd"]]]
    wos_rows = sample("wos1k_test.csv", rows["wos"])
    clinc_t, goemo_t, wos_t = clinc_task(), goemo_task(), wos_tax()
    return {
        "goemo": [("goemo", goemo_t, sample("goemotions_test.csv", rows["goemo"]))],
        "clinc_all": [("clinc_all", clinc_t, clinc[: rows["clinc_all"]])],
        "clinc_sl": [("clinc_sl", {**clinc_t, **sl}, clinc[: rows["clinc_sl"]])],
        # threshold 0 first: it asks every row both levels; the 0.5 run then reads only the cache
        "tax": [
            ("tax_t0", {**CLINC_TAX, "taxonomy_threshold": 0.0}, tax_rows),
            ("tax_t05", {**CLINC_TAX, "taxonomy_threshold": 0.5}, tax_rows),
        ],
        "taxd": [
            ("taxd_t0", {**CLINC_TAX_DESC, "taxonomy_threshold": 0.0}, taxd_rows),
            ("taxd_t05", {**CLINC_TAX_DESC, "taxonomy_threshold": 0.5}, taxd_rows),
        ],
        "wos": [
            ("wos_t0", {**wos_t, "taxonomy_threshold": 0.0}, wos_rows),
            ("wos_t05", {**wos_t, "taxonomy_threshold": 0.5}, wos_rows),
        ],
    }


def run_part(work: Path, part: str, runs: list[tuple[str, dict, list[dict[str, str]]]]) -> None:
    for name, task, rows in runs:
        out = work / f"{name}.out.jsonl"
        if out.exists():
            continue
        inp = work / f"{name}.in.csv"
        with open(inp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "text"])
            w.writerows([[r["id"], r["text"]] for r in rows])
        cfg = work / f"{name}.cfg.yaml"
        cfg.write_text(yaml.safe_dump({"task": task, "cache_dir": str(work / f"cache_{part}")}, sort_keys=False))
        load0, t = loadavg(), time.time()
        tmp = work / f"{name}.partial.jsonl"
        common.label(inp, cfg, tmp, cwd=ROOT)  # no key: the embedded model
        secs = time.time() - t
        tmp.rename(out)
        (work / f"{name}.timing.json").write_text(
            json.dumps({"rows": len(rows), "seconds": secs, "load_start": load0, "load_end": loadavg()})
        )
        print(f"[{name}] {len(rows)} rows in {secs:.0f} s, load {load0:.2f} -> {loadavg():.2f}", flush=True)


# -- scoring --------------------------------------------------------------------------------------------
def ledger(work: Path, name: str) -> tuple[int, int]:
    """(responses, prompt tokens) of the run that wrote an output, from its ledger: the server's own token
    counts (Qwen's tokenizer), i.e. what the embedded model processed, content-free calibration probes included."""
    from llmlabel.io.ledger_file import read_ledger
    from llmlabel.io.paths import ledger_path

    runs = [r for r in (read_ledger(ledger_path(work / f"{name}.partial.jsonl")) or {}).get("runs", [])]
    last = [r for r in runs if r.get("state") == "finished"][-1:] or runs[-1:]
    judges = last[0]["judges"].values() if last else []
    return sum(j.get("responses", 0) for j in judges), sum(j.get("input_tokens", 0) for j in judges)


def timing(work: Path, name: str) -> dict:
    return json.loads((work / f"{name}.timing.json").read_text())


def acc_cell(k: int, n: int) -> str:
    from llmlabel.review.stats import proportion

    iv = proportion(k, n)
    return f"{k / n:.3f} ({iv.low:.2f}-{iv.high:.2f})" if n else "-"


def outputs(work: Path, name: str) -> dict[str, Any] | None:
    """An output's rows by id, read by the one output reader (io.records.read_results) as `llmlabel eval` reads them."""
    from llmlabel.io.records import read_results

    out = work / f"{name}.out.jsonl"
    return {r.id: r for r in read_results(out)} if out.exists() else None


def speed(work: Path, name: str) -> str:
    t = timing(work, name)
    return f"{t['seconds'] / t['rows']:.1f} s/row (load {t['load_start']:.1f} -> {t['load_end']:.1f})"


def score_goemo(work: Path, rows: list[dict[str, str]]) -> list[str]:
    from llmlabel.evaluation.multilabel import evaluate_sets

    out = outputs(work, "goemo")
    if out is None:
        return ["## GoEmotions test, multi-label (28 emotions)", "", "Not labeled in this run.", ""]
    rep = evaluate_sets(list(out.values()), {r["id"]: r["labels"] for r in rows}, goemo_task()["labels"])
    seen = [v["f1"] for v in rep["per_label"].values() if v["support"] and v["f1"] is not None]
    answered, toks = ledger(work, "goemo")
    return [
        "## GoEmotions test, multi-label (28 emotions)",
        "",
        f"`task.multi_label: true`, the 28 label names (GoEmotions has no descriptions); {speed(work, 'goemo')}; "
        f"{toks / max(answered, 1):.0f} prompt tokens a request.",
        "",
        common.table(
            [
                "n",
                "micro-F1",
                "macro-F1 (28 labels)",
                f"macro-F1 ({len(seen)} labels with gold rows)",
                "subset accuracy",
                "labels a row: output / gold",
            ],
            [
                [
                    rep["rows_evaluated"],
                    f"{rep['micro_f1']:.3f}",
                    f"{rep['macro_f1']:.3f}",
                    f"{sum(seen) / len(seen):.3f}" if seen else "-",
                    f"{rep['subset_accuracy']:.3f}",
                    f"{rep['labels_per_row_output']:.2f} / {rep['labels_per_row_gold']:.2f}",
                ]
            ],
        ),
        "",
        "macro-F1 over 28 labels counts a label with no gold row and no prediction in the sample as 0 "
        "(llmlabel.evaluation.multilabel, as `llmlabel eval` reports it); the next column averages only the "
        "labels the sample has.",
        "",
    ]


def score_clinc(work: Path, rows: list[dict[str, str]]) -> list[str]:
    import shortlist_bench

    gold = {r["id"]: r["label"] for r in rows}
    table_rows = []
    for name, what in (("clinc_all", "all 151 labels listed"), ("clinc_sl", "shortlist 10 (9 nearest + `oos`)")):
        out = outputs(work, name)
        if out is None:
            table_rows.append([what, "not labeled", "", "", "", ""])
            continue
        right = sum(out[i].label == g for i, g in gold.items() if i in out)
        n = sum(i in out for i in gold)
        n_in = sum(i in out and g != "oos" for i, g in gold.items())
        right_in = sum(out[i].label == g for i, g in gold.items() if i in out and g != "oos")
        answered, toks = ledger(work, name)
        table_rows.append(
            [
                what,
                n,
                acc_cell(right, n),
                acc_cell(right_in, n_in),
                f"{toks / n:,.0f} ({answered / n:.2f} requests; {toks / max(answered, 1):,.0f} a request)",
                speed(work, name),
            ]
        )
    pool = [(r["text"], r["label"]) for r in common.read_csv(DATA / "clinc150_train.csv")]
    base = clinc_task()
    rec = shortlist_bench.recall(base, rows, pool, pinned=True)
    n_in = sum(r["label"] != "oos" for r in rows)
    ks = shortlist_bench.KS
    return [
        "## CLINC150 test, 151 labels: every label listed vs a shortlist",
        "",
        "Shortlist: `shortlist: 10`, `shortlist_pinned: [oos]`, `examples_file: clinc150_train.csv` "
        "(docs/many-labels.md). Prompt tokens: the server's own counts (Qwen tokenizer) from the run's ledger, "
        "summed over a row's requests (a \"none of these\" answer asks the next list; the run's few content-free "
        "calibration probes are included).",
        "",
        common.table(
            ["labels shown", "n", "accuracy (95% interval)", "in-scope accuracy", "prompt tokens a row", "speed"],
            table_rows,
        ),
        "",
        f"Recall@k of the shortlister itself (no model) on the same {len(rows)} rows, `oos` pinned:",
        "",
        common.table(
            ["n", *[f"recall@{k}" for k in ks], *[f"recall@{k}, {n_in} in-scope rows" for k in ks]],
            [[len(rows), *rec]],
        ),
        "",
    ]


def score_tax(work: Path, rows: list[dict[str, str]], part: str, title: str, what: str) -> list[str]:
    head = [f"## {title}", ""]
    runs = {name: outputs(work, name) for name in (f"{part}_t0", f"{part}_t05")}
    if runs[f"{part}_t0"] is None:
        return [*head, "Not labeled in this run.", ""]
    gold = {r["id"]: (r["label_l1"], r["label_l2"]) for r in rows}
    table_rows = []
    for name, th in ((f"{part}_t0", 0.0), (f"{part}_t05", 0.5)):
        out = runs[name]
        if out is None:
            continue
        ids = [i for i in gold if i in out]
        paths = {i: list(out[i].path or ()) for i in ids}
        l1 = sum(bool(paths[i]) and paths[i][0] == gold[i][0] for i in ids)
        deep = [i for i in ids if len(paths[i]) >= 2]
        l2 = sum(paths[i][1] == gold[i][1] for i in deep)
        answered, toks = ledger(work, name)
        table_rows.append(
            [
                th,
                len(ids),
                acc_cell(l1, len(ids)),
                f"{len(deep)} ({len(deep) / len(ids):.0%})",
                acc_cell(l2, len(deep)),
                acc_cell(l2, len(ids)),
                f"{answered} requests, {toks / len(ids):,.0f} prompt tokens a row" if answered else "0 (the cache)",
                speed(work, name),
            ]
        )
    return [
        *head,
        f"Top-down ({what}). Threshold 0 takes every "
        "level; 0.5 (the default) stops a row at its top-level node when the model's level-2 confidence is "
        "below 0.5. "
        "The 0.5 run is a rerun over the threshold-0 run's cache (the threshold decides from the answers; "
        "it is not part of the prompts or the cache keys, so the rerun asks nothing).",
        "",
        common.table(
            [
                "taxonomy_threshold",
                "n",
                "level-1 (domain) accuracy",
                "rows given a level-2 node",
                "level-2 precision (of those rows)",
                "level-2 accuracy (of all rows)",
                "requests",
                "speed",
            ],
            table_rows,
        ),
        "",
    ]


def score(work: Path, plan: dict, out: Path | None) -> None:
    started = common.now()
    parts = [
        *score_goemo(work, plan["goemo"][0][2]),
        *score_clinc(work, plan["clinc_all"][0][2]),
        *score_tax(
            work,
            plan["tax"][0][2],
            "tax",
            "CLINC150 as a taxonomy (10 domains + oos -> 150 intents)",
            "`task.taxonomy: clinc150_taxonomy.json`, the node names only; `oos` has one child, `oos`, taken "
            "without a question",
        ),
        *score_tax(
            work,
            plan["taxd"][0][2],
            "taxd",
            "CLINC150 as a taxonomy, the domains described",
            "the same tree, with `task.labels` describing the 10 domains and `oos` (embedded_quality.py's "
            "descriptions); the intents by name",
        ),
        *score_tax(
            work,
            plan["wos"][0][2],
            "wos",
            "Web of Science (WOS-1k) as a taxonomy (7 domains -> 132 areas)",
            "`task.taxonomy: wos1k_taxonomy.json`, the domains described by `wos1k_l1_descriptions.json`, the "
            "areas by name; abstracts ~1,400 characters",
        ),
    ]
    names = ("goemo", "clinc_all", "clinc_sl", "tax_t0", "taxd_t0", "wos_t0")
    loads = {n: timing(work, n) for n in names if (work / f"{n}.timing.json").exists()}
    notes = [
        "labels: the no-key default, Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) behind llmlabel's llama.cpp server, "
        "one judge, `LLMLABEL_LOCAL_THREADS=1`, under `nice`",
        "labeled by `--parts` processes, two or three at once (clinc_all; tax,clinc_sl,goemo; taxd; then wos), "
        "each with its own server, beside other engineers' jobs (the CI suite among them); then scored with "
        "`--score` from the outputs. s/row: a part's wall time over its rows, server start included",
        "load average (1 min) while labeling: "
        + ", ".join(f"{n} {t['load_start']:.1f} -> {t['load_end']:.1f}" for n, t in loads.items()),
        "rows: seeded samples (seed 0) of the test splits; n in each table",
    ]
    text = common.header("Label sets with the embedded real model", f"{loadavg():.2f}", started, notes)
    common.write_result("labelsets_real.md", text + "\n" + "\n".join(parts), out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/labelsets-real"))
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--rows", default="", help="per part, e.g. goemo=40,clinc_all=30")
    ap.add_argument("--score", action="store_true", help="only score what is labeled, write the results file")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    rows = dict(ROWS)
    for part in filter(None, a.rows.split(",")):
        k, v = part.split("=")
        rows[k] = int(v)
    plan = setups(rows)
    if not a.score:
        for part in a.parts.split(","):
            run_part(a.work, part, plan[part])
        return
    score(a.work, plan, a.out)


if __name__ == "__main__":
    main()
