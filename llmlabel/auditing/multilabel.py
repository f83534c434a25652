"""Multi-label audits (task.multi_label): which (row, label) pairs of the given label sets are most likely wrong.

Each label is one binary question per row: does it apply? A pair is suspect in two ways: a **missing** label
(it applies, the given set lacks it) and an **extra** label (the given set has it, it does not apply).

Two signals, as in the single-label audit (auditing/signals.py), each per (row, label):

* the judges: each judge answers its own label set (the multi-label prompt; it does not see the given set);
  per label, Dawid-Skene over the judges' yes/no *and the given set's*, the given set being one more
  annotator. It learns, per label, how often each judge and the given labels name a label that applies
  (recall) and one that does not (false adds): P(label applies | answers, given) is the judges' posterior;
* confident learning: a one-vs-rest TF-IDF logistic regression trained on the given sets gives out-of-fold
  per-label probabilities (the same out-of-fold code as the single-label audit, `signals.out_of_fold`);
  cleanlab's multi-label method scores them: `multilabel_classification.rank.get_label_quality_scores` (a row's
  score), `filter.find_label_issues` (a row's issue) and `filter.find_multilabel_issues_per_class` (which labels).

Combined, per pair: the judges' posterior odds times the classifier's likelihood ratio (its temperature-scaled
probability over the label's prior frequency, raised to `classifier_weight`). A pair's score is P(the given set
is right about this label); pairs are flagged, most suspicious first, while the expected precision of the flagged
pairs stays >= min_precision, and a row is flagged when any of its pairs is. A row's score is the probability
that its whole given set is right (pairs read as independent: the product of its pairs' scores).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from llmlabel.auditing.signals import PROB_FLOOR, auroc, flags_for, out_of_fold, ranks, signal_columns, temper
from llmlabel.errors import InputError
from llmlabel.results import Suspect

if TYPE_CHECKING:
    from llmlabel.auditing.audit import AuditOptions

MIN_ACCURACY_ROWS = 20  # as the single-label audit: fewer rows and Dawid-Skene's rates are noise


@dataclass
class SetSignals:
    """(n, K) arrays over task.labels unless said: P(label applies) and P(the given set is right about it)."""

    judge_post: np.ndarray
    judge_score: np.ndarray
    post: np.ndarray
    score: np.ndarray
    judge_rates: dict[str, tuple[float, float]]  # per judge and "given": (recall, false-add rate), pooled
    cleanlab_score: np.ndarray | None = None  # (n,) cleanlab's row label-quality score
    cleanlab_issue: np.ndarray | None = None  # (n,) find_label_issues
    cleanlab_pairs: np.ndarray | None = None  # (n, K) find_multilabel_issues_per_class
    classifier_note: str | None = None


def given_sets(values: Sequence[Any], labels: list[str], source: str, what: str = "a given label set") -> np.ndarray:
    """Given label sets as an (n, K) boolean matrix over `labels`, read as `llmlabel eval` reads multi-label
    gold (a list, a JSON list, or labels joined by "|"); a one-line error naming labels outside the task's set."""
    # Imported here: evaluation's metrics load sklearn (and pandas), which `import llmlabel` must not.
    from llmlabel.evaluation.multilabel import label_set

    index = {lab: k for k, lab in enumerate(labels)}
    out = np.zeros((len(values), len(labels)), dtype=bool)
    bad: dict[str, int] = {}
    for i, v in enumerate(values):
        for lab in label_set(v):
            if lab in index:
                out[i, index[lab]] = True
            else:
                bad[lab] = bad.get(lab, 0) + 1
    if bad:
        top = sorted(bad.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k!r} ({c} row{'s' if c > 1 else ''})" for k, c in top[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise InputError(
            f"{source}: {sum(bad.values())} rows have {what} with labels outside task.labels: {shown}{more}; "
            "add those labels to task.labels in the config, or fix or remove those rows (sets are lists or "
            'labels joined by "|")'
        )
    return out


