#!/usr/bin/env python3
"""Students distilled from label sets: GoEmotions (multi-label, 28 emotions) and CLINC150 / Web of Science as
two-level taxonomies, the teacher an ensemble of simulated judges.

For each dataset: three fakellm judges (../shared/tools/fakellm.py, accuracies below) label a seeded training
sample and a held-out test sample with `llmlabel label` (the teacher: multi-label sets combined per label, or
paths labeled top-down); `llmlabel distill` trains a student on the training output alone (a one-vs-rest student
on the sets and per-label probabilities, or a student per level) and `llmlabel predict` labels the held-out texts.
The student is scored on those held-out rows against the teacher's labels (what distillation is asked to copy)
and against gold, beside the teacher against gold; the model card's own 3-fold figures on the training rows are
shown too. Metrics: evaluation.multilabel.evaluate_sets (micro/macro-F1) and evaluation.taxonomy.evaluate_paths
(per-level accuracy), the code behind `llmlabel eval`.

    nice python benchmarks/distill_labelsets.py                      # 2,000 train / 500 test rows each
    nice python benchmarks/distill_labelsets.py --train 500 --test 200 --out /tmp/d.md
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DATA,
    FakeLLM,
    accuracy_args,
    header,
    judge,
    label,
    loadavg,
    now,
    read_csv,
    read_jsonl,
    run_cli,
    table,
    tempdir,
    write_config,
    write_csv,
    write_result,
)

from llmlabel.distill.training import load_model  # noqa: E402
from llmlabel.evaluation.multilabel import evaluate_sets  # noqa: E402
from llmlabel.evaluation.taxonomy import evaluate_paths  # noqa: E402
from llmlabel.io.records import read_results  # noqa: E402
from llmlabel.results import RowResult  # noqa: E402

ACCURACIES = {"judge-a": 0.85, "judge-b": 0.75, "judge-c": 0.6}


def _sample(path: Path, n: int, seed: int) -> list[dict[str, str]]:
    rows = read_csv(path)
    return random.Random(seed).sample(rows, min(n, len(rows)))


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _teach_and_distill(tmp: Path, fake: FakeLLM, task: dict, train: list[dict], test: list[dict]) -> dict:
    """Label train and test with the judges, distill from train, predict test: the outputs' paths and timings."""
    judges = [judge(m.replace("judge-", ""), m, fake.base_url, 32) for m in ACCURACIES]
    cfg = write_config(tmp / "c.yaml", judges, tmp / "cache", task=task)
    files = {}
    for name, rows in (("train", train), ("test", test)):
        inp = write_csv(tmp / f"{name}.csv", ["id", "text"], [[r["id"], r["text"]] for r in rows])
        files[name] = tmp / f"teacher_{name}.jsonl"
        label(inp, cfg, files[name])
    model = tmp / "student.skops"
    # --no-cv: the held-out test rows are the measurement; the card's own 3-fold estimate would cost 4x the fits
    dist = run_cli(["distill", str(files["train"]), "-o", str(model), "--no-cv"])
    pred = tmp / "student_test.jsonl"
    run_cli(["predict", str(model), str(tmp / "test.csv"), "-o", str(pred)])
    card = json.loads((tmp / "student.skops.card.json").read_text())
    return {"teacher": files["test"], "student": pred, "card": card, "distill_s": dist.wall}


def multilabel(n_train: int, n_test: int, seed: int) -> tuple[list[list], list[str]]:
    labels = (DATA / "goemotions_labels.txt").read_text().split()
    train = _sample(DATA / "goemotions_train.csv", n_train, seed)
    test = _sample(DATA / "goemotions_test.csv", n_test, seed)
    task = {
        "name": "goemotions",
        "instructions": "Which emotions does this Reddit comment express?",
        "labels": labels,
        "multi_label": True,
    }
    srcs = [DATA / "goemotions_train.csv", DATA / "goemotions_test.csv"]
    extra = accuracy_args(ACCURACIES)
    with tempdir("llmlabel-dls-") as tmp, FakeLLM(srcs, extra=extra) as fake:
        got = _teach_and_distill(tmp, fake, task, train, test)
        teacher, student = list(read_results(got["teacher"])), list(read_results(got["student"]))
    gold = {r["id"]: r["labels"] for r in test}
    taught = {r.id: "|".join(r.labels or ()) for r in teacher if not r.error}

    def scores(rows: list[RowResult], truth: dict[str, str]) -> str:
        rep = evaluate_sets(rows, truth, labels)
        return f"{rep['micro_f1']:.3f} / {rep['macro_f1']:.3f}"

    out = [
        [
            "GoEmotions (multi-label, 28)",
            f"{len(train)} / {len(test)}",
            scores(student, taught),
            scores(student, gold),
            scores(teacher, gold),
            f"{got['distill_s']:.1f}",
        ]
    ]
    notes = [
        f"GoEmotions: {len(train)} rows sampled from goemotions_train.csv and {len(test)} from goemotions_test.csv "
        f"(seed {seed}); teacher: the three judges' sets combined by majority per label (label_threshold 0.5); "
        "figures are micro-F1 / macro-F1"
    ]
    return out, notes


def _paths(out: Path, gold: Path) -> dict:
    """`llmlabel eval`'s per-level report of a taxonomy output against a gold file (id, label columns)."""
    return evaluate_paths(out, gold, "id", "label", read_results(out))


