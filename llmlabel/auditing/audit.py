"""Label audits: which given labels are most likely wrong, most suspicious first.

Two signals, combined into one posterior per row:

* the judges: Dawid-Skene over the judges' votes *and the given label*, treated as one more annotator.
  Its confusion matrices give each judge's reliability and the given labels' own noise model (per-class
  flip rates), and the posterior P(true = given | votes, given) is the judges' label-quality score;
* confident learning: a classifier on the distillation features, trained on the given labels, gives
  out-of-fold probabilities; cleanlab scores them (``get_label_quality_scores``, ``find_label_issues``).

``score`` = P(true = given) under a product of experts: the DS posterior times the classifier's
likelihood ratio p(k | text) / prior(k), raised to ``classifier_weight`` and renormalized. With the
self-confidence method, cleanlab's quality score of the given label is exactly that p(given | text).
Rows are flagged from the most suspicious down while the expected precision of the flagged set (the mean
of 1 - score, i.e. Bayesian FDR control) stays >= ``min_precision`` and each flagged row is more likely
wrong than right.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmlabel.config import Config
from llmlabel.errors import InputError
from llmlabel.io.rows import input_format, iter_rows, row_id

if TYPE_CHECKING:
    from llmlabel.pipeline.runner import RunOptions

__all__ = [
    "AuditOptions",
    "AuditResult",
    "Signals",
    "score_signals",
    "choose_flags",
    "audit_records",
    "check_given_labels",
    "run_audit",
    "gold_metrics",
    "export_labelstudio",
    "export_csv",
    "auroc",
]

PROB_FLOOR = 1e-4  # the classifier alone can never rule a class out: it is trained on noisy labels


@dataclass
class AuditOptions:
    label_column: str = "label"
    verify: bool = False  # ask through the verify prompt (the judges see the given label)
    min_precision: float = 0.8
    features: str = "tfidf"
    folds: int = 5
    classifier: bool = True
    classifier_weight: float = 1.0
    gold: str | None = None  # a file of id,label true labels: report metrics only, never used to fit
    max_cost: float | None = None
    max_requests: int | None = None
    progress: bool = True
    seed: int = 0
    run: RunOptions | None = (
        None  # RunOptions the judges' run starts from (a service's transport, progress callback, cancel)
    )


@dataclass
class Signals:
    """Per-row arrays from the two signals and their combination; (n, K) arrays are over task.labels."""

    judge_post: np.ndarray
    judge_score: np.ndarray
    post: np.ndarray
    score: np.ndarray
    judge_accuracy: np.ndarray  # per judge, then the given labels as the last entry
    given_confusion: np.ndarray  # (K, K) P(given = l | true = k), from Dawid-Skene
    clf_probs: np.ndarray | None = None
    cleanlab_score: np.ndarray | None = None
    cleanlab_issue: np.ndarray | None = None
    classifier_note: str | None = None


@dataclass
class AuditResult:
    output: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    complete: bool = False
    stopped_by: str | None = None
    ledger: Any = None
    warnings: list[str] = field(default_factory=list)


# -- the signals --------------------------------------------------------------------------------------------------


def _classifier_probs(
    texts: Sequence[str], given: np.ndarray, K: int, features: str, folds: int, seed: int
) -> tuple[np.ndarray | None, np.ndarray, str | None]:
    """Out-of-fold class probabilities (n, K) of a TF-IDF logistic regression, or None with the reason."""
    present, counts = np.unique(given, return_counts=True)
    if len(present) < 2:
        return None, present, "the given labels use a single class"
    k = int(min(folds, counts.min()))
    if k < 2 or len(given) < 10:
        return (
            None,
            present,
            f"too few rows per class for {folds}-fold cross-validation (smallest class: {counts.min()})",
        )
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    from llmlabel.distill.features import make_featurizer

    # The featurizer sits inside the pipeline so each fold fits its own vocabulary: no leak from held-out rows.
    pipe = make_pipeline(make_featurizer(features), LogisticRegression(C=10.0, max_iter=1000))
    from threadpoolctl import threadpool_limits

    # One BLAS thread: lbfgs on sparse TF-IDF is several times slower with oversubscribed BLAS threads.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        pp = cross_val_predict(
            pipe, list(texts), given, method="predict_proba", cv=StratifiedKFold(k, shuffle=True, random_state=seed)
        )
    full = np.zeros((len(given), K))
    full[:, present] = pp
    return full, present, None


def score_signals(
    votes: np.ndarray,
    given: np.ndarray,
    K: int,
    texts: Sequence[str] | None = None,
    features: str = "tfidf",
    folds: int = 5,
    classifier_weight: float = 1.0,
    seed: int = 0,
) -> Signals:
    """Both signals and their combination. votes: (n, J) class codes (-1 = no answer); given: (n,) codes."""
    from llmlabel.ensemble.aggregate import dawid_skene

    n = len(given)
    rows = np.arange(n)
    votes = np.asarray(votes, dtype=np.int64).reshape(n, -1)
    # The given label is one more annotator: DS then learns how noisy the given labels are, per class.
    ds = dawid_skene(np.column_stack([votes, given]), K)
    jpost = ds.posteriors
    sig = Signals(
        judge_post=jpost,
        judge_score=jpost[rows, given],
        post=jpost,
        score=jpost[rows, given],
        judge_accuracy=ds.accuracies,
        given_confusion=ds.confusions[-1],
    )
    if texts is None:
        sig.classifier_note = "disabled"
        return sig
    pp, present, note = _classifier_probs(texts, given, K, features, folds, seed)
    if pp is None:
        sig.classifier_note = note
        return sig
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    # cleanlab works on the classes that occur; codes are remapped to 0..len(present)-1.
    remap = np.full(K, -1)
    remap[present] = np.arange(len(present))
    compact = pp[:, present]
    compact = compact / compact.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sig.cleanlab_score = np.asarray(get_label_quality_scores(remap[given], compact), dtype=float)
        # n_jobs=1: cleanlab's default forks a process pool, which can deadlock a threaded process (the server)
        sig.cleanlab_issue = np.asarray(find_label_issues(remap[given], compact, n_jobs=1), dtype=bool)
    sig.clf_probs = pp
    prior = np.bincount(given, minlength=K) / n
    ratio = np.ones((n, K))
    ratio[:, present] = np.maximum(pp[:, present], PROB_FLOOR) / prior[present]
    logp = np.log(np.maximum(jpost, 1e-300)) + classifier_weight * np.log(ratio)
    post = np.exp(logp - logp.max(axis=1, keepdims=True))
    sig.post = post / post.sum(axis=1, keepdims=True)
    sig.score = sig.post[rows, given]
    return sig


def choose_flags(p_wrong_desc: np.ndarray, min_precision: float) -> tuple[int, float]:
    """How many of the rows (sorted by P(mislabeled), descending) to flag, and the set's expected precision.

    The largest prefix whose mean P(mislabeled) is >= min_precision, and no row in it more likely right
    than wrong (flagging near-certainly correct rows just to spend the precision budget helps nobody)."""
    p = np.asarray(p_wrong_desc, dtype=float)
    if not len(p):
        return 0, float("nan")
    prec = np.cumsum(p) / np.arange(1, len(p) + 1)
    ok = (prec >= min_precision - 1e-12) & (p >= 0.5)
    m = int(np.flatnonzero(ok).max()) + 1 if ok.any() else 0
    return m, float(prec[m - 1]) if m else float("nan")


def _ranks(score: np.ndarray) -> np.ndarray:
    """1 = most suspicious (lowest score); ties keep input order."""
    r = np.empty(len(score), dtype=np.int64)
    r[np.argsort(score, kind="stable")] = np.arange(1, len(score) + 1)
    return r


def _flags(score: np.ndarray, min_precision: float) -> tuple[np.ndarray, int, float]:
    order = np.argsort(score, kind="stable")
    m, prec = choose_flags(1.0 - score[order], min_precision)
    flag = np.zeros(len(score), dtype=bool)
    flag[order[:m]] = True
    return flag, m, prec


def auroc(score_of_positive: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `score_of_positive` for the boolean `positive` (ties count half)."""
    from scipy.stats import rankdata

    y = np.asarray(positive, dtype=bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if not npos or not nneg:
        return float("nan")
    r = rankdata(score_of_positive)
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


# -- rows in, records out -----------------------------------------------------------------------------------------


def check_given_labels(
    input_path: str | Path, cfg: Config, label_column: str
) -> tuple[list[str], list[str], np.ndarray]:
    """ids, texts and given-label codes of every row; a one-line error for labels outside the task's set."""
    from llmlabel.llm.prompts import row_text

    task = cfg.task
    labels = task.label_names
    index = {lab: k for k, lab in enumerate(labels)}
    ids: list[str] = []
    texts: list[str] = []
    codes: list[int] = []
    bad: Counter[str] = Counter()
    for i, row in enumerate(iter_rows(input_path)):
        if i == 0 and label_column not in row:
            cols = ", ".join(map(str, list(row)[:20]))
            raise InputError(f"{input_path}: no label column '{label_column}' (columns: {cols}); pass --label-column")
        v = row.get(label_column)
        lab = "" if v is None else str(v)
        if lab not in index:
            bad[lab] += 1
        codes.append(index.get(lab, -1))
        ids.append(row_id(row, task.id_column, i))
        texts.append(row_text(row, task, cfg.prompts_dir) or "")
    if bad:
        shown = ", ".join(f"{k!r} ({c} row{'s' if c > 1 else ''})" for k, c in bad.most_common(5))
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise InputError(
            f"{input_path}: {sum(bad.values())} rows have a '{label_column}' value outside task.labels: "
            f"{shown}{more}; they can't be audited: add those labels to task.labels in the config, "
            "or fix or remove those rows"
        )
    if not ids:
        raise InputError(f"{input_path} has no rows; give a file with at least one row")
    return ids, texts, np.asarray(codes, dtype=np.int64)


def _judge_answers(path: Path, ids: list[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Judge names (in first-seen order) and each row's record from the judges' output file."""
    names: dict[str, None] = {}
    recs: dict[str, dict[str, Any]] = {}
    for rec in iter_rows(path):
        recs[str(rec["id"])] = rec
        for n in rec.get("judges") or {}:
            names.setdefault(n, None)
    missing = [i for i in ids if i not in recs]
    if missing:
        raise InputError(
            f"{path}: no judge answers for {len(missing)} rows (e.g. id {missing[0]!r}); delete {path.name} and rerun"
        )
    return list(names), recs


def audit_records(
    ids: list[str],
    texts: list[str],
    given: np.ndarray,
    labels: list[str],
    sig: Signals,
    min_precision: float,
    judges: list[dict[str, Any]] | None = None,
    errors: list[str | None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Output records, most suspicious first, and the summary."""
    n, K = len(ids), len(labels)
    flag, m, est_prec = _flags(sig.score, min_precision)
    jflag, _, _ = _flags(sig.judge_score, min_precision)
    jrank = _ranks(sig.judge_score)
    crank = _ranks(sig.cleanlab_score) if sig.cleanlab_score is not None else None
    suggested = sig.post.argmax(axis=1)
    p_wrong = 1.0 - sig.score
    order = np.argsort(sig.score, kind="stable")
    recs: list[dict[str, Any]] = []
    for i in order:
        rec: dict[str, Any] = {
            "id": ids[i],
            "text": texts[i],
            "given_label": labels[given[i]],
            "suggested_label": labels[suggested[i]],
            "score": round(float(sig.score[i]), 6),
            "flagged": bool(flag[i]),
            "judge_score": round(float(sig.judge_score[i]), 6),
            "judge_rank": int(jrank[i]),
            "judge_flagged": bool(jflag[i]),
            "cleanlab_score": None if sig.cleanlab_score is None else round(float(sig.cleanlab_score[i]), 6),
            "cleanlab_rank": None if crank is None else int(crank[i]),
            "cleanlab_issue": None if sig.cleanlab_issue is None else bool(sig.cleanlab_issue[i]),
            "probs": {labels[k]: round(float(sig.post[i, k]), 4) for k in range(K)},
            "judges": (judges[i] if judges else {}),
        }
        if errors and errors[i]:
            rec["error"] = errors[i]
        recs.append(rec)
    per_class = {}
    for k, lab in enumerate(labels):
        rows_k = given == k
        nk = int(rows_k.sum())
        fixes = Counter(labels[s] for s in suggested[rows_k & flag])
        per_class[lab] = {
            "rows": nk,
            # Share of the rows given this label that are wrong (expected), and the DS flip rate of the true class.
            "est_noise_rate": round(float(p_wrong[rows_k].mean()), 4) if nk else None,
            "est_flip_rate": round(float(1.0 - sig.given_confusion[k, k]), 4),
            "flagged": int((rows_k & flag).sum()),
            "top_correction": fixes.most_common(1)[0][0] if fixes else None,
        }
    expected = float(p_wrong.sum())
    judge_names = list(judges[0]) if judges else []
    summary: dict[str, Any] = {
        "rows": n,
        "flagged": m,
        "min_precision": min_precision,
        "est_precision": None if not m else round(est_prec, 4),
        "est_recall": round(float(p_wrong[flag].sum() / expected), 4) if expected > 0 else None,
        "est_label_errors": round(expected, 1),
        "flag_score_threshold": round(float(sig.score[flag].max()), 6) if m else None,
        "est_given_label_accuracy": round(float(sig.judge_accuracy[-1]), 4),
        "judges": {name: {"accuracy": round(float(sig.judge_accuracy[j]), 4)} for j, name in enumerate(judge_names)},
        "per_class": per_class,
        "signals": {
            "judges_flagged": int(jflag.sum()),
            "cleanlab_issues": None if sig.cleanlab_issue is None else int(sig.cleanlab_issue.sum()),
            "classifier": sig.classifier_note or "tfidf logistic regression, out-of-fold",
        },
        "matrix": _matrix(given, suggested, labels),
    }
    return recs, summary


def _matrix(given: np.ndarray, suggested: np.ndarray, labels: list[str]) -> dict[str, dict[str, int]]:
    K = len(labels)
    c = np.bincount(given * K + suggested, minlength=K * K).reshape(K, K)
    return {labels[a]: {labels[b]: int(c[a, b]) for b in range(K)} for a in range(K)}


# -- gold corrections ---------------------------------------------------------------------------------------------


def read_gold(path: str | Path, id_column: str, label_column: str = "label") -> dict[str, str]:
    gold: dict[str, str] = {}
    for i, row in enumerate(iter_rows(path)):
        if i == 0 and label_column not in row:
            raise InputError(f"{path}: no '{label_column}' column; a gold file has {id_column},{label_column} columns")
        v = row.get(label_column)
        if v not in (None, ""):
            gold[row_id(row, id_column, i)] = str(v)
    return gold


def gold_metrics(records: list[dict[str, Any]], gold: dict[str, str]) -> dict[str, Any] | None:
    """With true labels for some rows: AUROC of each signal, precision/recall of the flags, and precision
    against the number reviewed (records in output order, only rows with a gold label)."""
    rows = [r for r in records if r["id"] in gold]
    if not rows:
        return None
    wrong = np.array([gold[r["id"]] != r["given_label"] for r in rows])
    out: dict[str, Any] = {"rows": len(rows), "label_errors": int(wrong.sum())}

    def pr(mask: np.ndarray) -> dict[str, float | int | None]:
        tp = int((mask & wrong).sum())
        return {
            "flagged": int(mask.sum()),
            "precision": round(float(tp / mask.sum()), 4) if mask.any() else None,
            "recall": round(float(tp / wrong.sum()), 4) if wrong.any() else None,
        }

    sigs = {
        "combined": ("score", "flagged"),
        "judges": ("judge_score", "judge_flagged"),
        "cleanlab": ("cleanlab_score", "cleanlab_issue"),
    }
    for name, (sk, fk) in sigs.items():
        if rows[0].get(sk) is None:
            continue
        s = np.array([r[sk] for r in rows], dtype=float)
        out[name] = {"auroc": round(auroc(-s, wrong), 4), **pr(np.array([bool(r[fk]) for r in rows]))}
    out["corrected_ok"] = int(
        sum(1 for r, w in zip(rows, wrong) if r["flagged"] and w and r["suggested_label"] == gold[r["id"]])
    )
    hits = np.cumsum(wrong)
    out["precision_at"] = [round(float(h / (k + 1)), 4) for k, h in enumerate(hits)]
    return out


# -- exports ------------------------------------------------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def export_labelstudio(
    path: str | Path, records: list[dict[str, Any]], from_name: str = "label", to_name: str = "text"
) -> int:
    """Flagged rows as Label Studio tasks: data (text, given label, row id) and one prediction, the suggested
    label. Import with a labeling config like <Choices name="label" toName="text"> over <Text name="text" value="$text"/>."""
    tasks = []
    for r in records:
        if not r["flagged"]:
            continue
        tasks.append(
            {
                "data": {"text": r["text"], "given_label": r["given_label"], "row_id": r["id"], "score": r["score"]},
                "predictions": [
                    {
                        "model_version": "llmlabel-audit",
                        "score": round(1.0 - r["score"], 6),
                        "result": [
                            {
                                "from_name": from_name,
                                "to_name": to_name,
                                "type": "choices",
                                "value": {"choices": [r["suggested_label"]]},
                            }
                        ],
                    }
                ],
            }
        )
    _atomic_write(Path(path), json.dumps(tasks, ensure_ascii=False, indent=1))
    return len(tasks)


def export_csv(path: str | Path, records: list[dict[str, Any]]) -> int:
    """Flagged rows as a review sheet: an empty `corrected_label` column for the reviewer to fill."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "text", "given_label", "suggested_label", "score", "votes", "corrected_label"])
    n = 0
    for r in records:
        if not r["flagged"]:
            continue
        votes = "; ".join(f"{j}={a.get('label')}" for j, a in (r.get("judges") or {}).items())
        w.writerow([r["id"], r["text"], r["given_label"], r["suggested_label"], r["score"], votes, ""])
        n += 1
    _atomic_write(Path(path), buf.getvalue())
    return n


# -- the whole audit ----------------------------------------------------------------------------------------------


def judges_path(output: Path) -> Path:
    return output.with_name(output.name + ".judges.jsonl")


def summary_path(output: Path) -> Path:
    return output.with_name(output.name + ".summary.json")


def run_audit(
    cfg: Config, input_path: str | Path, output_path: str | Path, opts: AuditOptions | None = None
) -> AuditResult:
    """Ask the judges (resumable, cached: run_job into OUTPUT.judges.jsonl), score, write OUTPUT and its summary."""
    from llmlabel.io.output import write_output
    from llmlabel.pipeline.runner import RunOptions, run_job

    opts = opts or AuditOptions()
    input_path, output_path = Path(input_path), Path(output_path)
    input_format(output_path, "output")
    if output_path.resolve() == input_path.resolve():
        raise InputError(f"the output {output_path} is the input file; choose another -o path")
    if not 0.0 < opts.min_precision <= 1.0:
        raise InputError(f"--min-precision {opts.min_precision} must be in (0, 1]")
    gold = read_gold(opts.gold, cfg.task.id_column) if opts.gold else None
    labels = cfg.task.label_names
    # Every given label is checked before any paid call: out-of-set labels stop the audit with no output.
    ids, texts, given = check_given_labels(input_path, cfg, opts.label_column)
    jpath = judges_path(output_path)
    res = run_job(
        cfg,
        input_path,
        jpath,
        dataclasses.replace(
            opts.run or RunOptions(),
            kind="verify" if opts.verify else "label",
            given_label_column=opts.label_column,
            max_cost=opts.max_cost,
            max_requests=opts.max_requests,
            progress=opts.progress,
        ),
    )
    result = AuditResult(output_path, ledger=res.ledger, warnings=list(res.warnings))
    if not res.complete:
        result.stopped_by = res.stopped_by
        return result
    names, by_id = _judge_answers(jpath, ids)
    index = {lab: k for k, lab in enumerate(labels)}
    votes = np.full((len(ids), max(len(names), 1)), -1, dtype=np.int64)
    answers: list[dict[str, Any]] = []
    errors: list[str | None] = []
    for i, rid in enumerate(ids):
        js = by_id[rid].get("judges") or {}
        answers.append({n: js.get(n) or {} for n in names})
        errors.append(by_id[rid].get("error"))
        for j, n in enumerate(names):
            votes[i, j] = index.get((js.get(n) or {}).get("label"), -1)
    if not names:
        votes = votes[:, :0]
    sig = score_signals(
        votes,
        given,
        len(labels),
        texts if opts.classifier else None,
        features=opts.features,
        folds=opts.folds,
        classifier_weight=opts.classifier_weight,
        seed=opts.seed,
    )
    records, summary = audit_records(ids, texts, given, labels, sig, opts.min_precision, answers, errors)
    summary["prompt"] = "verify" if opts.verify else "label"
    summary["input"] = str(input_path)
    if gold is not None:
        summary["gold"] = gold_metrics(records, gold)
    write_output(output_path, records)
    _atomic_write(summary_path(output_path), json.dumps(summary, indent=2, ensure_ascii=False))
    result.records, result.summary, result.complete = records, summary, True
    return result


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A few human lines for stderr."""
    out = []
    s = summary
    prec = f", estimated precision {s['est_precision']:.2f}" if s.get("est_precision") is not None else ""
    rec = f", estimated recall {s['est_recall']:.2f}" if s.get("est_recall") is not None else ""
    out.append(
        f"flagged {s['flagged']} of {s['rows']} rows{prec}{rec} (target precision {s['min_precision']}); "
        f"estimated label errors in the file: {s['est_label_errors']:.0f}"
    )
    if s.get("judges"):
        out.append(
            "judges (estimated accuracy): "
            + ", ".join(f"{n} {v['accuracy']:.3f}" for n, v in s["judges"].items())
            + f"; given labels {s['est_given_label_accuracy']:.3f}"
        )
    noisy = sorted(((v["est_noise_rate"] or 0, k) for k, v in s["per_class"].items()), reverse=True)[:5]
    out.append("estimated noise rate by given label: " + ", ".join(f"{k} {r:.1%}" for r, k in noisy))
    g = s.get("gold")
    if g:
        parts = [
            f"{name}: AUROC {g[name]['auroc']:.3f}, precision {g[name]['precision']}, recall {g[name]['recall']}"
            for name in ("combined", "judges", "cleanlab")
            if name in g
        ]
        out.append(f"against {g['rows']} gold rows ({g['label_errors']} label errors): " + "; ".join(parts))
    return out
