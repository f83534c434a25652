"""The embedded models (the 1.5B, the default since issue 29, and the 0.5B), permutation debiasing and a
0.5B -> 1.5B cascade, scored from the answers benchmarks/embedded_quality.py saved (it asks nothing).

    python benchmarks/embedded_models.py --small /tmp/embedded/cache05 --large /tmp/llmlabel-embedded-cache \\
        [--tasks clinc_domain,wos,trec,sst2,sms,clinc_intent] [--thresholds 0.6,0.8]

--small / --large: the --cache-dir folders holding answers_<task>.json (the 0.5B) and answers_<task>_1.5b.json
(the 1.5B). Only rows both models answered are scored, so every lever of a task is on the same rows.

Levers, per model: `decoded` (its JSON answer), `cc` (content-free calibration: the shipped default),
`perm` / `perm+cc` (permutation debiasing: the mean of the label distributions read with the labels in the
config's order and reversed, raw or each calibrated on its own order's content-free answers). `both`: the two
models' calibrated distributions averaged (llmlabel's soft vote of two judges). `cascade@t`: what llmlabel's
cascade does past its probe rows: the 0.5B's calibrated answer where its confidence is >= t, else the soft
vote of both (the share of rows sent on is given). s/row: the seconds a row's requests took when first asked (perm: both orders; cascade: the 0.5B on
every row plus the 1.5B on the rows sent on), under the load the answers files were measured at.
Writes benchmarks/results/embedded_models.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from embedded_quality import TASKS, library_default, normalize, score  # noqa: E402

from llmlabel.ensemble.calibration import average_content_free, contextual_calibrate  # noqa: E402
from llmlabel.ensemble.calibration import batch_calibrate_rows as batch_calibrate  # noqa: E402
from llmlabel.ensemble.combine import combine_row  # noqa: E402
from llmlabel.llm.answers import JudgeAnswer  # noqa: E402

KINDS = {
    "sst2": "sentiment",
    "sms": "spam",
    "clinc_domain": "topic",
    "news": "topic",
    "wos": "topic",
    "trec": "question type",
    "clinc_intent": "intent",
}


def dists(variant: dict[str, Any], labels: list[str], calibrated: bool) -> dict[str, dict[str, float]]:
    """Row id -> the variant's label distribution, raw or divided by its own content-free distribution."""
    cf = [c["probs"] for c in variant["cf"] if c["probs"]]
    p_cf = average_content_free(cf, labels) if calibrated and cf else None
    out = {}
    for r in variant["rows"]:
        p = normalize(r["probs"] or {}, labels)
        out[r["id"]] = normalize(contextual_calibrate(p, p_cf), labels) if p_cf else p
    return out


