"""Multi-label aggregation: each judge answers a set of labels, and each label is decided on its own.

A label's probability for a row is the judges' (weighted) vote for it: the share of judges whose set holds it.
Over a whole job, `weighted` and `dawid_skene` treat each label as its own binary problem (is it in the row's
set or not): Dawid-Skene learns, per label and per judge, how often the judge names the label when it applies
and when it does not, which is what separates a judge that over-tags a frequent label from one that misses a
rare one. A label is kept at `threshold` or above; with gold rows each label's threshold is the one that
maximises that label's F1 on them. The row's label set is never empty unless the task allows it (then the
likeliest label is kept). Its confidence is the probability that the whole set is right, reading the labels
as independent: the product of p (kept) and 1 - p (left out).

Candidate sets and first-token logprobs do not carry over: a multi-label judge's list is already its set of
every label that applies, and the first token's distribution is over which label the list starts with, not
over whether each label applies."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from llmlabel.results import AggregationReport, JudgeAnswer, JudgeFit, RowResult, Verdict

SEP = "|"  # the joined `label` field of a multi-label row ("joy|surprise"), as in GoEmotions' own files


@dataclass(frozen=True)
class SetPolicy:
    """How a label set is decided from per-label probabilities (task.label_threshold, task.allow_empty)."""

    threshold: float = 0.5
    allow_empty: bool = False

    def decide(self, probs: dict[str, float], thresholds: dict[str, float] | None = None) -> list[str]:
        """The labels kept, most probable first."""
        order = sorted(probs, key=lambda lab: -probs[lab])
        kept = [lab for lab in order if probs[lab] >= (thresholds or {}).get(lab, self.threshold)]
        if not kept and not self.allow_empty and order and probs[order[0]] > 0:
            kept = [order[0]]
        return kept


def split(value: Any) -> list[str]:
    """A label set from an output's `labels` list, or a joined `label` string (a gold file's "a|b")."""
    if isinstance(value, list):
        return [str(x) for x in value]
    if value is None or value == "":
        return []
    return [x for x in str(value).split(SEP) if x]


def verdict(probs: dict[str, float], kept: list[str]) -> Verdict:
    """A row's decision from its per-label probabilities and the labels kept."""
    conf = 1.0
    for lab, p in probs.items():
        conf *= p if lab in kept else 1.0 - p
    return Verdict(
        label=SEP.join(kept) if kept else None,
        labels=tuple(kept),
        confidence=round(conf, 4),
        probs={lab: round(p, 4) for lab, p in probs.items()},
        candidates=tuple(lab for lab in sorted(probs, key=lambda lab: -probs[lab]) if probs[lab] > 0),
    )


def combine_sets(
    answers: Mapping[str, JudgeAnswer],
    labels: list[str],
    policy: SetPolicy,
    weights: Mapping[str, float] | None = None,
) -> Verdict:
    """One row: each label's probability is the weighted share of the judges with a valid answer that name it."""
    mass = dict.fromkeys(labels, 0.0)
    total = 0.0
    for name, ans in answers.items():
        if ans.error or ans.labels is None:
            continue
        w = (weights or {}).get(name, 1.0)
        for lab in ans.labels:
            if lab in mass:
                mass[lab] += w
        total += w
    if total <= 0:
        errors = "; ".join(f"{n}: {a.error}" for n, a in answers.items() if a.error)
        return Verdict(error=f"no judge gave a valid answer ({errors})" if errors else "no judge answered")
    probs = {lab: m / total for lab, m in mass.items()}
    return verdict(probs, policy.decide(probs))


def best_thresholds(p: Any, truth: Any, labels: list[str], default: float, min_rows: int) -> dict[str, float]:
    """Per label, the threshold that maximises its F1 on the gold rows (the default where a label has fewer
    than `min_rows` gold rows or never occurs in them: too little to fit)."""
    import numpy as np

    out = {}
    grid = np.round(np.arange(0.05, 1.0, 0.05), 2)
    for k, lab in enumerate(labels):
        t = truth[:, k]
        if len(t) < min_rows or t.sum() == 0:
            continue
        f1 = []
        for g in grid:
            pred = p[:, k] >= g
            tp = float((pred & t).sum())
            f1.append(2 * tp / max(float(pred.sum() + t.sum()), 1.0))
        best = max(f1)
        # Ties: the candidate nearest the default, so that a flat F1 curve keeps the default.
        out[lab] = float(min((g for g, f in zip(grid, f1) if f == best), key=lambda g: abs(g - default)))
    return out


def refit_sets(
    rows: Callable[[], Iterable[RowResult]],
    judge_names: list[str],
    labels: list[str],
    method: str,
    policy: SetPolicy,
    gold: Mapping[str, str] | None = None,
    min_gold: int = 20,
) -> tuple[Callable[[int, RowResult], RowResult] | None, AggregationReport]:
    """The whole job's per-label fit (see the module docstring), a function that gives each row's new result,
    and the report of the fit."""
    import numpy as np

    from llmlabel.ensemble import aggregate
    from llmlabel.ensemble.votes import VoteMatrix

    vm = VoteMatrix.from_results(rows(), judge_names, labels, "multilabel", gold)
    if not len(vm):
        return None, AggregationReport()
    votes = vm.sets
    n, J, K = votes.shape
    gold_rows = vm.gold_sets
    report = AggregationReport(method, multi_label=True, gold_rows=len(gold_rows))
    p = None
    if method == "weighted" and J > 1:
        p = np.zeros((n, K))
        for k in range(K):
            v = votes[:, :, k].astype(np.int64)
            w = aggregate.agreement_weights(v, 2)
            p[:, k] = aggregate.weighted(v, 2, w)[:, 1]
    elif method == "dawid_skene" and J > 1:
        p = np.zeros((n, K))
        accs = np.zeros((J, K))
        for k, lab in enumerate(labels):
            v = votes[:, :, k].astype(np.int64)
            g = {pos: int(lab in s) for pos, s in gold_rows.items()} or None
            # diag_prior: judges better than chance on each label, so a rare label's EM cannot flip its classes
            res = aggregate.dawid_skene(v, 2, gold=g, diag_prior=2.0)
            p[:, k] = res.posteriors[:, 1]
            accs[:, k] = res.accuracies
        fits = {
            name: JudgeFit(mean_label_accuracy=round(float(accs[j].mean()), 4)) for j, name in enumerate(judge_names)
        }
        report = replace(report, judges=fits)
    answered = (votes >= 0).any(axis=2).any(axis=1)
    if p is None:  # majority: the per-row vote stands; only gold thresholds can change it
        p = np.zeros((n, K))
        for pos in range(n):
            ok = votes[pos, :, 0] >= 0
            if ok.any():
                p[pos] = votes[pos, ok, :].mean(axis=0)
    thresholds: dict[str, float] = {}
    if gold_rows:
        pos_list = sorted(gold_rows)
        truth = np.array([[lab in gold_rows[i] for lab in labels] for i in pos_list], dtype=bool)
        thresholds = best_thresholds(p[pos_list], truth, labels, policy.threshold, min_gold)
        if thresholds:
            report = replace(report, thresholds={lab: t for lab, t in thresholds.items() if t != policy.threshold})
    if method == "majority" and not thresholds:
        return None, report

    def update(pos: int, r: RowResult) -> RowResult:
        if not answered[pos] or r.labels is None:
            return r
        probs = {lab: float(p[pos, k]) for k, lab in enumerate(labels)}
        return r.decided(verdict(probs, policy.decide(probs, thresholds)))

    return update, report
