"""Candidates, then distill, with a real LLM: Qwen2.5-Coder-1.5B-Instruct (llama.cpp) as the teacher on TREC.

The judge labels a seeded sample of TREC test in label mode (its own accuracy, the bar to beat) and gives
candidate sets for a seeded sample of TREC train; students (``CandidateDistiller``) are trained from those
answers and scored on the same TREC test rows against gold. Everything goes through ``llmlabel label``;
the response cache lives in --cache-dir (outside the repository), so a rerun pays only for new rows, and
--train-limit / --test-limit grow a run step by step.

Start the judge first (any OpenAI-compatible server; this is the one measured):

    nice -n 10 python -m llama_cpp.server --model qwen2.5-coder-1.5b.gguf --port 18201 --n_ctx 2048

(On a CPU whose AMX tiles the kernel does not enable, llama.cpp's AMX/repacked kernels segfault on any
batch of more than one token; load the model with ``use_extra_bufts = False`` in its model params then.)

    python benchmarks/candist_real.py --base-url http://127.0.0.1:18201/v1 --cache-dir /tmp/candist/cache \\
        --work-dir /tmp/candist --train-limit 150 --test-limit 150
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import TREC_LABELS  # noqa: E402

from llmlabel.distill import CandidateDistiller  # noqa: E402

LABELS = TREC_LABELS


def sample(path: Path, n: int) -> list[dict[str, str]]:
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    random.Random(0).shuffle(rows)
    return rows[:n]


def write_inputs(work: Path, name: str, rows: list[dict[str, str]]) -> Path:
    path = work / f"{name}.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        w.writeheader()
        w.writerows(rows)
    return path


# The same classes described as TREC's annotation guidelines do (Li & Roth 2002): by the kind of answer and
# the question words that ask for it. The short descriptions above leave a small judge calling most
# "what/how" questions DESC; these are the "label descriptions" lever.
GUIDE = {
    "ABBR": "asks what an abbreviation stands for, or for the abbreviation of something",
    "DESC": "asks for a definition, a description, a manner or a reason (what is X, how does, why)",
    "ENTY": "the answer is a thing: an animal, plant, food, color, product, disease, event, sport, word, other entity",
    "HUM": "the answer is a person, a group or an organization (who, which company, what team)",
    "LOC": "the answer is a place: a city, country, state, mountain, river, address (where, what city)",
    "NUM": "the answer is a number: a count, date, year, age, amount, money, distance, speed, size (how many, when)",
}


def shots(a: argparse.Namespace) -> list[dict[str, str]]:
    """--shots K: K demonstrations per label, seeded, from TREC train questions outside the first 800 of the
    seeded order (the static few-shot lever; the same list for every row, so it stays in the shared prompt
    prefix). Fixed whatever --train-rows is, so a longer run keeps the prompts, and with them the cache;
    train_rows() leaves these questions out of the train sample."""
    if not a.shots:
        return []
    used = {r["id"] for r in sample(Path(a.data_dir) / "trec_train.csv", 800)}
    pool = [
        r for r in csv.DictReader(open(Path(a.data_dir) / "trec_train.csv", encoding="utf-8")) if r["id"] not in used
    ]
    random.Random(1).shuffle(pool)
    ex = [r for lab in LABELS for r in [r for r in pool if r["label"] == lab][: a.shots]]
    random.Random(2).shuffle(ex)
    return ex


def train_rows(a: argparse.Namespace, n: int) -> list[dict[str, str]]:
    """The seeded TREC train sample, without the --shots demonstrations."""
    shown = {r["id"] for r in shots(a)}
    return [r for r in sample(Path(a.data_dir) / "trec_train.csv", 100000) if r["id"] not in shown][:n]


def write_config(work: Path, mode: str, a: argparse.Namespace, guide: bool = False) -> Path:
    labels = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in (GUIDE if guide else LABELS).items())
    examples = "".join(f"    - {{text: {json.dumps(r['text'])}, label: {r['label']}}}\n" for r in shots(a))
    path = work / f"{mode}{'_guide' if guide else ''}{f'_shots{a.shots}' if a.shots else ''}.yaml"
    path.write_text(
        "task:\n  name: trec\n  instructions: Classify the question by the kind of answer it asks for.\n"
        f"  labels:\n{labels}"
        + (f"  examples:\n{examples}" if examples else "")
        + f'judges:\n  - {{name: qwen15, model: {a.model}, base_url: "{a.base_url}", api_key_env: NONE_KEY,\n'
        "     concurrency: 1, temperature: 0, response_format: json_object_schema, timeout: 300}\n"
        f"mode: {mode}\ncache_dir: {a.cache_dir}\n"
    )
    return path


def label(inp: Path, cfg: Path, out: Path, limit: int, reuse: bool) -> list[dict[str, Any]]:
    if reuse:  # read what an earlier run wrote (no server needed)
        if not out.exists():
            return []
        return [json.loads(line) for line in open(out, encoding="utf-8")][:limit]
    cmd = [sys.executable, "-m", "llmlabel", "label", str(inp), "-c", str(cfg), "-o", str(out), "-q"]
    env = {
        "NONE_KEY": "none",
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    subprocess.run([*cmd, "--limit", str(limit)], check=True, env=env)
    # [:limit]: a run resumed from the part file of a longer, interrupted one may keep a few rows more
    return [json.loads(line) for line in open(out, encoding="utf-8")][:limit]


def ledger_stats(out: Path) -> dict[str, float]:
    """Seconds, prompt and answer tokens per answered (uncached) row, over every run into ``out``."""
    runs = json.loads(Path(str(out) + ".ledger.json").read_text())["runs"]
    resp = sum(j["responses"] for r in runs for j in r["judges"].values())
    wall = sum(r["wall_seconds"] for r in runs if any(j["responses"] for j in r["judges"].values()))
    tin = sum(j["input_tokens"] for r in runs for j in r["judges"].values())
    tout = sum(j["output_tokens"] for r in runs for j in r["judges"].values())
    return {"s_row": wall / max(resp, 1), "in_row": tin / max(resp, 1), "out_row": tout / max(resp, 1)}


def students(
    train: list[dict[str, Any]],
    train_lab: list[dict[str, Any]],
    test_texts: list[str],
    test_gold: np.ndarray,
    a: argparse.Namespace,
    test_teacher: np.ndarray | None = None,
    second: list[str] | None = None,
) -> list[tuple[str, float, str]]:
    """(name, accuracy on test, note) for each student: ``train`` are the rows with a candidate set, ``train_lab``
    the rows with the judge's label-mode answer (a superset when --cand-limit is below --train-limit). With
    ``test_teacher`` (the judge's test labels), each label-mode student's second-round rows go to ``second``."""
    second = second if second is not None else []
    texts = [r["text"] for r in train]
    y = [r["label"] for r in train]
    cands = {r["id"]: r["candidates"] for r in train}
    lab_texts = [r["text"] for r in train_lab]
    y_lab = [r["label"] for r in train_lab]
    # The label-mode label joins the row's candidate set; a row without a set has its label alone.
    both = [sorted({*cands.get(r["id"], []), r["label"]}) for r in train_lab]
    variants: list[tuple[str, dict[str, Any], dict[str, Any]]] = (
        [
            ("candidate mode's best labels (`--mode single`)", {}, {"X": texts, "y": y}),
            (
                "candidate sets, round by in-set rate (CanDist's)",
                {"select_round": "in_set"},
                {"X": texts, "y": y, "candidates": list(cands.values())},
            ),
            (
                "candidate sets, round by teacher agreement",
                {},
                {"X": texts, "y": y, "candidates": list(cands.values())},
            ),
        ]
        if train
        else []
    )
    if train_lab:
        variants += [
            (f"label-mode labels of {len(train_lab)} rows (single)", {}, {"X": lab_texts, "y": y_lab}),
            (
                f"candidate sets + label-mode label as y (combined, {len(train_lab)} rows)",
                {},
                {"X": lab_texts, "y": y_lab, "candidates": both},
            ),
            (
                "gold labels of the same rows (ceiling)",
                {},
                {"X": lab_texts, "y": [r["label_input"] for r in train_lab]},
            ),
        ]
    if a.unlabeled and train_lab:
        # Unlabeled TREC train questions (not in the sample) as rows whose candidates are every label:
        # the refinery gives them targets from the student itself (self-training), at a lower weight.
        pool = [r["text"] for r in train_rows(a, 100000)[a.train_rows :][: a.unlabeled]]
        w = np.r_[np.ones(len(lab_texts)), np.full(len(pool), 0.3)]
        kw = {
            "X": lab_texts + pool,
            "y": y_lab + [None] * len(pool),
            "candidates": both + [sorted(LABELS)] * len(pool),
            "sample_weight": w,
        }
        variants.append((f"combined + {len(pool)} unlabeled train questions (weight 0.3)", {}, kw))
    out = []
    for features in a.features:
        embed = embedder(features, texts, test_texts, variants)
        for name, params, kw in variants:
            kw = dict(kw)
            X = kw.pop("X")
            m = CandidateDistiller(features=None if embed else features, **params)
            m.fit(embed(X) if embed else X, **kw)
            pred = m.predict(embed(test_texts) if embed else test_texts)
            acc = float(np.mean(pred == test_gold))
            top, n_top = Counter(pred).most_common(1)[0]
            note = f"predicts {top} for {n_top}/{len(pred)}"
            if m.mode_ == "candidates":
                note += f"; round {m.best_round_} of {len(m.history_) - 1}"
            out.append((f"{name} [{features}]", acc, note))
            print(f"{out[-1][0]:95s} {acc:.3f}  {note}", flush=True)
            if name.startswith("label-mode labels") and test_teacher is not None:
                P = m.predict_proba(embed(test_texts) if embed else test_texts)
                second += second_round(
                    f"{name} [{features}]", m.classes_[P.argmax(1)], P.max(1), test_teacher, test_gold
                )
    return out


def second_round(name: str, pred: np.ndarray, conf: np.ndarray, teacher: np.ndarray, gold: np.ndarray) -> list[str]:
    """The student as a second-round judge on the test questions: where it disagrees with the teacher at
    confidence >= t, who is right, and the accuracy if its label replaced the teacher's there (markdown rows)."""
    rows = []
    for t in (0.5, 0.7, 0.9):
        flip = (pred != teacher) & (conf >= t)
        acc = float(np.mean(np.where(flip, pred, teacher) == gold))
        rows.append(
            f"| {name} | {t} | {int(flip.sum())} | {int(((pred == gold) & flip).sum())} | "
            f"{int(((teacher == gold) & flip).sum())} | {acc:.3f} |"
        )
    return rows


def embedder(features: str, texts: list[str], test_texts: list[str], variants: list[Any]) -> Any:
    """For ``embeddings`` (MiniLM) and ``local-llm`` (the embedded Qwen's states): one pass over every text of
    the run, looked up by text, so the variants share it (the students then take the matrix:
    ``features=None``). None for the n-gram kinds, which each student fits itself."""
    if features not in ("embeddings", "local-llm"):
        return None
    from llmlabel.distill.features import make_featurizer

    every = list(dict.fromkeys([*texts, *test_texts, *(t for _, _, kw in variants for t in kw.get("X", []))]))
    E = make_featurizer(features).fit_transform(every)
    row = {t: i for i, t in enumerate(every)}
    return lambda X: E[[row[t] for t in X]]


def curve(
    a: argparse.Namespace,
    train: list[dict[str, Any]],
    lab: dict[str, str],
    test_texts: list[str],
    test_gold: np.ndarray,
) -> list[tuple[int, float, float, float]]:
    """What more rows would buy: (rows, student on gold labels, on simulated teacher labels, on the teacher's
    real labels) for each --curve size (tfidf). The train sample's first rows are the ones the judge labeled,
    so up to --train-limit the real column is measured; beyond it, only the simulation says where the trend
    goes: labels drawn from this judge's measured label-mode confusion (P(answer | gold)), which misses that
    real errors also depend on the text."""
    labels = sorted(LABELS)
    idx = {c: i for i, c in enumerate(labels)}
    conf = np.full((len(labels), len(labels)), 1e-3)
    for r in train:
        if r["id"] in lab:
            conf[idx[r["label_input"]], idx[lab[r["id"]]]] += 1
    conf /= conf.sum(axis=1, keepdims=True)
    pool = train_rows(a, 100000)
    rng = np.random.default_rng(0)
    sim = [labels[rng.choice(len(labels), p=conf[idx[r["label"]]])] for r in pool]
    out = []
    for n in a.curve:
        texts, gold = [r["text"] for r in pool[:n]], [r["label"] for r in pool[:n]]

        def acc(y: list[str]) -> float:
            return float(np.mean(CandidateDistiller().fit(texts, y).predict(test_texts) == test_gold))

        real = [lab.get(r["id"]) for r in pool[:n]]
        acc_real = acc(real) if all(real) else float("nan")  # type: ignore[arg-type]
        out.append((len(texts), acc(gold), acc(sim[:n]), acc_real))
        print(f"curve: {out[-1]}", flush=True)
    return out


def descriptions(a: argparse.Namespace, work: Path, train_in: Path, test_in: Path) -> list[str]:
    """The label-descriptions lever on the first --guide-rows rows: candidate sets and label-mode answers with
    the short descriptions vs TREC's guideline descriptions (markdown lines)."""
    n = a.guide_rows
    lines = [
        "",
        f"Label descriptions, first {n} train and {n} test questions of the same samples (the judge's signal, "
        "before any student):",
        "",
        "| descriptions | set coverage | mean set size | sets of one label | candidate mode's best label right "
        "| label mode right (train) | label mode right (test) |",
        "|---|---|---|---|---|---|---|",
    ]
    for guide in (False, True):
        sfx = "_guide" if guide else "_short"  # own files: the main run's outputs keep their rows
        cand = label(train_in, write_config(work, "candidates", a, guide), work / f"train_cand{sfx}.jsonl", n, a.reuse)
        lcfg = write_config(work, "label", a, guide)
        lab_tr = label(train_in, lcfg, work / f"train_label{sfx}.jsonl", n, a.reuse)
        lab_te = label(test_in, lcfg, work / f"test_label{sfx}.jsonl", n, a.reuse)
        if not (cand and lab_tr and lab_te):
            continue
        ok = [r for r in cand if r.get("candidates")]
        cov = np.mean([r["label_input"] in r["candidates"] for r in ok])
        size = np.mean([len(r["candidates"]) for r in ok])
        one = np.mean([len(r["candidates"]) == 1 for r in ok])
        best = np.mean([r["label"] == r["label_input"] for r in ok])
        tr = np.mean([r["label"] == r["label_input"] for r in lab_tr])
        te = np.mean([r["label"] == r["label_input"] for r in lab_te])
        name = "TREC guideline (question words, answer kinds)" if guide else "short (as in the table above)"
        lines.append(f"| {name} | {cov:.2f} | {size:.2f} | {one:.0%} | {best:.2f} | {tr:.2f} | {te:.2f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:18201/v1")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "llmlabel-candist"))
    ap.add_argument("--work-dir", default=None, help="configs and outputs (default: under --cache-dir)")
    ap.add_argument("--train-rows", type=int, default=800, help="size of the seeded TREC train sample")
    ap.add_argument("--test-rows", type=int, default=300, help="size of the seeded TREC test sample")
    ap.add_argument("--train-limit", type=int, default=800, help="label only the first N train rows")
    ap.add_argument("--test-limit", type=int, default=300, help="label only the first N test rows")
    ap.add_argument("--unlabeled", type=int, default=2000, help="extra unlabeled train questions (0: none)")
    ap.add_argument("--features", nargs="+", default=["tfidf"], help="tfidf and/or embeddings")
    ap.add_argument("--curve", type=int, nargs="*", default=[300, 1000, 5452], help="learning-curve sizes")
    ap.add_argument(
        "--cand-limit", type=int, help="candidate sets on the first N train rows only (default: --train-limit)"
    )
    ap.add_argument("--guide", action="store_true", help="the main run uses TREC's guideline label descriptions")
    ap.add_argument("--shots", type=int, default=0, help="static demonstrations per label in the prompt (0: zero-shot)")
    ap.add_argument("--guide-rows", type=int, default=0, help="compare label descriptions on N rows (0: skip)")
    ap.add_argument("--note", default="", help="how the server ran (written into the results)")
    ap.add_argument("--name", default="candist_real", help="results file: benchmarks/results/NAME.md")
    ap.add_argument("--reuse", action="store_true", help="read the outputs of an earlier run; call no server")
    a = ap.parse_args()
    work = Path(a.work_dir or Path(a.cache_dir) / "work")
    work.mkdir(parents=True, exist_ok=True)
    data = Path(a.data_dir)
    train_in = write_inputs(work, "trec_train_sample", train_rows(a, a.train_rows))
    test_in = write_inputs(work, "trec_test_sample", sample(data / "trec_test.csv", a.test_rows))
    load = os.getloadavg()[0]
    t0 = time.time()
    # Each prompt variant writes its own outputs (the --guide-rows comparison owns *_guide / *_short).
    tag = ("_guidelines" if a.guide else "") + (f"_shots{a.shots}" if a.shots else "")
    lcfg = write_config(work, "label", a, a.guide)
    test = label(test_in, lcfg, work / f"test_label{tag}.jsonl", a.test_limit, a.reuse)
    train_lab = label(train_in, lcfg, work / f"train_label{tag}.jsonl", a.train_limit, a.reuse)
    ccfg = write_config(work, "candidates", a, a.guide)
    cand_limit = a.train_limit if a.cand_limit is None else a.cand_limit
    train = label(train_in, ccfg, work / f"train_cand{tag}.jsonl", cand_limit, a.reuse) if cand_limit else []
    train_lab = [r for r in train_lab if not r.get("error") and r.get("label")]
    lab = {r["id"]: r["label"] for r in train_lab}
    train = [r for r in train if not r.get("error") and r.get("candidates")]
    test = [r for r in test if not r.get("error")]
    test_texts = [r["text"] for r in test]
    test_gold = np.array([r["label_input"] for r in test], dtype=object)
    teacher = float(np.mean(np.array([r["label"] for r in test], dtype=object) == test_gold))
    sizes = Counter(len(r["candidates"]) for r in train)
    nan = float("nan")
    stats: dict[str, Any] = {
        "train rows": len(train),
        "coverage": np.mean([r["label_input"] in r["candidates"] for r in train]) if train else nan,
        "mean size": np.mean([len(r["candidates"]) for r in train]) if train else nan,
        "best label right": np.mean([r["label"] == r["label_input"] for r in train]) if train else nan,
        "sizes": dict(sorted(sizes.items())),
        "most frequent label in sets": Counter(c for r in train for c in r["candidates"]).most_common(2),
        "label rows": len(train_lab),
        "label right (all train)": np.mean([r["label"] == r["label_input"] for r in train_lab]) if train_lab else nan,
    }
    print(f"teacher label mode on {len(test)} test rows: {teacher:.3f}; candidate sets: {stats}", flush=True)
    both = [r for r in train if r["id"] in lab]
    stats["label-mode rows"] = len(both)
    stats["label-mode labels right"] = np.mean([lab[r["id"]] == r["label_input"] for r in both]) if both else nan
    stats["set right, same rows"] = np.mean([r["label"] == r["label_input"] for r in both]) if both else nan
    stats["coverage with the label-mode label"] = (
        np.mean([r["label_input"] in {*r["candidates"], lab[r["id"]]} for r in both]) if both else nan
    )
    teacher_labels = np.array([r["label"] for r in test], dtype=object)
    second: list[str] = []
    rows = students(train, train_lab, test_texts, test_gold, a, teacher_labels, second)
    rows_curve = curve(a, train_lab, lab, test_texts, test_gold) if a.curve and lab else []
    extra = descriptions(a, work, train_in, test_in) if a.guide_rows else []
    lab_s = ledger_stats(work / f"train_label{tag}.jsonl")
    cand_s = ledger_stats(work / f"train_cand{tag}.jsonl") if train else None
    if second:
        extra = [
            "",
            "The student as a second-round judge (label-mode students above, on the same test questions): where it "
            "disagrees with the teacher at confidence >= t, who is right, and the accuracy if its label replaced "
            "the teacher's there.",
            "",
            "| student | t | disagreements | student right | teacher right | accuracy with the student's label there |",
            "|---|---|---|---|---|---|",
            *second,
            *extra,
        ]
    report(a, load, time.time() - t0, len(test), teacher, stats, rows, lab_s, cand_s, rows_curve, extra)