def model_levers(got: dict[str, Any], ids: list[str], labels: list[str]) -> dict[str, tuple[list, list, list]]:
    """Lever -> (predicted labels, confidences, seconds per row) on `ids`, for one model's answers."""
    d = got["default"]
    by_id = {r["id"]: r for r in d["rows"]}
    raw, cc = dists(d, labels, False), dists(d, labels, True)
    secs = [by_id[i]["secs"] for i in ids]
    dec = [by_id[i]["label"] or "" for i in ids]
    res = {
        "decoded": (dec, [raw[i].get(lab, 0.0) for i, lab in zip(ids, dec)], secs),
        "cc": ([max(cc[i], key=cc[i].__getitem__) for i in ids], [max(cc[i].values()) for i in ids], secs),
    }
    bc = dict(zip(ids, batch_calibrate([cc[i] for i in ids], labels)))  # cc, then Batch Calibration
    res["cc+bc"] = ([max(bc[i], key=bc[i].__getitem__) for i in ids], [max(bc[i].values()) for i in ids], secs)
    # What `llmlabel label` does with the embedded judge on a job of these rows (embedded_quality.library_default).
    cf = [c["probs"] for c in d["cf"] if c["probs"]]
    name, lib = library_default([raw[i] for i in ids], average_content_free(cf, labels) if cf else None, labels)
    res[f"default ({name})"] = ([max(p, key=p.__getitem__) for p in lib], [max(p.values()) for p in lib], secs)
    rev = got.get("reversed", {})
    rev_ids = {r["id"]: r for r in rev.get("rows", [])}
    if rev_ids and all(i in rev_ids for i in ids):
        both = [s + rev_ids[i]["secs"] for s, i in zip(secs, ids)]
        for name, cal in (("perm", False), ("perm+cc", True)):
            a, b = dists(d, labels, cal), dists(rev, labels, cal)
            avg = {i: {lab: (a[i][lab] + b[i][lab]) / 2 for lab in labels} for i in ids}
            res[name] = ([max(avg[i], key=avg[i].__getitem__) for i in ids], [max(avg[i].values()) for i in ids], both)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", default="/tmp/llmlabel-embedded-cache", help="folder of the 0.5B's answers_<task>.json")
    ap.add_argument("--large", default="/tmp/llmlabel-embedded-cache", help="folder of answers_<task>_1.5b.json")
    ap.add_argument("--tasks", default="sst2,sms,clinc_domain,wos,trec,clinc_intent")
    ap.add_argument("--thresholds", default="0.6,0.8", help="cascade thresholds on the 0.5B's calibrated confidence")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "embedded_models.md"))
    ap.add_argument("--load", default="", help="the load average while the answers were asked (default: now)")
    ap.add_argument("--note", default="", help="how the answers were asked (threads, load), for the header")
    a = ap.parse_args()
    load = a.load or f"{os.getloadavg()[0]:.1f}"
    lines = [
        "## The embedded models: the 1.5B (the default since issue 29) against the 0.5B, and a 0.5B -> 1.5B cascade",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores ({platform.machine()}) "
        f"shared with other jobs (load {load}). Command: `python benchmarks/embedded_models.py "
        + shlex.join(sys.argv[1:])
        + "`",
        "",
        "Scored from the answers of `benchmarks/embedded_quality.py` (Qwen2.5-Coder-0.5B-Instruct and "
        "-1.5B-Instruct, Q4_K_M, each behind llmlabel's llama.cpp server config); the same seeded rows for every "
        f"lever of a task. {a.note}",
        "",
        "| kind | task | model | lever | n | accuracy | 95% interval | macro-F1 | ECE | s/row | most frequent answer |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in a.tasks.split(","):
        small_f, large_f = Path(a.small) / f"answers_{task}.json", Path(a.large) / f"answers_{task}_1.5b.json"
        models = {m: json.loads(f.read_text()) for m, f in (("0.5b", small_f), ("1.5b", large_f)) if f.exists()}
        if not models:
            continue
        labels = list(TASKS[task]["labels"])
        ids = None
        for got in models.values():
            have = [r["id"] for r in got["default"]["rows"]]
            ids = have if ids is None else [i for i in ids if i in set(have)]
        if not ids:
            continue
        gold_of = {r["id"]: r["gold"] for got in models.values() for r in got["default"]["rows"]}
        gold = [gold_of[i] for i in ids]
        per = {m: model_levers(got, ids, labels) for m, got in models.items()}
        rows = [(m, lev, v) for m, levs in per.items() for lev, v in levs.items()]
        if len(per) == 2:
            # What llmlabel's cascade does (pipeline.row_labeler._ask_cascade): the 0.5B's calibrated answer ends the
            # row when its confidence is >= t; else the 1.5B is asked too and the row is the soft vote of both
            # (ensemble.combine.combine_row). The probe rows (the first cascade.probe_rows) ask both.
            cc_s = dists(models["0.5b"]["default"], labels, True)
            cc_l = dists(models["1.5b"]["default"], labels, True)
            both = [
                combine_row(
                    {
                        "small": JudgeAnswer(label=max(cc_s[i], key=cc_s[i].__getitem__), probs=cc_s[i]),
                        "large": JudgeAnswer(label=max(cc_l[i], key=cc_l[i].__getitem__), probs=cc_l[i]),
                    },
                    labels,
                    "label",
                )
                for i in ids
            ]
            (p_s, c_s, s_s), (_, _, s_l) = per["0.5b"]["cc"], per["1.5b"]["cc"]
            sum_s = [x + y for x, y in zip(s_s, s_l)]
            rows.append(
                ("0.5b + 1.5b", "both, soft vote", ([b.label for b in both], [b.confidence for b in both], sum_s))
            )
            for t in (float(x) for x in a.thresholds.split(",")):
                up = [c < t for c in c_s]
                rows.append(
                    (
                        "0.5b -> 1.5b",
                        f"cascade@{t:g} ({sum(up) / len(up):.0%} sent on)",
                        (
                            [b.label if u else ps for u, ps, b in zip(up, p_s, both)],
                            [b.confidence if u else cs for u, cs, b in zip(up, c_s, both)],
                            [ss + (sl if u else 0.0) for u, ss, sl in zip(up, s_s, s_l)],
                        ),
                    )
                )
        for m, lev, (preds, conf, secs) in rows:
            r = score(lev, preds, conf, gold, labels)
            lines.append(
                f"| {KINDS.get(task, task)} | {task} | {m} | {lev} | {r['n']} | {r['acc']:.3f} | "
                f"{r['lo']:.2f}-{r['hi']:.2f} | {r['f1']:.3f} | {r['ece']:.3f} | {float(np.mean(secs)):.2f} | {r['top']} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
