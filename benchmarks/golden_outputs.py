#!/usr/bin/env python3
"""Outputs byte for byte: the same `llmlabel label` jobs run with two checkouts of llmlabel (before and after a
change to how results are built or written), every output (JSONL, CSV, Parquet) and its ledger's `quality`
compared. 18 jobs against fakellm: TREC (200 rows + a blank one) with 3 judges under majority / weighted /
Dawid-Skene, with gold rows and a logprob judge, candidate sets, a cascade, one judge; GoEmotions multi-label
(150 rows) with and without gold; CLINC150 as a taxonomy (150 rows).

    python benchmarks/golden_outputs.py BASE_CHECKOUT WORK_DIR     # BASE_CHECKOUT: `git archive <commit> | tar -x`
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
D = ROOT.parent / "shared" / "data"
FAKELLM = ROOT.parent / "shared" / "tools" / "fakellm.py"
_ap = argparse.ArgumentParser(description="the same label jobs with two checkouts, outputs compared byte for byte")
_ap.add_argument("base", type=Path, help="the other checkout (`git archive <commit> | tar -x`)")
_ap.add_argument("work", type=Path, help="work dir")
_args = _ap.parse_args()
W = _args.work
CODE = {"base": str(_args.base.resolve()), "new": str(ROOT)}
W.mkdir(parents=True, exist_ok=True)


def server(data, port, extra=()):
    p = subprocess.Popen(
        [
            PY,
            str(FAKELLM),
            "--data",
            str(data),
            "--port",
            str(port),
            "--accuracy",
            "default=0.8",
            "--accuracy",
            "weak=0.55",
            "--accuracy",
            "lp=0.75",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return p


def rows(src, n, out, blank=True):
    with open(src) as fh:
        r = list(csv.DictReader(fh))[:n]
    if blank:
        r.insert(3, {**r[3], "id": "blank-1", "text": "   "})
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(r[0]))
        w.writeheader()
        w.writerows(r)
    return r


servers = [
    server(D / "trec_test.csv", 8931),
    server(D / "goemotions_test.csv", 8932),
    server(D / "clinc150_hier_test.csv", 8933),
]
time.sleep(3)
trec = rows(D / "trec_test.csv", 200, W / "trec.csv")
goem = rows(D / "goemotions_test.csv", 150, W / "goem.csv")
hier = rows(D / "clinc150_hier_test.csv", 150, W / "hier.csv")
with open(W / "trec_gold.csv", "w") as fh:
    fh.write("id,label\n" + "".join(f"{r['id']},{r['label']}\n" for r in trec[:60] if r["id"] != "blank-1"))
with open(W / "goem_gold.csv", "w") as fh:
    fh.write("id,label\n" + "".join(f"{r['id']},{r['labels']}\n" for r in goem[:60] if r["id"] != "blank-1"))
TREC_LABELS = sorted({r["label"] for r in csv.DictReader(open(D / "trec_test.csv"))})
GOEM_LABELS = [x.strip() for x in open(D / "goemotions_labels.txt") if x.strip()]


def judges(port, names=("a", "b", "weak"), lp=False):
    out = [
        {
            "name": n,
            "model": n if n != "a" and n != "b" else f"model-{n}",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "concurrency": 8,
            "timeout": 10,
        }
        for n in names
    ]
    if lp:
        out.append(
            {"name": "lp", "model": "lp", "base_url": f"http://127.0.0.1:{port}/v1", "logprobs": True, "concurrency": 8}
        )
    return out


CASES = {}
for agg in ("majority", "weighted", "dawid_skene"):
    CASES[f"trec_{agg}"] = (
        "trec.csv",
        {"task": {"name": "trec", "labels": TREC_LABELS}, "judges": judges(8931), "aggregate": agg},
    )
    CASES[f"trec_{agg}_gold"] = (
        "trec.csv",
        {
            "task": {"name": "trec", "labels": TREC_LABELS},
            "judges": judges(8931, lp=True),
            "aggregate": agg,
            "gold": "trec_gold.csv",
        },
    )
    CASES[f"trec_cand_{agg}"] = (
        "trec.csv",
        {
            "task": {"name": "trec", "labels": TREC_LABELS},
            "judges": judges(8931),
            "aggregate": agg,
            "mode": "candidates",
        },
    )
    CASES[f"goem_{agg}"] = (
        "goem.csv",
        {"task": {"name": "emo", "labels": GOEM_LABELS, "multi_label": True}, "judges": judges(8932), "aggregate": agg},
    )
    CASES[f"goem_{agg}_gold"] = (
        "goem.csv",
        {
            "task": {"name": "emo", "labels": GOEM_LABELS, "multi_label": True},
            "judges": judges(8932),
            "aggregate": agg,
            "gold": "goem_gold.csv",
        },
    )
CASES["trec_one_judge"] = (
    "trec.csv",
    {"task": {"name": "trec", "labels": TREC_LABELS}, "judges": judges(8931, ("weak",))},
)
CASES["trec_cascade"] = (
    "trec.csv",
    {
        "task": {"name": "trec", "labels": TREC_LABELS},
        "judges": judges(8931),
        "cascade": {"enabled": True, "probe_rows": 20},
        "aggregate": "weighted",
    },
)
CASES["hier"] = (
    "hier.csv",
    {
        "task": {"name": "clinc", "taxonomy": str(D / "clinc150_taxonomy.json"), "taxonomy_threshold": 0.6},
        "judges": judges(8933),
    },
)

env = {**os.environ}
bad = []
try:
    for name, (inp, cfg) in CASES.items():
        outs = {}
        for which, code in CODE.items():
            d = W / which / name
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            shutil.copy(W / inp, d / inp)
            for g in ("trec_gold.csv", "goem_gold.csv"):
                shutil.copy(W / g, d / g)
            (d / "c.yaml").write_text(json.dumps({**cfg, "cache_dir": str(d / "cache")}))
            res = {}
            for ext in ("jsonl", "csv", "parquet"):
                p = subprocess.run(
                    [PY, "-m", "llmlabel.cli.main", "label", inp, "-c", "c.yaml", "-o", f"out.{ext}"],
                    cwd=d,
                    env={**env, "PYTHONPATH": code, "OPENAI_API_KEY": "x"},
                    capture_output=True,
                    text=True,
                )
                if p.returncode:
                    print(name, which, ext, "rc", p.returncode, p.stderr[-500:])
                q = (
                    json.loads((d / f"out.{ext}.ledger.json").read_text())["runs"][-1].get("quality")
                    if (d / f"out.{ext}.ledger.json").exists()
                    else None
                )
                res[ext] = (
                    (d / f"out.{ext}").read_bytes() if (d / f"out.{ext}").exists() else None,
                    q,
                    p.stderr.count("warning"),
                )
            outs[which] = res
        # A cascade's cold run depends on timing (rows that start while the probe runs ask every judge: the
        # same checkout asked `weak` 130, 130 and 128 times in three runs): its warm runs are compared.
        exts = ("csv", "parquet") if "cascade" in cfg else tuple(outs["base"])
        same = all(outs["base"][e] == outs["new"][e] for e in exts)
        n = len(outs["base"]["jsonl"][0] or b"")
        print(
            f"{name}: {'SAME' if same else 'DIFF'} ({n} bytes jsonl, quality keys {list((outs['base']['jsonl'][1] or {}).keys())})",
            flush=True,
        )
        if not same:
            bad.append(name)
finally:
    for s in servers:
        s.terminate()
print("DIFFERENT:", bad)