def _judge_signal(votes: np.ndarray, given: np.ndarray, names: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Per label, Dawid-Skene over the judges' yes/no (-1: no answer) and the given set as the last annotator."""
    from llmlabel.ensemble.aggregate import dawid_skene

    n, J, K = votes.shape
    post = np.zeros((n, K))
    yes = np.zeros(J + 1)  # expected (applies, named) per annotator, pooled over labels
    applies = np.zeros(J + 1)
    no_yes = np.zeros(J + 1)
    absent = np.zeros(J + 1)
    for k in range(K):
        v = np.column_stack([votes[:, :, k].astype(np.int64), given[:, k].astype(np.int64)])
        # diag_prior: judges beat chance on each label, so a rare label's EM cannot swap its two classes
        res = dawid_skene(v, 2, diag_prior=2.0)
        post[:, k] = res.posteriors[:, 1]
        p1 = float(res.posteriors[:, 1].sum())
        yes += p1 * res.confusions[:, 1, 1]
        applies += p1
        no_yes += (n - p1) * res.confusions[:, 0, 1]
        absent += n - p1
    rates = {
        name: (float(yes[j] / max(applies[j], 1e-9)), float(no_yes[j] / max(absent[j], 1e-9)))
        for j, name in enumerate([*names, "given"])
    }
    return post, rates


def _classifier(
    texts: Sequence[str], given: np.ndarray, features: str, folds: int, seed: int
) -> tuple[np.ndarray | None, np.ndarray, str | None]:
    """Out-of-fold per-label probabilities (n, K) of a one-vs-rest logistic regression on the given sets (only
    labels with 2+ rows given and 2+ not: a label nobody gave cannot be learned), or None with the reason."""
    n = len(given)
    pos = given.sum(axis=0)
    cols = np.flatnonzero((pos >= 2) & (n - pos >= 2))
    k = min(folds, n // 2)
    if not len(cols):
        return None, cols, "no label is given to 2 or more rows (and left out of 2 or more)"
    if k < 2 or n < 10:
        return None, cols, f"too few rows ({n}) for {folds}-fold cross-validation"
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold
    from sklearn.multiclass import OneVsRestClassifier

    pp = out_of_fold(
        texts, given[:, cols].astype(int), OneVsRestClassifier(LogisticRegression(C=10.0, max_iter=1000)),
        KFold(k, shuffle=True, random_state=seed), features,
    )  # fmt: skip
    return np.clip(pp, 0.0, 1.0), cols, None


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.asarray(np.log(p) - np.log1p(-p))


def score_set_signals(
    votes: np.ndarray,
    given: np.ndarray,
    names: list[str],
    texts: Sequence[str] | None = None,
    features: str = "tfidf",
    folds: int = 5,
    classifier_weight: float = 1.0,
    seed: int = 0,
) -> SetSignals:
    """Both signals and their combination. votes: (n, J, K) 1 named / 0 not / -1 no answer; given: (n, K) bool."""
    n, K = given.shape
    jpost, rates = _judge_signal(votes, given, names)
    jscore = np.where(given, jpost, 1.0 - jpost)
    sig = SetSignals(judge_post=jpost, judge_score=jscore, post=jpost, score=jscore, judge_rates=rates)
    if texts is None:
        sig.classifier_note = "disabled"
        return sig
    pp, cols, note = _classifier(texts, given, features, folds, seed)
    if pp is None:
        sig.classifier_note = note
        return sig
    from cleanlab.multilabel_classification.filter import find_label_issues, find_multilabel_issues_per_class
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    g = given[:, cols]
    sets = [list(map(int, np.flatnonzero(row))) for row in g]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sig.cleanlab_score = np.asarray(get_label_quality_scores(sets, pp), dtype=float)
        # n_jobs=1: cleanlab's default forks a process pool, which can deadlock a threaded process (the server)
        sig.cleanlab_issue = np.asarray(find_label_issues(sets, pp, n_jobs=1), dtype=bool)
        per = find_multilabel_issues_per_class(sets, pp, n_jobs=1)
    per = np.column_stack(per) if isinstance(per, list) else np.asarray(per, dtype=bool)
    sig.cleanlab_pairs = np.zeros((n, K), dtype=bool)
    sig.cleanlab_pairs[:, cols] = per.reshape(n, len(cols))
    # One temperature for every pair (T >= 1, fitted on the given values), then each label's likelihood ratio.
    two = np.stack([1.0 - pp, pp], axis=-1).reshape(-1, 2)
    tp = temper(two, g.ravel().astype(np.int64))[:, 1].reshape(pp.shape)
    tp = np.clip(tp, PROB_FLOOR, 1.0 - PROB_FLOOR)
    prior = np.clip(g.mean(axis=0), PROB_FLOOR, 1.0 - PROB_FLOOR)
    log_ratio = (np.log(tp) - np.log(prior)) - (np.log1p(-tp) - np.log1p(-prior))
    logit = _logit(jpost)
    logit[:, cols] += classifier_weight * log_ratio
    sig.post = 1.0 / (1.0 + np.exp(-logit))
    sig.score = np.where(given, sig.post, 1.0 - sig.post)
    return sig


def _row_score(pair_score: np.ndarray) -> np.ndarray:
    return np.asarray(np.exp(np.log(np.maximum(pair_score, 1e-300)).sum(axis=1)))


def set_records(
    ids: list[str],
    texts: list[str],
    given: np.ndarray,
    labels: list[str],
    sig: SetSignals,
    min_precision: float,
    allow_empty: bool,
    judges: list[dict[str, Any]] | None = None,
    errors: list[str | None] | None = None,
) -> tuple[list[Suspect], dict[str, Any]]:
    """The rows' results, most suspicious first, and the summary (see the module docstring)."""
    from llmlabel.ensemble.multilabel import SEP, SetPolicy

    n, K = given.shape
    pflag, m, est_prec = flags_for(sig.score.ravel(), min_precision)
    pflag = pflag.reshape(n, K)
    jpflag = flags_for(sig.judge_score.ravel(), min_precision)[0].reshape(n, K)
    row_score, jrow = _row_score(sig.score), _row_score(sig.judge_score)
    flag, jflag = np.asarray(pflag.any(axis=1)), np.asarray(jpflag.any(axis=1))
    jrank = ranks(jrow)
    crank = ranks(sig.cleanlab_score) if sig.cleanlab_score is not None else None
    policy = SetPolicy(0.5, allow_empty)
    p_wrong = 1.0 - sig.score
    order = np.argsort(row_score, kind="stable")
    recs: list[Suspect] = []
    suggested_sets: list[list[str]] = [[] for _ in range(n)]
    for i in order:
        given_i = [labels[k] for k in np.flatnonzero(given[i])]
        sugg = policy.decide({labels[k]: float(sig.post[i, k]) for k in range(K)})
        suggested_sets[i] = sugg
        recs.append(
            Suspect(
                id=ids[i],
                text=texts[i],
                # Joined as `llmlabel label` joins a set's `label` field: readable in CSV, comparable as text.
                given_label=SEP.join(given_i),
                suggested_label=SEP.join(sugg),
                given_labels=given_i,
                suggested_labels=sugg,
                score=round(float(row_score[i]), 6),
                flagged=bool(flag[i]),
                # P(the given set is wrong about the label), for each flagged pair
                missing={labels[k]: round(float(p_wrong[i, k]), 4) for k in np.flatnonzero(pflag[i] & ~given[i])},
                extra={labels[k]: round(float(p_wrong[i, k]), 4) for k in np.flatnonzero(pflag[i] & given[i])},
                judge_score=round(float(jrow[i]), 6),
                judge_rank=int(jrank[i]),
                judge_flagged=bool(jflag[i]),
                judge_suspects=[labels[k] for k in np.flatnonzero(jpflag[i])],
                cleanlab_score=None if sig.cleanlab_score is None else round(float(sig.cleanlab_score[i]), 6),
                cleanlab_rank=None if crank is None else int(crank[i]),
                cleanlab_issue=None if sig.cleanlab_issue is None else bool(sig.cleanlab_issue[i]),
                cleanlab_suspects=None
                if sig.cleanlab_pairs is None
                else [labels[k] for k in np.flatnonzero(sig.cleanlab_pairs[i])],
                probs={labels[k]: round(float(sig.post[i, k]), 4) for k in range(K)},
                judges=(judges[i] if judges else {}),
                error=errors[i] if errors else None,
            )
        )
    per_class = {}
    for k, lab in enumerate(labels):
        has, lacks = given[:, k], ~given[:, k]
        per_class[lab] = {
            "rows": int(has.sum()),
            # expected rows that lack the label though it applies / have it though it does not
            "est_missing": round(float(p_wrong[lacks, k].sum()), 1),
            "est_extra": round(float(p_wrong[has, k].sum()), 1),
            "flagged_missing": int((pflag[:, k] & lacks).sum()),
            "flagged_extra": int((pflag[:, k] & has).sum()),
        }
    expected = float(p_wrong.sum())
    few = n < MIN_ACCURACY_ROWS
    names = [x for x in sig.judge_rates if x != "given"]
    summary: dict[str, Any] = {
        "multi_label": True,
        "rows": n,
        "flagged": int(flag.sum()),
        "flagged_pairs": m,
        "flagged_missing": int((pflag & ~given).sum()),
        "flagged_extra": int((pflag & given).sum()),
        "min_precision": min_precision,
        "est_precision": None if not m else round(est_prec, 4),  # of the flagged (row, label) pairs
        "est_recall": round(float(p_wrong[pflag].sum() / expected), 4) if expected > 0 else None,
        "est_label_errors": round(expected, 1),  # expected wrong (row, label) pairs
        "est_rows_with_errors": round(float((1.0 - row_score).sum()), 1),
        "flag_score_threshold": round(float(sig.score[pflag].max()), 6) if m else None,
        # the expected share of rows whose given set is exactly right
        "est_given_label_accuracy": None if few else round(float(row_score.mean()), 4),
        "labels_per_row": {
            "given": round(float(given.sum(axis=1).mean()), 4),
            "suggested": round(float(np.mean([len(s) for s in suggested_sets])), 4),
        },
        # recall: P(named | applies); false_add_rate: P(named | does not apply), pooled over labels (a per-label
        # accuracy would mostly count the many labels that do not apply)
        "judges": {
            name: {
                "recall": None if few else round(sig.judge_rates[name][0], 4),
                "false_add_rate": None if few else round(sig.judge_rates[name][1], 5),
            }
            for name in names
        },
        "given_labels": {
            "recall": None if few else round(sig.judge_rates["given"][0], 4),
            "false_add_rate": None if few else round(sig.judge_rates["given"][1], 5),
        },
        "per_class": per_class,
        "signals": {
            "judges_flagged": int(jflag.sum()),
            "judges_flagged_pairs": int(jpflag.sum()),
            "cleanlab_issues": None if sig.cleanlab_issue is None else int(sig.cleanlab_issue.sum()),
            "cleanlab_pairs": None if sig.cleanlab_pairs is None else int(sig.cleanlab_pairs.sum()),
            "classifier": sig.classifier_note or "tfidf one-vs-rest logistic regression, out-of-fold",
        },
    }
    if few:
        summary["accuracy_note"] = (
            f"judge and given-label rates not estimated: {n} row{'' if n == 1 else 's'}, and Dawid-Skene "
            f"needs at least {MIN_ACCURACY_ROWS} to tell a judge's errors from the given labels'"
        )
    return recs, summary


def score_set_answers(
    ids: list[str],
    texts: list[str],
    given: np.ndarray,
    labels: list[str],
    names: list[str],
    rows: list[dict[str, Any]],
    opts: AuditOptions,
    allow_empty: bool,
) -> tuple[list[Suspect], dict[str, Any]]:
    """The multi-label audit of rows the judges labeled (rows[i]: row i's labeling record): records most
    suspicious first, and the summary. `llmlabel audit` and `llmlabel.audit()` both end here."""
    from llmlabel.ensemble.votes import VoteMatrix
    from llmlabel.io.records import from_record

    results = [from_record(rec, "multilabel") for rec in rows]
    votes = VoteMatrix.from_results(results, names, labels, "multilabel").sets.reshape(
        len(ids), len(names), len(labels)
    )
    answers = [{n: (rec.get("judges") or {}).get(n) or {} for n in names} for rec in rows]
    errors = [rec.get("error") for rec in rows]
    sig = score_set_signals(
        votes,
        given,
        names,
        texts if opts.classifier else None,
        features=opts.features,
        folds=opts.folds,
        classifier_weight=opts.classifier_weight,
        seed=opts.seed,
    )
    records, summary = set_records(ids, texts, given, labels, sig, opts.min_precision, allow_empty, answers, errors)
    summary["prompt"] = "multilabel"
    return records, summary


def set_gold_metrics(records: list[Suspect], gold: dict[str, str], labels: list[str]) -> dict[str, Any] | None:
    """With true label sets for some rows: per signal, AUROC of the row score against "the given set is wrong",
    precision/recall of its row flags, and of its (row, label) flags against the wrong pairs."""
    from llmlabel.evaluation.multilabel import label_set

    rows = [r for r in records if r.id in gold]
    if not rows:
        return None
    truth = [set(label_set(gold[r.id])) for r in rows]
    given = [set(r.given_labels or []) for r in rows]
    wrong = np.array([t != g for t, g in zip(truth, given)])
    wrong_pairs = {(r.id, lab) for r, t, g in zip(rows, truth, given) for lab in t ^ g}
    out: dict[str, Any] = {"rows": len(rows), "label_errors": int(wrong.sum()), "wrong_pairs": len(wrong_pairs)}

    def pr(hits: int, flagged: int, total: int) -> dict[str, float | int | None]:
        return {
            "flagged": flagged,
            "precision": round(hits / flagged, 4) if flagged else None,
            "recall": round(hits / total, 4) if total else None,
        }

    def pairs_of(r: Suspect, name: str) -> set[tuple[str, str]]:
        labs = {"combined": [*(r.missing or {}), *(r.extra or {})], "judges": r.judge_suspects}.get(name)
        if labs is None:
            labs = r.cleanlab_suspects or []
        return {(r.id, lab) for lab in labs}

    for name, s, f in signal_columns(rows):
        a = auroc(-s, wrong)
        flagged_pairs = set().union(*(pairs_of(r, name) for r in rows))
        out[name] = {
            "auroc": None if a != a else round(a, 4),
            **pr(int((f & wrong).sum()), int(f.sum()), int(wrong.sum())),
            "pairs": pr(len(flagged_pairs & wrong_pairs), len(flagged_pairs), len(wrong_pairs)),
        }
    out["corrected_ok"] = int(
        sum(1 for r, t, w in zip(rows, truth, wrong) if r.flagged and w and set(r.suggested_labels or []) == t)
    )
    out["precision_at"] = [round(float(h / (k + 1)), 4) for k, h in enumerate(np.cumsum(wrong))]
    return out


def set_summary_lines(summary: dict[str, Any]) -> list[str]:
    """A few human lines for stderr."""
    s = summary
    prec = f", estimated precision {s['est_precision']:.2f}" if s.get("est_precision") is not None else ""
    rec = f", estimated recall {s['est_recall']:.2f}" if s.get("est_recall") is not None else ""
    out = [
        f"flagged {s['flagged']} of {s['rows']} rows: {s['flagged_pairs']} (row, label) pairs, "
        f"{s['flagged_missing']} missing and {s['flagged_extra']} extra labels{prec}{rec} (target precision "
        f"{s['min_precision']}); estimated wrong pairs in the file: {s['est_label_errors']:.0f}, in "
        f"{s['est_rows_with_errors']:.0f} rows"
    ]
    if s.get("accuracy_note"):
        out.append(s["accuracy_note"])
    else:
        parts = [
            f"{n} {v['recall']:.3f} / {v['false_add_rate']:.4f}"
            for n, v in [*s["judges"].items(), ("given labels", s["given_labels"])]
        ]
        out.append("estimated recall / false-add rate: " + ", ".join(parts))
    top = sorted(s["per_class"].items(), key=lambda kv: -(kv[1]["flagged_missing"] + kv[1]["flagged_extra"]))[:5]
    out.append(
        "most flagged labels: "
        + ", ".join(f"{k} ({v['flagged_missing']} missing, {v['flagged_extra']} extra)" for k, v in top)
    )
    g = s.get("gold")
    if g:
        parts = [
            f"{name}: rows precision {g[name]['precision']} recall {g[name]['recall']}, pairs precision "
            f"{g[name]['pairs']['precision']} recall {g[name]['pairs']['recall']}"
            for name in ("combined", "judges", "cleanlab")
            if name in g
        ]
        out.append(
            f"against {g['rows']} gold rows ({g['label_errors']} with a wrong set, {g['wrong_pairs']} wrong pairs): "
            + "; ".join(parts)
        )
    return out
