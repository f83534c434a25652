"""Scoring a labeled output against gold labels: accuracy, per-judge accuracy, agreement, candidate sets,
calibration and cost per correct label."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmlabel.errors import InputError
from llmlabel.evaluation import metrics, multilabel, taxonomy
from llmlabel.io.gold import read_gold
from llmlabel.io.ledger_file import read_ledger
from llmlabel.io.paths import eval_path, ledger_path
from llmlabel.io.records import read_results
from llmlabel.results import MULTILABEL, TAXONOMY, JudgeAnswer, RowResult

__all__ = ["eval_path", "evaluate", "format_report"]

NONE = "\x00none"  # prediction code for rows without a label: counts as wrong, never as a real class


def _none_if_nan(x: float | None) -> float | None:
    # JSON has no nan/inf: an undefined metric (or no correct label to divide by) is null.
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def _last_run(ledger: dict[str, Any] | None) -> dict[str, Any]:
    """The run that wrote the output: the last one that ended (runs killed since then are listed after it)."""
    runs = (ledger or {}).get("runs")
    ended = (
        [r for r in runs if isinstance(r, dict) and r.get("state") != "interrupted"] if isinstance(runs, list) else []
    )
    return ended[-1] if ended else {}


def _load_ledger(output: Path) -> dict[str, Any] | None:
    return read_ledger(ledger_path(output))  # (with the runs only its log holds: killed ones included)


# Accuracy targets for the risk-coverage report: the confidence threshold that reaches each, and its coverage.
TARGETS = (0.8, 0.9, 0.95)


@dataclass
class _Rows:
    """What `evaluate` reads from an output file, for the rows that have a gold label."""

    n_output: int = 0
    ids: list[str] = field(default_factory=list)
    y_true: list[str] = field(default_factory=list)
    y_pred: list[str] = field(default_factory=list)
    conf: list[float | None] = field(default_factory=list)
    cands: list[list[str]] = field(default_factory=list)
    judge_votes: dict[str, list[str | None]] = field(default_factory=dict)
    judge_cands: dict[str, list[list[str] | None]] = field(default_factory=dict)
    label_order: list[str] = field(default_factory=list)

    def add_judges(self, judges: Mapping[str, JudgeAnswer]) -> None:
        row = len(self.ids) - 1
        for name, ans in judges.items():
            if name not in self.judge_votes:  # a judge first seen late: earlier rows had no answer from it
                self.judge_votes[name] = [None] * row
                self.judge_cands[name] = [None] * row
            self.judge_votes[name].append(ans.label)
            self.judge_cands[name].append(ans.candidates)
        for name in self.judge_votes:  # judges absent from this row (a cascade stopped early)
            if len(self.judge_votes[name]) <= row:
                self.judge_votes[name].append(None)
                self.judge_cands[name].append(None)


def _read(results: Iterable[RowResult], gold: dict[str, str]) -> _Rows:
    rows = _Rows()
    for r in results:
        rows.n_output += 1
        if not rows.label_order and r.probs is not None:
            rows.label_order = list(r.probs)  # the config's label order
        if r.id not in gold:
            continue
        rows.ids.append(r.id)
        rows.y_true.append(gold[r.id])
        rows.y_pred.append(NONE if r.label is None else r.label)
        rows.conf.append(r.confidence)
        rows.cands.append(list(r.candidates))
        rows.add_judges(r.judges)
    return rows


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _amount(v: Any) -> float | None:
    """A cost or count from the ledger file (written by llmlabel, but a file): a finite number >= 0, else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        return None
    return float(v)


