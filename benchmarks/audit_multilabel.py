#!/usr/bin/env python3
"""Multi-label audit benchmark: find labels dropped, added and swapped in GoEmotions with `llmlabel audit`.

A seeded sample of GoEmotions test (28 emotions, 1.18 labels a row) gets errors injected at known rates, on
disjoint seeded rows: 10% of the rows lose one of their labels (a missing label; a one-label row is left with
an empty set), 10% get a label that was not there (an extra label), 10% have one label replaced by another
(one missing and one extra). fakellm serves simulated multi-label judges that know the ORIGINAL sets (its noise:
each gold label of a several-label row kept with the judge's accuracy, now and then a wrong one added; a
one-label row answered with the label, sometimes with that model's fixed confusion beside it). One `llmlabel
audit` run per judge setup (a subprocess) writes every signal; this script scores the flags against the
recorded injections, per row (a row is wrong when its given set differs from the original) and per (row, label)
pair: the judges alone, cleanlab's multi-label method alone (find_label_issues per row,
find_multilabel_issues_per_class per pair), the combined flags, and both signals agreeing / either of them.

    python benchmarks/audit_multilabel.py [--rows 800] [--keep DIR]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from common import DATA, header, loadavg, now, read_csv, simulated_audit, table, tempdir, write_csv, write_result  # noqa: E402

from llmlabel.auditing.signals import auroc  # noqa: E402

SAMPLE_SEED, ERROR_SEED, RATE = 0, 2026, 0.10
SETUPS = {
    "three judges 0.85 / 0.75 / 0.6": [0.85, 0.75, 0.6],
    "one judge 0.75": [0.75],
    "three weak judges 0.6 / 0.55 / 0.5": [0.6, 0.55, 0.5],
}


def make_dataset(d: Path, n: int, labels: list[str]) -> tuple[Path, Path, dict[str, set[str]], dict[str, str]]:
    """The noisy input and the gold file; each row's original set and the kind of error injected ("" none)."""
    rows = random.Random(SAMPLE_SEED).sample(read_csv(DATA / "goemotions_test.csv"), n)
    rng = random.Random(ERROR_SEED)
    picked = rng.sample(range(n), 3 * round(RATE * n))
    kind = {i: k for k, part in zip(("dropped", "added", "swapped"), np.array_split(picked, 3)) for i in part}
    truth: dict[str, set[str]] = {}
    kinds: dict[str, str] = {}
    noisy = []
    for i, r in enumerate(rows):
        orig = [x for x in r["labels"].split("|") if x]
        given = list(orig)
        k = kind.get(i, "")
        if k == "dropped":
            given.pop(rng.randrange(len(given)))
        elif k == "added":
            given.append(rng.choice([x for x in labels if x not in given]))
        elif k == "swapped":
            given[rng.randrange(len(given))] = rng.choice([x for x in labels if x not in given])
        truth[r["id"]], kinds[r["id"]] = set(orig), k
        noisy.append([r["id"], r["text"], "|".join(given)])
    inp = write_csv(d / "goemotions_noisy.csv", ["id", "text", "labels"], noisy)
    gold = write_csv(d / "gold.csv", ["id", "label"], ([r["id"], r["labels"]] for r in rows))
    return inp, gold, truth, kinds


def _pr(flagged: set[Any], wrong: set[Any]) -> dict[str, Any]:
    hits = len(flagged & wrong)
    return {
        "flagged": len(flagged),
        "precision": hits / len(flagged) if flagged else float("nan"),
        "recall": hits / len(wrong) if wrong else float("nan"),
    }


def scenario(d: Path, n: int, accs: list[float], labels: list[str]) -> dict[str, Any]:
    inp, gold, truth, kinds = make_dataset(d, n, labels)
    task = {
        "name": "goemotions",
        "instructions": "Which emotions does this Reddit comment express?",
        "labels": labels,
        "multi_label": True,
    }
    args = ["--label-column", "labels", "--gold", str(gold), "--html", str(d / "audit.html")]
    audit = simulated_audit(
        d, inp, DATA / "goemotions_test.csv", accs, "sim-ml", [*args, "--export-labelstudio", str(d / "ls.json")], task
    )
    recs, summary = audit.records, audit.summary
    wrong_rows = {r["id"] for r in recs if set(r["given_labels"]) != truth[r["id"]]}
    wrong_pairs = {(r["id"], lab) for r in recs for lab in set(r["given_labels"]) ^ truth[r["id"]]}
    y = np.array([r["id"] in wrong_rows for r in recs])
    rows_of = {
        "judges": {r["id"] for r in recs if r["judge_flagged"]},
        "cleanlab": {r["id"] for r in recs if r["cleanlab_issue"]},
        "combined": {r["id"] for r in recs if r["flagged"]},
    }
    pairs_of = {
        "judges": {(r["id"], lab) for r in recs for lab in r["judge_suspects"]},
        "cleanlab": {(r["id"], lab) for r in recs for lab in r["cleanlab_suspects"] or []},
        "combined": {(r["id"], lab) for r in recs for lab in [*r["missing"], *r["extra"]]},
    }
    rows_of["both agree"] = rows_of["judges"] & rows_of["cleanlab"]
    rows_of["either"] = rows_of["judges"] | rows_of["cleanlab"]
    pairs_of["both agree"] = pairs_of["judges"] & pairs_of["cleanlab"]
    pairs_of["either"] = pairs_of["judges"] | pairs_of["cleanlab"]
    scores = {"judges": "judge_score", "cleanlab": "cleanlab_score", "combined": "score"}
    signals = {}
    for name in rows_of:
        a = auroc(-np.array([r[scores[name]] for r in recs], dtype=float), y) if name in scores else float("nan")
        signals[name] = {"auroc": a, "rows": _pr(rows_of[name], wrong_rows), "pairs": _pr(pairs_of[name], wrong_pairs)}
    by_kind = {}
    for k in ("dropped", "added", "swapped"):
        ids = {i for i, v in kinds.items() if v == k}
        by_kind[k] = len(ids & rows_of["combined"]) / max(len(ids), 1)
    combined = pairs_of["combined"]
    missing_ok = sum(1 for r in recs for lab in r["missing"] if lab in truth[r["id"]])
    extra_ok = sum(1 for r in recs for lab in r["extra"] if lab not in truth[r["id"]])
    return {
        "run": audit.run,
        "requests": audit.requests,
        "summary": summary,
        "n": len(recs),
        "wrong_rows": len(wrong_rows),
        "wrong_pairs": len(wrong_pairs),
        "signals": signals,
        "by_kind": by_kind,
        "kind_right": (missing_ok + extra_ok, len(combined)),
        "fixed": sum(
            1 for r in recs if r["flagged"] and r["id"] in wrong_rows and set(r["suggested_labels"]) == truth[r["id"]]
        ),
    }


