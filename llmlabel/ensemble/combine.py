"""Turning the judges' answers into one label, a distribution and a confidence: per row while a job runs,
then over the whole job once it ends (weighted and Dawid-Skene need every row).

How it differs from aggregate.py: aggregate.py is the math (vote arrays in, label distributions out, no notion
of a job); this module is its one caller in a job, from JudgeAnswers to a row's Verdict, and from a job's RowResults (as a
VoteMatrix) to new RowResults and an AggregationReport (gold, priors, calibration, candidate sets and label sets
included)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from llmlabel.ensemble.calibration import batch_calibrate, batch_min_rows, calibrate_confidence, content_free_undone
from llmlabel.ensemble.multilabel import SetPolicy, refit_sets
from llmlabel.ensemble.votes import VoteMatrix, Votes, none_uninformative
from llmlabel.llm.prompts import YES
from llmlabel.results import AggregationReport, JudgeAnswer, JudgeFit, OneLabel, RowResult, Verdict


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
    answers: Mapping[str, JudgeAnswer], labels: list[str], mode: str, weights: Mapping[str, float] | None = None
) -> Verdict:
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
        return Verdict(error=f"no judge gave a valid answer ({errors})" if errors else "no judge answered")
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
    return Verdict.of(label, probs[label], probs, tuple(cands))


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
    return JudgeAnswer(label=agg.label, probs=None if agg.probs is None else dict(agg.probs))


def combine_fits(answers: list[JudgeAnswer], labels: list[str]) -> JudgeAnswer:
    """A per-label judge's Yes/No answers (one per label, in `labels`' order) as its one answer for the row.
    For independent answers, the chance that exactly label i fits is proportional to its odds P(Yes)/P(No):
    probs are the labels' odds, normalized (one label a text), and the label their argmax (that of P(Yes)
    too; ties: the task's label order). Normalizing P(Yes) itself is flatter: on 200 HuffPost stories its mean
    confidence was 0.39 at 0.86 accuracy, the odds' 0.50. An answer without logprobs counts its decoded word.
    A failed question fails the answer (the row is asked again on the next run, from the cache but for that
    question); so does No to every label without logprobs."""
    odds = []
    for a in answers:
        if a.label is None:
            return JudgeAnswer(error=a.error or "no answer")
        p = a.probs.get(YES, 0.0) if a.probs else float(a.label == YES)
        odds.append(p / max(1.0 - p, _SURE))
    total = sum(odds)
    if total <= 0:
        return JudgeAnswer(error="the judge answered No to every label")
    probs = {lab: o / total for lab, o in zip(labels, odds)}
    return JudgeAnswer(label=max(labels, key=probs.__getitem__), probs=probs)


_SURE = 1e-6  # P(No) below this counts as this: a sure Yes has odds 1e6, not infinite


def _fit(
    method: str, vm: VoteMatrix, keep: Any, judge_names: list[str], labels: list[str]
) -> tuple[Any, AggregationReport]:
    """Posteriors (n, K) from weighted or Dawid-Skene over the kept judges, and what was fitted (judges, priors).

    In candidate mode Dawid-Skene models the candidate sets themselves (candidates.dawid_skene_candidates): on
    the ensemble benchmark's TREC candidate run it labels 0.986 right against 0.94 for Dawid-Skene over the
    judges' single picks."""
    import numpy as np

    from llmlabel.ensemble import aggregate, candidates

    K, gold_pos = len(labels), vm.gold
    kept = np.where(keep[None, :], vm.codes, -1)
    # Dawid-Skene cannot tell which of two judges errs when they disagree (its confusions are not
    # identified below three judges); without gold it then falls back to the weighted vote.
    if method == "dawid_skene" and (keep.sum() >= 3 or gold_pos):
        if vm.candidates is not None:
            sets = vm.candidates & keep[None, :, None]
            res = candidates.dawid_skene_candidates(sets, K, gold=gold_pos or None)
            coverage = {
                name: JudgeFit(coverage=round(float(res.accuracies[j]), 4))
                for j, name in enumerate(judge_names)
                if keep[j]
            }
            priors = {labels[k]: round(float(res.priors[k]), 4) for k in range(K)}
            return res.posteriors, AggregationReport(judges=coverage, priors=priors)
        # Two pseudo-counts on each confusion diagonal: a small job cannot fit a label-swapped judge.
        res = aggregate.dawid_skene(kept, K, gold=gold_pos or None, diag_prior=2.0)
        judges = {
            name: JudgeFit(
                accuracy=round(float(res.accuracies[j]), 4),
                confusion={
                    labels[t]: {labels[p]: round(float(res.confusions[j, t, p]), 4) for p in range(K)} for t in range(K)
                },
            )
            for j, name in enumerate(judge_names)
        }
        priors = {labels[k]: round(float(res.priors[k]), 4) for k in range(K)}
        return res.posteriors, AggregationReport(judges=judges, priors=priors)
    w = aggregate.gold_weights(kept, K, gold_pos) if gold_pos else aggregate.agreement_weights(kept, K)
    # Left-out judges weigh nothing; a hair more weight for earlier judges settles exact ties their way.
    w = np.where(keep, w + 1e-6 * (len(w) - np.arange(len(w))), 0.0)
    return aggregate.weighted(kept, K, w), AggregationReport(
        judges={n: JudgeFit(weight=round(float(w[j]), 4)) for j, n in enumerate(judge_names)}
    )