def verdict(teacher: float, rows: list[tuple[str, float, str]], n_test: int) -> str:
    distilled = [r for r in rows if "ceiling" not in r[0]]
    name, acc, _ = max(distilled, key=lambda r: r[1])
    se = (teacher * (1 - teacher) / n_test) ** 0.5
    if acc > teacher + 2 * se:
        return f"The best distilled student ({name}, {acc:.3f}) beats its teacher ({teacher:.3f}, +-{2 * se:.3f})."
    return (
        f"The best distilled student ({name}, {acc:.3f}) does NOT beat its teacher ({teacher:.3f}; "
        f"two standard errors on {n_test} questions: {2 * se:.3f})."
    )


def report(a, load, wall, n_test, teacher, stats, rows, lab_s, cand_s, rows_curve, extra) -> None:
    st, ls, cs = stats, lab_s, cand_s
    cmd = (
        f"python benchmarks/candist_real.py --base-url {a.base_url} --cache-dir CACHE --train-rows {a.train_rows} "
        f"--train-limit {a.train_limit} --test-rows {a.test_rows} "
        f"--test-limit {a.test_limit} --unlabeled {a.unlabeled} --features {' '.join(a.features)} "
        f"--curve {' '.join(map(str, a.curve))} --guide-rows {a.guide_rows}"
        + (f" --cand-limit {a.cand_limit}" if a.cand_limit is not None else "")
        + (" --guide" if a.guide else "")
        + (f" --shots {a.shots}" if a.shots else "")
        + f" --name {a.name}"
    )
    prompt = ("TREC's guideline label descriptions" if a.guide else "short label descriptions") + (
        f", {a.shots} static demonstrations per label ({6 * a.shots} seeded TREC train questions outside the sample)"
        if a.shots
        else ", zero-shot"
    )
    lines = [
        "## Candidates, then distill, with a real LLM teacher (Qwen2.5-Coder-1.5B, TREC)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} shared cores, load at start {load:.1f}; "
        f"this run {wall:.0f}s (cached answers are free). Command: `{cmd}`",
        "",
        f"Teacher: llama-cpp-python server, `json_object_schema`, temperature 0, {prompt}{a.note}. Label-mode answers "
        f"on {st['label rows']} seeded TREC train questions: right {st['label right (all train)']:.2f}.",
    ]
    if st["train rows"]:
        lines += [
            "",
            f"Candidate sets on the first {st['train rows']} of them: coverage {st['coverage']:.2f}, mean size "
            f"{st['mean size']:.2f} (sizes {st['sizes']}), the answer's best label right {st['best label right']:.2f}; "
            f"most frequent labels in sets {st['most frequent label in sets']}. The judge's label-mode answers on "
            f"those rows: right {st['label-mode labels right']:.2f} (candidate mode's best label on them "
            f"{st['set right, same rows']:.2f}); the set plus that label covers gold "
            f"{st['coverage with the label-mode label']:.2f}.",
        ]
    lines += [
        "",
        f"| model (scored on the same {n_test} seeded TREC test questions, gold) | accuracy | note |",
        "|---|---|---|",
        f"| teacher: the 1.5B judge itself, label mode | {teacher:.3f} | |",
    ]
    lines += [f"| student: {name} | {acc:.3f} | {note} |" for name, acc, note in rows]
    lines += [
        "",
        f"Judge cost per answered row: label mode {ls['s_row']:.1f}s ({ls['in_row']:.0f} prompt + {ls['out_row']:.1f} answer tokens)",
    ]
    if cs:
        lines[-1] += (
            f", candidate mode {cs['s_row']:.1f}s ({cs['in_row']:.0f} prompt + "
            f"{cs['out_row']:.1f} answer tokens). Why candidate mode costs more: the answer is longer "
            f"({cs['out_row'] / max(ls['out_row'], 1e-9):.1f}x the tokens: a label and a list instead of one label), "
            "and on a CPU llama.cpp server every answer token is one full forward pass of the model plus a "
            "grammar-constrained sampling step, while the shared system prompt is mostly reused from the previous "
            "request's KV cache; so answer tokens, not prompt tokens, set the time per row. What it buys: a set that "
            f"keeps the right label for {st['coverage']:.0%} of rows, against {st['best label right']:.0%} "
            "for its best label."
        )
    else:
        lines[-1] += "."
    lines += [
        "",
        verdict(teacher, rows, n_test),
    ]
    if rows_curve:
        lines += [
            "",
            "What more rows would buy (tfidf student, same test questions): trained on gold labels, on labels "
            "drawn from this judge's label-mode confusion matrix measured on the train rows above (a simulation: "
            "real errors also depend on the text), and on the judge's real labels where it labeled that many.",
            "",
            "| training rows | student on gold labels | student on simulated teacher labels | student on the "
            "teacher's real labels |",
            "|---|---|---|---|",
        ]
        lines += [f"| {n:,} | {g:.3f} | {s:.3f} | {'' if r != r else f'{r:.3f}'} |" for n, g, s, r in rows_curve]
    lines += extra
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "benchmarks" / "results" / f"{a.name}.md").write_text(text)


if __name__ == "__main__":
    main()