def _f(x: float) -> str:
    return "–" if x != x else f"{x:.3f}"


def section(title: str, res: dict[str, Any]) -> str:
    s, run = res["summary"], res["run"]
    rows = [
        [
            name,
            _f(v["auroc"]),
            v["rows"]["flagged"],
            _f(v["rows"]["precision"]),
            _f(v["rows"]["recall"]),
            v["pairs"]["flagged"],
            _f(v["pairs"]["precision"]),
            _f(v["pairs"]["recall"]),
        ]
        for name, v in res["signals"].items()
    ]
    judges = ", ".join(f"{k} {v['recall']:.3f} / {v['false_add_rate']:.4f}" for k, v in s["judges"].items())
    right, total = res["kind_right"]
    return "\n".join(
        [
            f"## {title}",
            "",
            f"- {res['n']} rows, {res['wrong_rows']} with a changed set, {res['wrong_pairs']} wrong (row, label) pairs; "
            f"{res['requests']} requests to fakellm; one `llmlabel audit` process: {run.wall:.1f} s wall, "
            f"{run.cpu:.1f} s CPU, peak RSS {run.maxrss_mb:.0f} MiB",
            "",
            table(
                [
                    "signal",
                    "AUROC (row score vs changed set)",
                    "rows flagged",
                    "row precision",
                    "row recall",
                    "pairs flagged",
                    "pair precision",
                    "pair recall",
                ],
                rows,
            ),
            "",
            "- combined flags' row recall by error kind: "
            + ", ".join(f"{k} {v:.3f}" for k, v in res["by_kind"].items()),
            f"- flagged pairs of the right kind (a flagged missing label is in the original set, a flagged extra one "
            f"is not): {right} of {total}; flagged changed rows whose suggested set is the original: {res['fixed']}",
            f"- the audit's own estimates (no gold used): pair precision {s['est_precision']}, pair recall "
            f"{s['est_recall']}, wrong pairs {s['est_label_errors']}, rows with an error {s['est_rows_with_errors']}; "
            f"recall / false-add rate (Dawid–Skene): {judges}; given sets {s['given_labels']['recall']} / "
            f"{s['given_labels']['false_add_rate']}",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=800)
    ap.add_argument("--keep", help="keep the work files in this folder")
    ap.add_argument("--setups", nargs="*", choices=list(SETUPS), default=list(SETUPS))
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    started, load = now(), loadavg()
    t0 = time.perf_counter()
    labels = (DATA / "goemotions_labels.txt").read_text().split()
    results = {}
    with tempdir("audit-ml-", a.keep) as d:
        for k, name in enumerate(a.setups):
            (d / f"s{k}").mkdir(exist_ok=True)
            results[name] = scenario(d / f"s{k}", a.rows, SETUPS[name], labels)
    notes = [
        f"whole benchmark {time.perf_counter() - t0:.0f} s",
        f"data: {a.rows} rows of ../shared/data/goemotions_test.csv (random.Random({SAMPLE_SEED}).sample), 28 labels; "
        f"errors on disjoint rows chosen with random.Random({ERROR_SEED}): {RATE:.0%} of rows a label dropped, "
        f"{RATE:.0%} a label added, {RATE:.0%} a label swapped for another (so {3 * RATE:.0%} of rows changed)",
        "simulated judges: shared/tools/fakellm.py given the ORIGINAL goemotions_test.csv (they know the original "
        "sets); `llmlabel audit` with default options (--min-precision 0.8, tfidf features), plus --gold (the "
        "original sets, used only for the summary's gold section), --html and --export-labelstudio",
        "row: a row flagged / with a changed set; pair: a (row, label) flagged (a missing or extra label) / changed. "
        "judges: the precision-targeted flags on the judges' per-label Dawid-Skene alone; cleanlab: "
        "find_label_issues (rows) and find_multilabel_issues_per_class (pairs) over out-of-fold one-vs-rest "
        "TF-IDF probabilities; combined: the audit's `flagged`/`missing`/`extra`; both agree / either: the "
        "intersection / union of the judges' and cleanlab's flags",
    ]
    text = header(
        "Multi-label audit benchmark (labels dropped, added and swapped in GoEmotions)", f"{load:.2f}", started, notes
    )
    for name, res in results.items():
        text += "\n" + section(f"Judges: {name}", res) + "\n"
    write_result("audit_multilabel.md", text, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