@dataclass(frozen=True)
class BatchFit:
    """Batch Calibration over a job's rows (calibration.batch_calibrate, Zhou et al. 2024): each judge with
    the option gets its (content-free calibrated) distributions divided by their mean over the job's rows.

    `judges`: those it was applied to; `too_few`: those left as they were, with the number of rows that had a
    distribution from them (under calibration.batch_min_rows); `undone`: those whose content-free calibration
    was undone first, as it turned the job's lean around (calibration.content_free_undone; it needs
    the judge's p_cf, which `batch` gives); `content_free`: the applied judges' p_cf, where given (for the
    report, so that a later refit decides the same). `codes` (n, J): every judge's label codes with
    the applied judges' new labels; `label_codes` (n, B) and `probs` (n, B, K, rounded to 4 digits) the applied
    judges' new labels (-1: the row had no distribution from that judge, its answer stands) and distributions.
    Memory: float64 arrays, 8 bytes a label a row a judge, a few of them while the fit runs."""

    labels: tuple[str, ...]
    judges: tuple[str, ...]
    too_few: Mapping[str, int]
    codes: Any
    label_codes: Any
    probs: Any
    undone: tuple[str, ...] = ()
    content_free: Mapping[str, Mapping[str, float]] | None = None

    @classmethod
    def over(cls, rows: Rows, judge_names: list[str], labels: list[str], batch: Batch) -> BatchFit | None:
        """The fit over `rows` for the judges `batch` (None: no row). One pass over the rows, then numpy."""
        import numpy as np

        p_cf = batch_p_cf(batch)
        batch = [name for name in judge_names if name in p_cf]
        vm = VoteMatrix.from_results(rows(), judge_names, labels, dists=batch)
        n, K = len(vm), len(labels)
        if not n:
            return None
        codes = vm.codes.copy()
        applied, too_few, kept, undone, known = [], {}, [], [], {}
        need = batch_min_rows(K)
        probs = np.zeros((n, len(batch), K))
        label_codes = np.full((n, len(batch)), -1, dtype=np.int64)
        for b, name in enumerate(batch):
            d = vm.dists[:, b, :]
            have = ~np.isnan(d[:, 0])
            m = int(have.sum())
            if m < need:
                too_few[name] = m
                continue
            d = d[have]
            if (cf := p_cf[name]) is not None and (
                raw := content_free_undone(d, [cf.get(lab, 0.0) for lab in labels])
            ) is not None:
                d = raw
                undone.append(name)
            q = np.round(batch_calibrate(d), 4)
            probs[have, b] = q
            k = np.argmax(q, axis=1)  # the first of tied labels, as calibrate_answer picks
            label_codes[have, b] = k
            codes[have, judge_names.index(name)] = k
            applied.append(name)
            kept.append(b)
            if cf is not None:
                known[name] = dict(cf)
        if len(kept) < len(batch):
            probs, label_codes = probs[:, kept], label_codes[:, kept]
        return cls(tuple(labels), tuple(applied), too_few, codes, label_codes, probs, tuple(undone), known or None)

    def answers(self, pos: int, answers: Mapping[str, JudgeAnswer]) -> Mapping[str, JudgeAnswer]:
        """Row `pos`'s answers with the applied judges' batch-calibrated distributions and labels."""
        out: dict[str, JudgeAnswer] | None = None
        codes = self.label_codes[pos].tolist()
        for b, name in enumerate(self.judges):
            k = codes[b]
            if k < 0:
                continue
            out = dict(answers) if out is None else out
            p = dict(zip(self.labels, self.probs[pos, b].tolist()))
            out[name] = answers[name].model_copy(update={"probs": p, "label": self.labels[k]})
        return answers if out is None else out

    def single_revote(self) -> Revote | None:
        """A single judge's rows (majority, no gold): each row's result is its batch-calibrated answer, as
        combine_row decides a one-judge row (label: the first highest share; candidates: the labels with mass,
        highest first), read from the arrays instead of per-row dicts. None: it was not applied."""
        import numpy as np

        if not self.judges:
            return None
        labels = self.labels
        codes, probs = self.label_codes[:, 0].tolist(), self.probs[:, 0, :]
        order = np.argsort(-probs, axis=1, kind="stable")

        def revote(pos: int, r: RowResult) -> RowResult:
            k = codes[pos]
            if r.label is None or k < 0:
                return r
            # (a row's values as Python floats when it is written: the whole job's at once would take ~30 bytes
            # a label a row more than the arrays)
            p = probs[pos].tolist()
            cands = tuple([labels[i] for i in order[pos].tolist() if p[i] > 0])
            # r.decided(Verdict(...)) without building the Verdict
            return r.evolve(
                label=labels[k],
                confidence=p[k],
                probs=dict(zip(labels, p)),
                candidates=cands,
                error=None,
                labels=None,
                path=None,
                level_confidence=None,
            )

        return revote


