"""Turning the judges' answers into one label, a distribution and a confidence: per row while a job runs,
then over the whole job once it ends (weighted and Dawid-Skene need every row).

How it differs from aggregate.py: aggregate.py is the math (vote arrays in, label distributions out, no notion
of a job); this module is its one caller in a job, from JudgeAnswers to output records (gold, priors, calibration,
candidate sets and label sets included)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmlabel.ensemble.calibration import calibrate_confidence
from llmlabel.ensemble.multilabel import SetPolicy, refit_sets
from llmlabel.ensemble.votes import Votes, none_uninformative
from llmlabel.llm.answers import JudgeAnswer
from llmlabel.llm.memo import Memo


def judge_distribution(ans: JudgeAnswer) -> dict[str, float] | None:
    """A judge's answer as a label distribution: its logprobs when it gave them; else, with a candidate set of
    m labels, 2/(m+1) on its chosen label and 1/(m+1) on each other candidate (a set of two is not
    certainty); else one-hot on its label."""
    if ans.label is None:
        return None
    if ans.probs:
        return ans.probs
    others = [c for c in ans.candidates or [] if c != ans.label]
    if others:
        m = len(others) + 1
        return {ans.label: 2 / (m + 1), **dict.fromkeys(others, 1 / (m + 1))}
    return {ans.label: 1.0}


def combine_row(
    answers: dict[str, JudgeAnswer], labels: list[str], mode: str, weights: dict[str, float] | None = None
) -> dict[str, Any]:
    """A soft vote: each judge's distribution (its logprobs, or one-hot on its label), weighted."""
    mass = dict.fromkeys(labels, 0.0)
    total = 0.0
    lead: str | None = None  # the first-listed judge with weight: ties go its way (config order is preference)
    cand_count = dict.fromkeys(labels, 0)
    n_sets = 0
    for name, ans in answers.items():
        dist = judge_distribution(ans)
        if dist is None:
            continue
        w = (weights or {}).get(name, 1.0)
        if lead is None and w > 0:
            lead = ans.label
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
    # The label: the highest mass (to 1e-9), ties to the lead judge's label, then to the first listed. Only
    # masses within 2e-9 of the highest can round to it, so the rest are not rounded; a zero mass is not
    # rounded either (round(0.0 / t, 4) is 0.0 / t). Same result; one judge's row 7.9 -> 5.7 us. (NaN masses: the
    # plain comparison, whose order-dependent answer must not change.)
    probs = {lab: round(m / total, 4) if m else m / total for lab, m in mass.items()}
    best, check = max(mass.values()), sum(mass.values())
    near = [lab for lab in labels if mass[lab] >= best - 2e-9] if check == check else []
    label = max(near or labels, key=lambda lab: (round(mass[lab], 9), lab == lead, -labels.index(lab)))
    if mode == "candidates" and n_sets:
        cands = [lab for lab in labels if cand_count[lab] * 2 >= n_sets] or [label]
        if label not in cands:
            cands.insert(0, label)
    else:
        cands = sorted((lab for lab in labels if mass[lab] > 0), key=lambda lab: -mass[lab])
    return {"label": label, "confidence": probs[label], "probs": probs, "candidates": cands, "error": None}


def combine_samples(samples: list[JudgeAnswer], labels: list[str]) -> JudgeAnswer:
    """Self-consistency: one judge's k sampled answers for a row as its one answer, by the same soft vote as
    judges (`combine_row`, each valid sample a voter of weight 1). Without logprobs the label is the most
    frequent sample label and probs are the vote shares, so confidence is the vote share; with logprobs,
    probs are the mean of the samples' distributions and the label its argmax. Ties go to the first valid
    sample's label, then to the task's label order. Failed samples are left out; only when every sample
    failed is the answer an error."""
    valid = {str(i): a for i, a in enumerate(samples) if a.label is not None}
    if not valid:
        first = next((a.error for a in samples if a.error), "no answer")
        return JudgeAnswer(error=f"all {len(samples)} samples failed ({first})")
    agg = combine_row(valid, labels, "label")
    return JudgeAnswer(label=agg["label"], probs=agg["probs"])