def evaluate(
    output: str | Path, gold_path: str | Path, label_column: str = "label", id_column: str = "id"
) -> dict[str, Any]:
    """The evaluation report as a JSON-ready dict (nan metrics become null)."""
    out = Path(output)
    if not out.is_file():
        raise InputError(f"output file {out} not found; pass the file written by `llmlabel label`")
    results = read_results(out)
    first = next(results, None)
    if (
        first is not None and first.kind == TAXONOMY and first.path is not None
    ):  # gold paths: label_l1, label_l2, ... or a path
        return taxonomy.evaluate_paths(out, gold_path, id_column, label_column, _chain(first, results))
    gold = read_gold(gold_path, id_column, label_column)
    numbered = gold.numbered
    if not gold:
        raise InputError(f"gold file {gold_path} has no non-empty '{label_column}' values; pass --label-column")
    if first is not None and first.kind == MULTILABEL and first.labels is not None:
        return _evaluate_sets(out, gold, gold_path, label_column, first, _chain(first, results))
    rows = _read(() if first is None else _chain(first, results), gold)
    n = len(rows.ids)
    if n == 0:
        hint = (
            f" (the gold file has no '{id_column}' column, so its rows were numbered from 0; pass --id-column)"
            if numbered
            else "; check --id-column"
        )
        raise InputError(f"no ids in common between {out} and {gold_path}{hint}")
    # Label index: config order first, then anything else seen in gold or answers.
    seen = set(rows.label_order)
    extra = sorted({x for x in rows.y_true + [p for p in rows.y_pred if p != NONE]} - seen)
    labels = rows.label_order + extra
    index = {lab: k for k, lab in enumerate(labels)}
    t = np.array(rows.y_true, dtype=object)
    p = np.array(rows.y_pred, dtype=object)
    correct = t == p
    labeled = p != NONE
    report: dict[str, Any] = {
        "output": str(out),
        "gold": str(gold_path),
        "label_column": label_column,
        "rows_output": rows.n_output,
        "rows_gold": len(gold),
        "rows_evaluated": n,
        "rows_unlabeled": int((~labeled).sum()),
        "accuracy": _none_if_nan(metrics.accuracy(t, p)),  # unlabeled rows count as wrong
        "macro_f1": _none_if_nan(metrics.macro_f1(t, p, labels=labels)),
        "correct": int(correct.sum()),
    }
    if labeled.any():
        report["accuracy_labeled"] = _none_if_nan(metrics.accuracy(t[labeled], p[labeled]))
    report["per_label"] = _per_label(t, p, labels)
    ledger = _load_ledger(out)
    report.update(_judges(rows, t, index, ledger))
    if (sets := _candidate_sets(rows)) is not None:
        report["candidates"] = _cand_metrics(sets, rows.y_true, index, len(labels))
    if cal := _calibration(rows.conf, correct):
        report["calibration"] = cal
    if ledger is not None:
        report["cost"] = _cost(ledger, n, rows.n_output, int(correct.sum()))
    return report


def _candidate_sets(rows: _Rows) -> list[list[str]] | None:
    """The rows' candidate sets, where there are any: the output's sets when a judge answered sets (candidates
    mode); with two judges or more in label mode, the labels the judges gave; else None. A one-judge label-mode
    output's `candidates` lists every label with any probability, which is no set to score (issue 29: "coverage
    0.88, mean set size 3.5" for a single logprob judge)."""
    if any(c is not None for cs in rows.judge_cands.values() for c in cs):
        return rows.cands
    if len(rows.judge_votes) < 2:
        return None
    votes = list(rows.judge_votes.values())
    return [sorted({str(v[r]) for v in votes if v[r] is not None}) for r in range(len(rows.ids))]


def _chain(first: RowResult, rest: Iterator[RowResult]) -> Iterator[RowResult]:
    yield first
    yield from rest


def _evaluate_sets(
    out: Path,
    gold: dict[str, str],
    gold_path: str | Path,
    label_column: str,
    first: RowResult,
    results: Iterable[RowResult],
) -> dict[str, Any]:
    """A multi-label output's report (evaluation/multilabel.py)."""
    rows = list(results)
    order = list(first.probs or ())
    rep = {"output": str(out), "gold": str(gold_path), "label_column": label_column, "rows_output": len(rows)}
    rep["rows_gold"] = len(gold)
    rep.update(multilabel.evaluate_sets(rows, gold, order))
    if not rep["rows_evaluated"]:
        raise InputError(f"no ids in common between {out} and {gold_path}; check --id-column")
    return rep


def _per_label(t: np.ndarray, p: np.ndarray, labels: list[str]) -> dict[str, Any]:
    from sklearn.metrics import precision_recall_fscore_support

    pr, rc, f1, sup = precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    return {
        lab: {
            "gold": int(sup[k]),
            "predicted": int((p == lab).sum()),
            "precision": round(float(pr[k]), 4),
            "recall": round(float(rc[k]), 4),
            "f1": round(float(f1[k]), 4),
        }
        for k, lab in enumerate(labels)
    }