Rows = Callable[[], Iterable[RowResult]]  # a job's results, read again on each call (a part file, a list)
# The judges to batch-calibrate, each with its content-free distribution (p_cf, None: it has none), or only
# their names (a ledger or shard manifest written before p_cf was kept: nothing is undone).
Batch = Mapping[str, Mapping[str, float] | None] | Sequence[str]


def batch_p_cf(batch: Batch) -> dict[str, Mapping[str, float] | None]:
    """`batch` as judge -> p_cf (None: not known)."""
    return dict(batch) if isinstance(batch, Mapping) else dict.fromkeys(batch)


Revote = Callable[[int, RowResult], RowResult]  # a row's result (at its position) -> its result after the refit


def _refit(
    rows: Rows,
    judge_names: list[str],
    labels: list[str],
    method: str,
    mode: str,
    gold: Mapping[str, str] | None = None,
    bc: BatchFit | None = None,
) -> tuple[Revote | None, AggregationReport]:
    """refit without the gold confidence calibration; `bc`: the Batch Calibration fitted over the job, whose
    answers replace the stored ones of its judges (before the gold prior, which it would otherwise divide out)."""
    single = method == "majority" and len(judge_names) < 2 and not gold
    if single and bc is None:
        return None, AggregationReport(method)  # one judge: its answers are the labels, nothing to weigh
    if single and bc is not None:
        return bc.single_revote(), AggregationReport(method)
    prior = _gold_prior(gold, labels)

    def adjusted(pos: int, answers: Mapping[str, JudgeAnswer]) -> Mapping[str, JudgeAnswer]:
        """A row's answers as the fit sees them: batch-calibrated, then times the gold prior."""
        if bc is not None:
            answers = bc.answers(pos, answers)
        return _prior_answers(answers, prior) if prior else answers

    if bc is not None and not gold:  # the batch-calibrated votes are at hand: no second pass over the rows
        vm = VoteMatrix(tuple(labels), tuple(judge_names), Votes.from_matrix(bc.codes))
    elif prior or bc is not None:
        vm = VoteMatrix.from_results(
            (r.evolve(judges=adjusted(p, r.judges)) for p, r in enumerate(rows())), judge_names, labels, mode, gold
        )
    else:
        vm = VoteMatrix.from_results(rows(), judge_names, labels, mode, gold)
    n, K, gold_pos = len(vm), len(labels), vm.gold
    if not n:
        return None, AggregationReport()
    report = AggregationReport(method, gold_rows=len(gold_pos))
    final = not gold_pos and bc is None  # the per-row soft vote stands unless a judge is left out
    if method == "majority" and final and none_uninformative(vm.table, K):
        return None, report  # no judge to leave out: the per-row soft vote is final, and numpy is not needed
    import numpy as np

    from llmlabel.ensemble import aggregate, candidates, judges

    votes = vm.codes
    keep = ~judges.uninformative(votes, K, gold_pos)
    if not keep.all():
        # Rows that only left-out judges answered (a cascade stopped on them): no informative answer to vote.
        alone = int(((votes[:, keep] < 0).all(axis=1) & (votes >= 0).any(axis=1)).sum())
        left_out = tuple(name for name, k in zip(judge_names, keep) if not k)
        report = replace(report, left_out=left_out, rows_only_left_out=alone)
    if method == "majority" or (keep.sum() < 2 and not gold_pos):  # one judge left: nothing to weigh
        if keep.all() and final:
            return None, report  # the per-row soft vote is already final
        w = aggregate.gold_weights(votes, K, gold_pos) if gold_pos else np.ones(len(judge_names))
        weights = {name: float(w[j]) if keep[j] else 0.0 for j, name in enumerate(judge_names)}
        report = replace(report, judges={name: JudgeFit(weight=round(x, 4)) for name, x in weights.items()})

        def revote(pos: int, r: RowResult) -> RowResult:
            if r.label is None:
                return r
            # The judges' own answers stay as they were in the output (a merge refits from them); only the
            # combined label uses the batch calibration and the prior.
            return r.decided(combine_row(adjusted(pos, r.judges), labels, mode, weights))

        return revote, report
    post, fitted = _fit(method, vm, keep, judge_names, labels)
    report = replace(report, judges=fitted.judges, priors=fitted.priors)
    if method == "dawid_skene" and fitted.priors is None:
        report = replace(report, fallback="weighted: Dawid-Skene needs three informative judges or gold rows")
    cand_sets = candidates.aggregate_candidates(vm.candidates[:, keep]) if vm.candidates is not None else None
    # Rows repeat a few vote combinations, so their posteriors repeat: each distinct posterior (with its
    # candidate sets) becomes fields once, and a combination's "no vote at all" is looked up, not recomputed
    # (with io.records.from_record's cached layout, a warm 5,000-row rewrite in-process: weighted 502 -> 326 ms,
    # Dawid-Skene 494 -> 281 ms; benchmarks/results/results_model.md).
    combos, rows_combo = list(vm.table.index), vm.table.rows
    unvoted = [all(c < 0 for c in codes) for codes in combos]
    decided: dict[bytes, dict[str, Any]] = {}

    def fields_at(pos: int) -> dict[str, Any] | None:
        if unvoted[rows_combo[pos]]:
            return None
        p = post[pos]
        key = p.tobytes() if cand_sets is None else p.tobytes() + cand_sets[pos].tobytes()
        fields = decided.get(key)
        if fields is None:
            k = int(np.argmax(p))
            if cand_sets is not None:
                cs = [labels[i] for i in range(K) if cand_sets[pos, i]]
                cands = cs if labels[k] in cs else [labels[k]] + cs
            else:
                cands = [labels[i] for i in np.argsort(-p) if p[i] >= 0.01] or [labels[k]]
            if len(decided) >= 4096:  # many judges can make every row's posterior its own: memory stays flat
                decided.clear()
            fields = decided[key] = {
                "label": labels[k],
                "confidence": round(float(p[k]), 4),
                "probs": {labels[i]: round(float(p[i]), 4) for i in range(K)},  # shared: results are read-only
                "candidates": tuple(cands),
            }
        return fields

    return PosteriorRevote(fields_at), report


