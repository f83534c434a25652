"""Turning the judges' answers into one label, a distribution and a confidence: per row while a job runs,
then over the whole job once it ends (weighted and Dawid-Skene need every row)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmlabel.llm.answers import JudgeAnswer


def judge_distribution(ans: JudgeAnswer, labels: list[str]) -> dict[str, float] | None:
    if ans.label is None:
        return None
    if ans.probs:
        return ans.probs
    return {ans.label: 1.0}


def combine_row(
    answers: dict[str, JudgeAnswer], labels: list[str], mode: str, weights: dict[str, float] | None = None
) -> dict[str, Any]:
    """A soft vote: each judge's distribution (its logprobs, or one-hot on its label), weighted."""
    mass = dict.fromkeys(labels, 0.0)
    total = 0.0
    cand_count = dict.fromkeys(labels, 0)
    n_sets = 0
    for name, ans in answers.items():
        dist = judge_distribution(ans, labels)
        if dist is None:
            continue
        w = (weights or {}).get(name, 1.0)
        for lab, p in dist.items():
            mass[lab] += w * p
        total += w
        if ans.candidates:
            n_sets += 1
            for c in ans.candidates:
                cand_count[c] += 1
    if total <= 0:
        errors = "; ".join(f"{n}: {a.error}" for n, a in answers.items() if a.error)
        return {
            "label": None,
            "confidence": None,
            "probs": None,
            "candidates": [],
            "error": f"no judge gave a valid answer ({errors})" if errors else "no judge answered",
        }
    probs = {lab: round(m / total, 4) for lab, m in mass.items()}
    label = max(labels, key=lambda lab: (mass[lab], -labels.index(lab)))
    if mode == "candidates" and n_sets:
        cands = [lab for lab in labels if cand_count[lab] * 2 >= n_sets] or [label]
        if label not in cands:
            cands.insert(0, label)
    else:
        cands = sorted((lab for lab in labels if mass[lab] > 0), key=lambda lab: -mass[lab])
    return {"label": label, "confidence": probs[label], "probs": probs, "candidates": cands, "error": None}


def refit(
    records: Callable[[], Any],
    judge_names: list[str],
    labels: list[str],
    method: str,
    mode: str,
    gold: dict[str, str] | None = None,
) -> tuple[Callable[[int, dict[str, Any]], dict[str, Any]] | None, dict[str, Any]]:
    """Fit weights or Dawid-Skene over every row; return a function that rewrites each row, and a summary."""
    if method not in ("weighted", "dawid_skene"):
        return None, {"method": method}  # majority is final per row: nothing to refit
    from array import array

    import numpy as np

    from llmlabel.ensemble import aggregate

    K, J = len(labels), len(judge_names)
    index = {lab: k for k, lab in enumerate(labels)}
    # Flat typed arrays (a few bytes a row), so memory stays flat for million-row jobs.
    flat_votes = array("h")
    flat_cands = array("b")
    gold_pos: dict[int, int] = {}
    n = 0
    for pos, rec in enumerate(records()):
        js = rec.get("judges") or {}
        for name in judge_names:
            a = js.get(name) or {}
            flat_votes.append(index.get(a.get("label"), -1))
            if mode == "candidates":
                cs = a.get("candidates") or []
                flat_cands.extend(1 if lab in cs else 0 for lab in labels)
        if gold and rec["id"] in gold and gold[rec["id"]] in index:
            gold_pos[pos] = index[gold[rec["id"]]]
        n += 1
    if not n:
        return None, {}
    votes = np.frombuffer(flat_votes, dtype=np.int16).reshape(n, J).astype(np.int64)
    summary: dict[str, Any] = {"method": method, "gold_rows": len(gold_pos)}
    if method == "dawid_skene":
        res = aggregate.dawid_skene(votes, K, gold=gold_pos or None)
        post = res.posteriors
        summary["judges"] = {
            name: {
                "accuracy": round(float(res.accuracies[j]), 4),
                "confusion": {
                    labels[t]: {labels[p]: round(float(res.confusions[j, t, p]), 4) for p in range(K)} for t in range(K)
                },
            }
            for j, name in enumerate(judge_names)
        }
        summary["priors"] = {labels[k]: round(float(res.priors[k]), 4) for k in range(K)}
    elif method == "weighted":
        w = aggregate.gold_weights(votes, K, gold_pos) if gold_pos else aggregate.agreement_weights(votes, K)
        post = aggregate.weighted(votes, K, w)
        summary["judges"] = {name: {"weight": round(float(w[j]), 4)} for j, name in enumerate(judge_names)}
    else:
        return None, summary
    cand_sets = (
        aggregate.aggregate_candidates(np.frombuffer(flat_cands, dtype=np.int8).reshape(n, J, K).astype(bool))
        if mode == "candidates"
        else None
    )

    def update(pos: int, rec: dict[str, Any]) -> dict[str, Any]:
        if rec.get("label") is None or (votes[pos] < 0).all():
            return rec
        p = post[pos]
        k = int(np.argmax(p))
        rec["label"] = labels[k]
        rec["confidence"] = round(float(p[k]), 4)
        rec["probs"] = {labels[i]: round(float(p[i]), 4) for i in range(K)}
        if cand_sets is not None:
            cs = [labels[i] for i in range(K) if cand_sets[pos, i]]
            rec["candidates"] = cs if labels[k] in cs else [labels[k]] + cs
        else:
            rec["candidates"] = [labels[i] for i in np.argsort(-p) if p[i] >= 0.01] or [labels[k]]
        return rec

    return update, summary