def taxonomy(name: str, files: tuple[Path, Path], tree: Path, extra_task: dict, n: tuple[int, int], seed: int):
    train, test = _sample(files[0], n[0], seed), _sample(files[1], n[1], seed)
    task = {"name": name, "taxonomy": str(tree), "taxonomy_threshold": 0.5, **extra_task}
    extra = accuracy_args(ACCURACIES)
    with tempdir("llmlabel-dlt-") as tmp, FakeLLM(list(files), extra=extra) as fake:
        got = _teach_and_distill(tmp, fake, task, train, test)
        gold = write_csv(
            tmp / "gold.csv", ["id", "label_l1", "label_l2"], [[r["id"], r["label_l1"], r["label_l2"]] for r in test]
        )
        taught = write_csv(
            tmp / "taught.csv",
            ["id", "path"],
            [[r["id"], json.dumps(r["path"])] for r in read_jsonl(got["teacher"]) if not r.get("error")],
        )
        vs_teacher = _paths(got["student"], taught)
        vs_gold = _paths(got["student"], gold)
        teacher_gold = _paths(got["teacher"], gold)
        # The same student never stopping at the parent (threshold 0): what its back-off buys in precision.
        student = load_model(str(tmp / "student.skops"))
        student.set_params(threshold=0.0)
        always = tmp / "student_t0.jsonl"
        recs = student.predict_paths([r["text"] for r in test])
        always.write_text("".join(json.dumps({"id": r["id"], **x}) + "\n" for r, x in zip(test, recs)))
        t0_teacher = _paths(always, taught)
        t0_gold = _paths(always, gold)

    def acc(rep: dict) -> str:
        return " / ".join(f"{lv['accuracy']:.3f}" for lv in rep["levels"][:2])

    row = [
        f"{name} (taxonomy)",
        f"{len(train)} / {len(test)}",
        acc(vs_teacher),
        acc(vs_gold),
        acc(teacher_gold),
        f"{got['distill_s']:.1f}",
    ]
    row0 = [
        f"{name} (taxonomy), same student at threshold 0",
        f"{len(train)} / {len(test)}",
        acc(t0_teacher),
        acc(t0_gold),
        acc(teacher_gold),
        "",
    ]
    cover, cover0 = vs_gold["levels"][1], t0_gold["levels"][1]
    note = (
        f"{name}: {len(train)} rows from {files[0].name}, {len(test)} from {files[1].name} (seed {seed}); teacher "
        "threshold 0.5 (a level needs two judges of three), student threshold 0.5; figures are level-1 / level-2 "
        f"accuracy (a row that stopped at its domain counts wrong at level 2); the student's level-2 coverage "
        f"{cover['coverage']:.3f} and precision {_f(cover['precision'])} against gold (at threshold 0: coverage "
        f"{cover0['coverage']:.3f}, precision {_f(cover0['precision'])}); the teacher's level-2 coverage "
        f"{teacher_gold['levels'][1]['coverage']:.3f}, precision {_f(teacher_gold['levels'][1]['precision'])}"
    )
    return [row, row0], [note]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["goemotions", "clinc150", "wos1k"], action="append")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    started, load = now(), f"{loadavg():.2f}"
    only = set(a.only or ["goemotions", "clinc150", "wos1k"])
    results, notes = [], []
    if "goemotions" in only:
        r, n = multilabel(a.train, a.test, a.seed)
        results += r
        notes += n
    if "clinc150" in only:
        clinc = "Which request to a virtual assistant is this? oos: out of scope (none of the domains)."
        r, n = taxonomy(
            "clinc150",
            (DATA / "clinc150_hier_train.csv", DATA / "clinc150_hier_test.csv"),
            DATA / "clinc150_taxonomy.json",
            {"instructions": clinc},
            (a.train, a.test),
            a.seed,
        )
        results += r
        notes += n
    if "wos1k" in only:
        wos = json.loads((DATA / "wos1k_l1_descriptions.json").read_text())
        r, n = taxonomy(
            "wos1k",
            (DATA / "wos1k_train.csv", DATA / "wos1k_test.csv"),
            DATA / "wos1k_taxonomy.json",
            {"instructions": "Which research domain, then which area, is this abstract from?", "labels": wos},
            (min(a.train, 800), min(a.test, 200)),
            a.seed,
        )
        results += r
        notes += n
    text = header(
        "Students distilled from label sets: GoEmotions (multi-label), CLINC150 and WOS (taxonomies)",
        load,
        started,
        [
            *notes,
            f"teacher: `llmlabel label` with fakellm judges {', '.join(f'{m}={acc}' for m, acc in ACCURACIES.items())} "
            "(simulated: each judge keeps each gold label / node with its accuracy; not gold with added noise)",
            "student: `llmlabel distill` defaults (hashed TF-IDF features; multi-label: per-label probabilities as "
            "soft targets, thresholds tuned on 20% held-out training rows, then refit; taxonomy: a logistic "
            "regression per level, top-down within the parent's children, stopping at the parent below 0.5)",
            "held-out: the test rows, never seen by the student (the teacher labeled them too); distill ran with "
            "--no-cv (the card's own 3-fold estimate, heldout_vs_teacher, would cost four times the fits)",
            "run with `nice` on a CPU shared by several engineers: distill seconds include process start-up",
        ],
    )
    text += "\n" + table(
        [
            "data",
            "train / test rows",
            "student vs teacher (held-out)",
            "student vs gold",
            "teacher vs gold",
            "distill wall s",
        ],
        results,
    )
    write_result("distill_labelsets.md", text, a.out)


if __name__ == "__main__":
    main()