class PosteriorRevote:
    """The Revote of a weighted or Dawid-Skene refit: a row that has a label takes the fields of its posterior
    (`fields(pos)`: label, confidence, probs, candidates; None: the row stays as it is). An output writer may
    put these fields into a row's stored record directly (pipeline.lifecycle.Output.write)."""

    def __init__(self, fields: Callable[[int], dict[str, Any] | None]) -> None:
        self.fields = fields

    def __call__(self, pos: int, r: RowResult) -> RowResult:
        if r.label is None:
            return r
        fields = self.fields(pos)
        return r if fields is None else r.evolve(**fields)


def _gold_prior(gold: Mapping[str, str] | None, labels: list[str], min_rows: int = 10) -> dict[str, float] | None:
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


def _prior_answers(answers: Mapping[str, JudgeAnswer], prior: dict[str, float]) -> dict[str, JudgeAnswer]:
    """Each judge's label distribution times the label prior (renormalized, label = argmax).

    Content-free calibration divides out the model's bias toward a label, and with it any prior: a calibrated
    distribution assumes balanced labels, so on SMS spam (87% ham) it pushed Qwen to "spam" (0.35 right on 20
    rows). The gold rows' label shares put the prior back (Bayes' rule: posterior ~ likelihood x prior).
    Judges without a distribution (plain JSON answers, which keep the model's own prior) are left as they are."""
    out = {}
    for name, a in answers.items():
        p = a.probs
        if p and a.label:
            q = {lab: float(p.get(lab, 0.0)) * prior[lab] for lab in prior}
            z = sum(q.values())
            if z > 0:
                q = {lab: round(v / z, 4) for lab, v in q.items()}
                a = a.model_copy(update={"probs": q, "label": max(q, key=q.__getitem__)})
        out[name] = a
    return out