def _collect(
    records: Callable[[], Any], judge_names: list[str], labels: list[str], mode: str, gold: dict[str, str] | None
) -> tuple[Votes, Any, dict[int, int]]:
    """Votes as label codes (-1: none), candidate sets (n, J, K) or None, and gold row positions."""
    from array import array

    K, J = len(labels), len(judge_names)
    index: dict[Any, int] = {lab: k for k, lab in enumerate(labels)}
    votes = Votes(J)
    flat_cands = array("b")  # a typed array (a byte a label), so memory stays flat for million-row jobs
    gold_pos: dict[int, int] = {}
    # records() repeats one dict per distinct answer set (PartFile.judges_only): its codes are found once.
    # The memo holds each dict, so no other object can take its id while the entry lives.
    seen: Memo[int, tuple[Any, tuple[int, ...]]] = Memo(4096)
    for pos, rec in enumerate(records()):
        js = rec.get("judges") or {}
        hit = seen.get(id(js))
        if hit is None or hit[0] is not js:
            hit = seen.put(id(js), (js, tuple(index.get((js.get(n) or {}).get("label"), -1) for n in judge_names)))
        votes.add(hit[1])
        if mode == "candidates":
            answers = [js.get(name) or {} for name in judge_names]
            for a in answers:
                cs = a.get("candidates") or []
                flat_cands.extend(1 if lab in cs else 0 for lab in labels)
        if gold and rec["id"] in gold and gold[rec["id"]] in index:
            gold_pos[pos] = index[gold[rec["id"]]]
    if mode != "candidates":
        return votes, None, gold_pos
    import numpy as np

    return votes, np.frombuffer(flat_cands, dtype=np.int8).reshape(len(votes), J, K).astype(bool), gold_pos


def _fit(
    method: str,
    votes: Any,
    cand: Any,
    K: int,
    gold_pos: dict[int, int],
    keep: Any,
    judge_names: list[str],
    labels: list[str],
) -> tuple[Any, dict[str, Any]]:
    """Posteriors (n, K) from weighted or Dawid-Skene over the kept judges, and the per-judge summary.

    In candidate mode Dawid-Skene models the candidate sets themselves (candidates.dawid_skene_candidates): on
    the ensemble benchmark's TREC candidate run it labels 0.986 right against 0.94 for Dawid-Skene over the
    judges' single picks."""
    import numpy as np

    from llmlabel.ensemble import aggregate, candidates

    kept = np.where(keep[None, :], votes, -1)
    # Dawid-Skene cannot tell which of two judges errs when they disagree (its confusions are not
    # identified below three judges); without gold it then falls back to the weighted vote.
    if method == "dawid_skene" and (keep.sum() >= 3 or gold_pos):
        if cand is not None:
            sets = cand & keep[None, :, None]
            res = candidates.dawid_skene_candidates(sets, K, gold=gold_pos or None)
            coverage = {
                name: {"coverage": round(float(res.accuracies[j]), 4)} for j, name in enumerate(judge_names) if keep[j]
            }
            return res.posteriors, {
                "judges": coverage,
                "priors": {labels[k]: round(float(res.priors[k]), 4) for k in range(K)},
            }
        # Two pseudo-counts on each confusion diagonal: a small job cannot fit a label-swapped judge.
        res = aggregate.dawid_skene(kept, K, gold=gold_pos or None, diag_prior=2.0)
        judges: dict[str, dict[str, Any]] = {
            name: {
                "accuracy": round(float(res.accuracies[j]), 4),
                "confusion": {
                    labels[t]: {labels[p]: round(float(res.confusions[j, t, p]), 4) for p in range(K)} for t in range(K)
                },
            }
            for j, name in enumerate(judge_names)
        }
        return res.posteriors, {
            "judges": judges,
            "priors": {labels[k]: round(float(res.priors[k]), 4) for k in range(K)},
        }
    w = aggregate.gold_weights(kept, K, gold_pos) if gold_pos else aggregate.agreement_weights(kept, K)
    # Left-out judges weigh nothing; a hair more weight for earlier judges settles exact ties their way.
    w = np.where(keep, w + 1e-6 * (len(w) - np.arange(len(w))), 0.0)
    return aggregate.weighted(kept, K, w), {
        "judges": {n: {"weight": round(float(w[j]), 4)} for j, n in enumerate(judge_names)}
    }