def _judges(rows: _Rows, t: np.ndarray, index: dict[str, int], ledger: dict[str, Any] | None) -> dict[str, Any]:
    """Per judge: accuracy over the rows it answered (a cascade's later judges see the hard rows only)."""
    quality = _dict(_last_run(ledger).get("quality"))
    est = _dict(quality.get("judges"))
    K = len(index)
    per_judge: dict[str, Any] = {}
    votes = np.full((len(t), len(rows.judge_votes)), -1, dtype=np.int64)
    for j, (name, vs) in enumerate(rows.judge_votes.items()):
        va = np.array([NONE if v is None else str(v) for v in vs], dtype=object)
        ans = va != NONE
        for r in np.flatnonzero(ans):
            votes[r, j] = index.get(va[r], -1)
        d: dict[str, Any] = {
            "answered": int(ans.sum()),
            "accuracy": _none_if_nan(metrics.accuracy(t[ans], va[ans])) if ans.any() else None,
        }
        acc = est[name].get("accuracy") if isinstance(est.get(name), dict) else None
        if _amount(acc) is not None:
            d["estimated_accuracy"] = acc  # what Dawid-Skene inferred without gold
        if name in (quality.get("left_out") or []):
            d["left_out"] = True  # the aggregation found it uninformative
        jc = rows.judge_cands[name]
        has = [r for r, c in enumerate(jc) if c is not None]
        if has:
            d["candidates"] = _cand_metrics([jc[r] or [] for r in has], [rows.y_true[r] for r in has], index, K)
        per_judge[name] = d
    many = len(rows.judge_votes) >= 2
    agreement = {
        "judges": len(rows.judge_votes),
        "rows_with_2_answers": int(((votes >= 0).sum(axis=1) >= 2).sum()),
        "fleiss_kappa": _none_if_nan(metrics.fleiss_kappa(votes, K)) if many else None,
        "krippendorff_alpha": _none_if_nan(metrics.krippendorff_alpha_nominal(votes, K)) if many else None,
    }
    return {"judges": per_judge, "agreement": agreement}


def _calibration(conf: list[float | None], correct: np.ndarray) -> dict[str, Any] | None:
    """ECE, and for each target accuracy the confidence threshold that reaches it and the share of rows kept."""
    has = np.array([c is not None for c in conf], dtype=bool)
    if not has.any():
        return None
    cv = np.array([c for c in conf if c is not None], dtype=np.float64)
    ok = correct[has]
    return {
        "rows": int(has.sum()),
        "mean_confidence": round(float(cv.mean()), 6),
        "ece": _none_if_nan(metrics.expected_calibration_error(cv, ok)),
        "selective": [
            {k: (None if v is None else round(float(v), 4)) for k, v in metrics.selective_threshold(cv, ok, tg).items()}
            for tg in TARGETS
        ],
    }


def _cost(ledger: dict[str, Any], n: int, n_output: int, n_correct: int) -> dict[str, Any]:
    total = _dict(ledger.get("total"))
    runs = [r for r in ledger.get("runs") or [] if isinstance(r, dict)] if isinstance(ledger.get("runs"), list) else []
    cost = _amount(total["cost"]) if "cost" in total else _amount(sum(_amount(r.get("cost", 0.0)) or 0.0 for r in runs))
    requests = _amount(total.get("requests", 0))
    # The ledger covers every output row; charge the evaluated rows their share when gold covers fewer.
    share = n / n_output if n_output else 1.0
    out: dict[str, Any] = {
        "total": None if cost is None else round(cost, 6),  # None: the ledger's figure is not a number
        "requests": None if requests is None else int(requests),
        "evaluated_share": round(share, 6),
        "per_correct": None if cost is None else _none_if_nan(metrics.cost_per_correct(cost * share, n_correct)),
    }
    judges = _dict(_last_run(ledger).get("judges"))
    saved = {n: j["calls_saved"] for n, j in judges.items() if isinstance(j, dict) and _amount(j.get("calls_saved"))}
    if saved:
        out["calls_saved_last_run"] = saved
    return out


