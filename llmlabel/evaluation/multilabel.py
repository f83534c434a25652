"""Scoring a multi-label output (rows with a `labels` set) against gold label sets ("a|b" in the gold column).

Set metrics: micro-F1 (every (row, label) decision pooled: dominated by frequent labels), macro-F1 (the mean
of each label's F1: rare labels count as much as frequent ones), Hamming loss (the share of (row, label)
decisions that are wrong), subset accuracy (rows whose whole set is exactly right). Calibration is per label:
a label's probability against whether it is in the gold set, ECE over every (row, label) pair and for each
label; and the same set metrics for each judge's own answers."""

from __future__ import annotations

from typing import Any

import numpy as np

from llmlabel.ensemble.multilabel import split
from llmlabel.evaluation import metrics
from llmlabel.io.values import json_field
from llmlabel.results import RowResult


def label_set(value: Any) -> list[str]:
    """A label set as every multi-label reader takes it: a list (JSONL, Parquet, a DataFrame cell), a JSON list
    in a text cell (a CSV output's `labels`), or labels joined by "|" (a `label` column, a gold file)."""
    v = json_field(value)
    if isinstance(v, tuple) or (not isinstance(v, (str, list)) and hasattr(v, "tolist")):
        v = list(v.tolist() if hasattr(v, "tolist") else v)  # a numpy array from pandas or Parquet
    return split(v)


def set_scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """micro/macro F1, Hamming loss and subset accuracy of boolean (n, K) matrices."""
    from sklearn.metrics import f1_score

    return {
        "micro_f1": round(float(f1_score(truth, pred, average="micro", zero_division=0)), 6),
        "macro_f1": round(float(f1_score(truth, pred, average="macro", zero_division=0)), 6),
        "hamming_loss": round(float((truth != pred).mean()), 6),
        "subset_accuracy": round(float((truth == pred).all(axis=1).mean()), 6),
    }


def evaluate_sets(rows: list[RowResult], gold: dict[str, str], labels: list[str]) -> dict[str, Any]:
    """The multi-label report for output `rows` (read by io.records.read_results) against `gold` (id -> "a|b")."""
    ids, truth_sets, pred_sets, probs, judges = [], [], [], [], []
    for r in rows:
        if r.id not in gold:
            continue
        ids.append(r.id)
        truth_sets.append(set(label_set(gold[r.id])))
        pred_sets.append(set(split(list(r.labels or ()))))
        probs.append(r.probs or {})
        judges.append(r.judges)
    seen = set(labels)
    labels = labels + sorted({lab for s in truth_sets + pred_sets for lab in s} - seen)
    K, n = len(labels), len(ids)
    truth = np.array([[lab in s for lab in labels] for s in truth_sets], dtype=bool).reshape(n, K)
    pred = np.array([[lab in s for lab in labels] for s in pred_sets], dtype=bool).reshape(n, K)
    report: dict[str, Any] = {
        "multi_label": True,
        "rows_evaluated": n,
        "labels_per_row_gold": round(float(truth.sum(1).mean()), 4) if n else None,
    }
    report["labels_per_row_output"] = round(float(pred.sum(1).mean()), 4) if n else None
    report.update(set_scores(truth, pred))
    per_label = {}
    for k, lab in enumerate(labels):
        t, q = truth[:, k], pred[:, k]
        tp = int((t & q).sum())
        prec = tp / q.sum() if q.sum() else float("nan")
        rec_ = tp / t.sum() if t.sum() else float("nan")
        f1 = 2 * tp / (q.sum() + t.sum()) if (q.sum() + t.sum()) else float("nan")
        per_label[lab] = {
            "support": int(t.sum()),
            "predicted": int(q.sum()),
            "precision": _round(prec),
            "recall": _round(rec_),
            "f1": _round(f1),
        }
    report["per_label"] = per_label
    if any(probs):
        P = np.array([[float(p.get(lab, 0.0) or 0.0) for lab in labels] for p in probs]).reshape(n, K)
        report["calibration"] = {
            "ece_pairs": _round(metrics.expected_calibration_error(P.ravel(), truth.ravel())),
            "ece_per_label": {
                lab: _round(metrics.expected_calibration_error(P[:, k], truth[:, k]))
                for k, lab in enumerate(labels)
                if truth[:, k].any()
            },
        }
    names = sorted({name for js in judges for name in js})
    per_judge = {}
    for name in names:
        sets = [None if (a := js.get(name)) is None else a.labels for js in judges]
        keep = [i for i, s in enumerate(sets) if s is not None]
        if not keep:
            continue
        jp = np.array([[lab in (sets[i] or ()) for lab in labels] for i in keep], dtype=bool)
        per_judge[name] = {"rows": len(keep), **set_scores(truth[keep], jp)}
    if per_judge:
        report["judges"] = per_judge
    return report


def _round(x: float) -> float | None:
    return None if x != x else round(float(x), 6)  # nan (no support) -> null


def format_sets(rep: dict[str, Any]) -> list[str]:
    """The report's lines for a terminal."""
    out = [
        f"rows evaluated: {rep['rows_evaluated']}  (labels a row: gold {rep['labels_per_row_gold']}, "
        f"output {rep['labels_per_row_output']})",
        f"micro-F1 {rep['micro_f1']:.4f}  macro-F1 {rep['macro_f1']:.4f}  Hamming loss {rep['hamming_loss']:.4f}  "
        f"subset accuracy {rep['subset_accuracy']:.4f}",
    ]
    if "calibration" in rep and rep["calibration"]["ece_pairs"] is not None:
        out.append(f"calibration: ECE over (row, label) pairs {rep['calibration']['ece_pairs']:.4f}")
    for name, j in (rep.get("judges") or {}).items():
        out.append(f"judge {name}: micro-F1 {j['micro_f1']:.4f}  macro-F1 {j['macro_f1']:.4f}  ({j['rows']} rows)")
    return out