def _refit(
    records: Callable[[], Any],
    judge_names: list[str],
    labels: list[str],
    method: str,
    mode: str,
    gold: dict[str, str] | None = None,
) -> tuple[Callable[[int, dict[str, Any]], dict[str, Any]] | None, dict[str, Any]]:
    """refit without the gold confidence calibration."""
    if method == "majority" and len(judge_names) < 2 and not gold:
        return None, {"method": method}  # one judge: its answers are the labels, nothing to weigh
    prior = _gold_prior(gold, labels)
    if prior:
        raw = records
        records = lambda: (_with_prior(rec, prior) for rec in raw())  # noqa: E731
    table, cand, gold_pos = _collect(records, judge_names, labels, mode, gold)
    n, K = len(table), len(labels)
    if not n:
        return None, {}
    summary: dict[str, Any] = {"method": method, "gold_rows": len(gold_pos)}
    if method == "majority" and not gold_pos and none_uninformative(table, K):
        return None, summary  # no judge to leave out: the per-row soft vote is final, and numpy is not needed
    import numpy as np

    from llmlabel.ensemble import aggregate, candidates, judges

    votes = table.matrix()
    keep = ~judges.uninformative(votes, K, gold_pos)
    if not keep.all():
        summary["left_out"] = [name for name, k in zip(judge_names, keep) if not k]
        # Rows that only left-out judges answered (a cascade stopped on them): no informative answer to vote.
        alone = int(((votes[:, keep] < 0).all(axis=1) & (votes >= 0).any(axis=1)).sum())
        if alone:
            summary["rows_only_left_out"] = alone
    if method == "majority" or (keep.sum() < 2 and not gold_pos):  # one judge left: nothing to weigh
        if keep.all() and not gold_pos:
            return None, summary  # the per-row soft vote is already final
        w = aggregate.gold_weights(votes, K, gold_pos) if gold_pos else np.ones(len(judge_names))
        weights = {name: float(w[j]) if keep[j] else 0.0 for j, name in enumerate(judge_names)}
        summary["judges"] = {name: {"weight": round(x, 4)} for name, x in weights.items()}

        def revote(pos: int, rec: dict[str, Any]) -> dict[str, Any]:
            if rec.get("label") is None:
                return rec
            # The judges' own answers stay as they were in the output; only the combined label uses the prior.
            seen = (_with_prior(rec, prior) if prior else rec).get("judges") or {}
            answers = {name: JudgeAnswer(**a) for name, a in seen.items()}
            return {**rec, **combine_row(answers, labels, mode, weights)}

        return revote, summary
    post, fitted = _fit(method, votes, cand, K, gold_pos, keep, judge_names, labels)
    summary.update(fitted)
    if method == "dawid_skene" and "priors" not in fitted:
        summary["fallback"] = "weighted: Dawid-Skene needs three informative judges or gold rows"
    cand_sets = candidates.aggregate_candidates(cand[:, keep]) if cand is not None else None

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


Update = Callable[[int, dict[str, Any]], dict[str, Any]]


def _gold_prior(gold: dict[str, str] | None, labels: list[str], min_rows: int = 10) -> dict[str, float] | None:
    """The label shares of the gold rows (add-one smoothed); None under ``min_rows`` gold rows."""
    counts = {lab: 1.0 for lab in labels}
    n = 0
    for lab in (gold or {}).values():
        if lab in counts:
            counts[lab] += 1
            n += 1
    if n < min_rows:
        return None
    total = sum(counts.values())
    return {lab: c / total for lab, c in counts.items()}