def _cand_metrics(sets: list[list[str]], gold: list[str], index: dict[str, int], K: int) -> dict[str, Any]:
    # Gold labels outside the label set get their own column, so a set can never cover them.
    S = np.zeros((len(sets), K + 1), dtype=bool)
    for r, s in enumerate(sets):
        for lab in s:
            if lab in index:
                S[r, index[lab]] = True
    g = np.array([index.get(x, K) for x in gold], dtype=np.int64)
    m = metrics.candidate_metrics(S, g)
    return {"rows": len(sets), **{k: _none_if_nan(v) for k, v in m.items()}}


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def format_report(rep: dict[str, Any]) -> str:
    """A plain-text summary of `evaluate`'s dict."""
    if rep.get("taxonomy"):
        return "\n".join(
            [f"evaluated {rep['rows_evaluated']} of {rep['rows_output']} output rows against {rep['gold']}"]
            + ["  " + x for x in taxonomy.format_paths(rep)]
        )
    if rep.get("multi_label"):
        return "\n".join(
            [f"evaluated {rep['rows_evaluated']} of {rep['rows_output']} output rows against {rep['gold']}"]
            + ["  " + x for x in multilabel.format_sets(rep)]
        )
    lines = [
        f"evaluated {rep['rows_evaluated']} of {rep['rows_output']} output rows against {rep['gold']}"
        + (f" ({rep['rows_unlabeled']} without a label, counted wrong)" if rep["rows_unlabeled"] else ""),
        f"  accuracy   {_fmt(rep['accuracy'])}  ({rep['correct']} correct)",
        f"  macro-F1   {_fmt(rep['macro_f1'])}",
    ]
    if rep.get("calibration"):
        c = rep["calibration"]
        lines.append(f"  ECE        {_fmt(c['ece'])}  (mean confidence {_fmt(c['mean_confidence'])})")
        for sel in c.get("selective") or []:
            if sel["threshold"] is None:
                lines.append(f"  accuracy >= {sel['target']:.2f}: no confidence threshold reaches it")
            else:
                lines.append(
                    f"  accuracy >= {sel['target']:.2f}: keep confidence >= {sel['threshold']:.4f}, "
                    f"{sel['coverage']:.0%} of rows (accuracy {sel['accuracy']:.4f})"
                )
    if rep.get("candidates"):
        c = rep["candidates"]
        lines.append(
            f"  candidates coverage {_fmt(c['coverage'])}, mean set size {_fmt(c['mean_set_size'])}, "
            f"beta {_fmt(c['beta'])}, candidate F1 {_fmt(c['candidate_f1'])}"
        )
    if rep.get("cost"):
        c = rep["cost"]
        per = "n/a" if c["per_correct"] is None else f"${c['per_correct']:.3g}"
        total = "n/a (the ledger's figure is not a number)" if c["total"] is None else f"${c['total']:.4f}"
        lines.append(f"  cost       {total} over {c['requests']} requests; {per} per correct label")
    if rep["judges"]:
        lines.append("judges:")
        w = max(len(n) for n in rep["judges"])
        for name, d in rep["judges"].items():
            s = f"  {name.ljust(w)}  accuracy {_fmt(d['accuracy'])} on {d['answered']} rows"
            if "estimated_accuracy" in d:
                s += f" (estimated {_fmt(float(d['estimated_accuracy']))})"
            if d.get("left_out"):
                s += "; left out of the aggregate (uninformative)"
            if "candidates" in d:
                s += (
                    f"; candidates coverage {_fmt(d['candidates']['coverage'])}, "
                    f"size {_fmt(d['candidates']['mean_set_size'])}"
                )
            lines.append(s)
        a = rep["agreement"]
        if a["judges"] >= 2:
            lines.append(
                f"  agreement: Fleiss' kappa {_fmt(a['fleiss_kappa'])}, "
                f"Krippendorff's alpha {_fmt(a['krippendorff_alpha'])}"
            )
    lines.append(
        "per label:  " + ", ".join(f"{lab} F1 {d['f1']:.3f} (n={d['gold']})" for lab, d in rep["per_label"].items())
    )
    return "\n".join(lines)