def _one_label(rows: Rows, judge_names: list[str], labels: list[str], bc: BatchFit | None) -> OneLabel | None:
    """The only judge, when it answered one label to most rows (judges.one_label; after Batch Calibration when
    it was applied); else None. An ensemble leaves such a judge out; a single judge can only be named."""
    from llmlabel.ensemble import judges

    votes = bc.codes if bc is not None else VoteMatrix.from_results(rows(), judge_names, labels).codes
    if not len(votes):
        return None
    hits = judges.one_label(votes, len(labels))
    if not hits:
        return None
    j, k, share = hits[0]
    return OneLabel(judge_names[j], labels[k], round(share, 4), int((votes[:, j] >= 0).sum()))


def refit(
    rows: Rows,
    judge_names: list[str],
    labels: list[str],
    method: str,
    mode: str,
    gold: Mapping[str, str] | None = None,
    policy: SetPolicy | None = None,
    batch: Batch = (),
) -> tuple[Revote | None, AggregationReport]:
    """Fit over every row; return a function that gives each row's new result (None: every row stays as it
    is) and the report of the fit. The results passed in are never changed.

    Every method first leaves out judges that carry no information (judges.uninformative: one label to
    everything, or chance agreement), so a broken judge cannot drag the ensemble below its best member.
    weighted and dawid_skene then refit over the whole job; majority keeps its per-row soft vote, redone
    without the left-out judges (and weighted by gold accuracy when gold rows are given). With 20+ gold
    rows, confidences are then recalibrated on them (see calibrate_confidence). A multi-label job (mode
    "multilabel") is fitted label by label instead (ensemble/multilabel.py, with `policy`).

    `batch`: judges whose distributions are batch-calibrated first (BatchFit; label mode only, each judge
    with at least calibration.batch_min_rows rows with a distribution). It works from the judges' stored
    answers, which the new results keep as they were, so refitting a refit job's rows (a merge of shards, a
    resumed run) calibrates once, over every row.
    """
    if mode == "taxonomy":  # each level was combined as it was asked; the next levels followed from it
        return None, AggregationReport("majority", per_level=True)
    if mode == "multilabel":
        return refit_sets(rows, judge_names, labels, method, policy or SetPolicy(), gold)
    bc = BatchFit.over(rows, judge_names, labels, batch) if batch and mode == "label" else None
    update, report = _refit(rows, judge_names, labels, method, mode, gold, bc if bc and bc.judges else None)
    if bc is not None and report.method is not None:
        report = replace(
            report,
            batch_calibrated=bc.judges,
            batch_too_few=dict(bc.too_few) or None,
            batch_content_free=bc.content_free,
            content_free_undone=bc.undone,
        )
    if len(judge_names) == 1 and len(labels) >= 3:
        report = replace(report, one_label=_one_label(rows, judge_names, labels, bc if bc and bc.judges else None))
    if not gold:
        return update, report
    pairs = []
    for pos, r in enumerate(rows()):
        if r.id in gold:
            r = update(pos, r) if update else r
            if r.confidence is not None:
                pairs.append((float(r.confidence), r.label == gold[r.id]))
    cal = calibrate_confidence([c for c, _ in pairs], [ok for _, ok in pairs])
    if cal is None:
        return update, report
    report = replace(report, confidence_calibrated_on=len(pairs))

    def calibrated(pos: int, r: RowResult) -> RowResult:
        r = update(pos, r) if update else r
        if r.confidence is None:
            return r
        return r.evolve(confidence=round(cal(float(r.confidence)), 4))

    return calibrated, report