def _with_prior(rec: dict[str, Any], prior: dict[str, float]) -> dict[str, Any]:
    """The row with each judge's label distribution times the label prior (renormalized, label = argmax).

    Content-free calibration divides out the model's bias toward a label, and with it any prior: a calibrated
    distribution assumes balanced labels, so on SMS spam (87% ham) it pushed Qwen to "spam" (0.35 right on 20
    rows). The gold rows' label shares put the prior back (Bayes' rule: posterior ~ likelihood x prior).
    Judges without a distribution (plain JSON answers, which keep the model's own prior) are left as they are."""
    judges = {}
    for name, a in (rec.get("judges") or {}).items():
        p = a.get("probs") if isinstance(a, dict) else None
        if p and a.get("label"):
            q = {lab: float(p.get(lab, 0.0)) * prior[lab] for lab in prior}
            z = sum(q.values())
            if z > 0:
                q = {lab: round(v / z, 4) for lab, v in q.items()}
                a = {**a, "probs": q, "label": max(q, key=q.__getitem__)}
        judges[name] = a
    return {**rec, "judges": judges}


def _one_label(records: Callable[[], Any], judge_names: list[str], labels: list[str]) -> dict[str, Any]:
    """{"one_label": {judge, label, share, rows}} when the only judge answered one label to most rows
    (judges.one_label); {} otherwise. An ensemble leaves such a judge out; a single judge can only be named."""
    from llmlabel.ensemble import judges

    table = _collect(records, judge_names, labels, "label", None)[0]
    if not len(table):
        return {}
    votes = table.matrix()
    hits = judges.one_label(votes, len(labels))
    if not hits:
        return {}
    j, k, share = hits[0]
    rows = int((votes[:, j] >= 0).sum())
    return {"one_label": {"judge": judge_names[j], "label": labels[k], "share": round(share, 4), "rows": rows}}


def refit(
    records: Callable[[], Any],
    judge_names: list[str],
    labels: list[str],
    method: str,
    mode: str,
    gold: dict[str, str] | None = None,
    policy: SetPolicy | None = None,
) -> tuple[Update | None, dict[str, Any]]:
    """Fit over every row and return a function that rewrites each row, and a summary.

    Every method first leaves out judges that carry no information (judges.uninformative: one label to
    everything, or chance agreement), so a broken judge cannot drag the ensemble below its best member.
    weighted and dawid_skene then refit over the whole job; majority keeps its per-row soft vote, redone
    without the left-out judges (and weighted by gold accuracy when gold rows are given). With 20+ gold
    rows, confidences are then recalibrated on them (see calibrate_confidence). A multi-label job (mode
    "multilabel") is fitted label by label instead (ensemble/multilabel.py, with `policy`).
    """
    if mode == "taxonomy":  # each level was combined as it was asked; the next levels followed from it
        return None, {"method": "majority", "per_level": True}
    if mode == "multilabel":
        return refit_sets(records, judge_names, labels, method, policy or SetPolicy(), gold)
    update, summary = _refit(records, judge_names, labels, method, mode, gold)
    if len(judge_names) == 1 and len(labels) >= 3:
        summary = {**summary, **_one_label(records, judge_names, labels)}
    if not gold:
        return update, summary
    pairs = []
    for pos, rec in enumerate(records()):
        if rec["id"] in gold:
            rec = update(pos, rec) if update else rec
            if rec.get("confidence") is not None:
                pairs.append((float(rec["confidence"]), rec.get("label") == gold[rec["id"]]))
    cal = calibrate_confidence([c for c, _ in pairs], [ok for _, ok in pairs])
    if cal is None:
        return update, summary
    summary["confidence_calibrated_on"] = len(pairs)

    def calibrated(pos: int, rec: dict[str, Any]) -> dict[str, Any]:
        rec = update(pos, rec) if update else rec
        if rec.get("confidence") is not None:
            rec["confidence"] = round(cal(float(rec["confidence"])), 4)
        return rec

    return calibrated, summary
