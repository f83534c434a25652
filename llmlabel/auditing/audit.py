"""Label audits: which given labels are most likely wrong, most suspicious first.

`run_audit` asks the judges (a resumable labeling run), scores their answers with the given labels
(`score_answers`: Dawid-Skene plus confident learning, in auditing/signals.py), flags rows while the expected
precision holds, and writes the records and the summary. `llmlabel.audit()` (auditing/api.py) scores the same way.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmlabel.auditing.exports import export_csv, export_labelstudio
from llmlabel.auditing.multilabel import given_sets, score_set_answers, set_gold_metrics, set_summary_lines
from llmlabel.auditing.signals import Signals, auroc, choose_flags, flags_for, ranks, score_signals, signal_columns
from llmlabel.config import Config
from llmlabel.ensemble.votes import VoteMatrix
from llmlabel.errors import InputError
from llmlabel.io.files import atomic_write
from llmlabel.io.gold import read_gold
from llmlabel.io.guard import Read, config_reads, inputs
from llmlabel.io.paths import audit_judges_path, audit_summary_path
from llmlabel.io.records import from_record, suspect_record
from llmlabel.io.rows import iter_rows, row_id
from llmlabel.results import Suspect

if TYPE_CHECKING:
    from llmlabel.pipeline.options import RunOptions

__all__ = [
    "AuditOptions",
    "AuditResult",
    "Signals",
    "score_signals",
    "choose_flags",
    "audit_records",
    "check_given_labels",
    "given_codes",
    "score_answers",
    "run_audit",
    "gold_metrics",
    "export_labelstudio",
    "export_csv",
    "auroc",
]


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
class AuditResult:
    output: Path
    records: list[Suspect] = field(default_factory=list)  # most suspicious first (io.records.suspect_record)
    summary: dict[str, Any] = field(default_factory=dict)
    complete: bool = False
    stopped_by: str | None = None
    ledger: Any = None
    warnings: list[str] = field(default_factory=list)


# -- rows in, records out -----------------------------------------------------------------------------------------


def check_given_labels(
    input_path: str | Path, cfg: Config, label_column: str
) -> tuple[list[str], list[str], np.ndarray]:
    """ids, texts and given-label codes of every row (a multi-label task: an (n, K) boolean matrix of the given
    sets); a one-line error for labels outside the task's set."""
    check_audit_task(cfg, verify=False)
    ids, texts, values = _given_rows(input_path, cfg, label_column)
    what = f"a '{label_column}' value"
    if cfg.task.multi_label:
        return ids, texts, given_sets(values, cfg.task.label_names, str(input_path), what)
    return ids, texts, given_codes(values, cfg.task.label_names, str(input_path), what)


def _given_rows(input_path: str | Path, cfg: Config, label_column: str) -> tuple[list[str], list[str], list[Any]]:
    from llmlabel.llm.prompts import Prompts

    task = cfg.task
    prompts = Prompts(task, cfg.prompts_dir)
    ids: list[str] = []
    texts: list[str] = []
    values: list[Any] = []
    for i, row in enumerate(iter_rows(input_path)):
        if i == 0:
            from llmlabel.pipeline.lifecycle import require_column

            require_column(input_path, row, label_column)
        values.append(row.get(label_column))
        ids.append(row_id(row, task.id_column, i))
        texts.append(prompts.row_text(row) or "")
    if not ids:
        raise InputError(f"{input_path} has no rows; give a file with at least one row")
    return ids, texts, values


def given_codes(values: Sequence[Any], labels: list[str], source: str, what: str = "a given label") -> np.ndarray:
    """Given labels as codes into `labels`; a one-line error naming the labels outside the task's set."""
    index = {lab: k for k, lab in enumerate(labels)}
    codes: list[int] = []
    bad: Counter[str] = Counter()
    for v in values:
        lab = "" if v is None else str(v)
        if lab not in index:
            bad[lab] += 1
        codes.append(index.get(lab, -1))
    if bad:
        shown = ", ".join(f"{k!r} ({c} row{'s' if c > 1 else ''})" for k, c in bad.most_common(5))
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise InputError(
            f"{source}: {sum(bad.values())} rows have {what} outside task.labels: "
            f"{shown}{more}; they can't be audited: add those labels to task.labels in the config, "
            "or fix or remove those rows"
        )
    return np.asarray(codes, dtype=np.int64)


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


MIN_ACCURACY_ROWS = 20  # below this, Dawid-Skene's accuracy estimates are noise (one row gave 0.017)


def audit_records(
    ids: list[str],
    texts: list[str],
    given: np.ndarray,
    labels: list[str],
    sig: Signals,
    min_precision: float,
    judges: list[dict[str, Any]] | None = None,
    errors: list[str | None] | None = None,
) -> tuple[list[Suspect], dict[str, Any]]:
    """The rows' results, most suspicious first, and the summary."""
    n, K = len(ids), len(labels)
    flag, m, est_prec = flags_for(sig.score, min_precision)
    jflag, _, _ = flags_for(sig.judge_score, min_precision)
    jrank = ranks(sig.judge_score)
    crank = ranks(sig.cleanlab_score) if sig.cleanlab_score is not None else None
    suggested = sig.post.argmax(axis=1)
    p_wrong = 1.0 - sig.score
    order = np.argsort(sig.score, kind="stable")
    recs: list[Suspect] = []
    for i in order:
        recs.append(
            Suspect(
                id=ids[i],
                text=texts[i],
                given_label=labels[given[i]],
                suggested_label=labels[suggested[i]],
                score=round(float(sig.score[i]), 6),
                flagged=bool(flag[i]),
                judge_score=round(float(sig.judge_score[i]), 6),
                judge_rank=int(jrank[i]),
                judge_flagged=bool(jflag[i]),
                cleanlab_score=None if sig.cleanlab_score is None else round(float(sig.cleanlab_score[i]), 6),
                cleanlab_rank=None if crank is None else int(crank[i]),
                cleanlab_issue=None if sig.cleanlab_issue is None else bool(sig.cleanlab_issue[i]),
                probs={labels[k]: round(float(sig.post[i, k]), 4) for k in range(K)},
                judges=(judges[i] if judges else {}),
                error=errors[i] if errors else None,
            )
        )
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
    few = n < MIN_ACCURACY_ROWS
    summary: dict[str, Any] = {
        "rows": n,
        "flagged": m,
        "min_precision": min_precision,
        "est_precision": None if not m else round(est_prec, 4),
        "est_recall": round(float(p_wrong[flag].sum() / expected), 4) if expected > 0 else None,
        "est_label_errors": round(expected, 1),
        "flag_score_threshold": round(float(sig.score[flag].max()), 6) if m else None,
        "est_given_label_accuracy": None if few else round(float(sig.judge_accuracy[-1]), 4),
        "judges": {
            name: {"accuracy": None if few else round(float(sig.judge_accuracy[j]), 4)}
            for j, name in enumerate(judge_names)
        },
        "per_class": per_class,
        "signals": {
            "judges_flagged": int(jflag.sum()),
            "cleanlab_issues": None if sig.cleanlab_issue is None else int(sig.cleanlab_issue.sum()),
            "classifier": sig.classifier_note or "tfidf logistic regression, out-of-fold",
        },
        "matrix": _matrix(given, suggested, labels),
    }
    if few:
        summary["accuracy_note"] = (
            f"judge and given-label accuracies not estimated: {n} row{'' if n == 1 else 's'}, and Dawid-Skene "
            f"needs at least {MIN_ACCURACY_ROWS} to tell a judge's errors from the given labels'"
        )
    return recs, summary


def _matrix(given: np.ndarray, suggested: np.ndarray, labels: list[str]) -> dict[str, dict[str, int]]:
    K = len(labels)
    c = np.bincount(given * K + suggested, minlength=K * K).reshape(K, K)
    return {labels[a]: {labels[b]: int(c[a, b]) for b in range(K)} for a in range(K)}


# -- gold corrections ---------------------------------------------------------------------------------------------


def gold_metrics(records: list[Suspect], gold: dict[str, str]) -> dict[str, Any] | None:
    """With true labels for some rows: AUROC of each signal, precision/recall of the flags, and precision
    against the number reviewed (records in output order, only rows with a gold label)."""
    rows = [r for r in records if r.id in gold]
    if not rows:
        return None
    wrong = np.array([gold[r.id] != r.given_label for r in rows])
    out: dict[str, Any] = {"rows": len(rows), "label_errors": int(wrong.sum())}

    def pr(mask: np.ndarray) -> dict[str, float | int | None]:
        tp = int((mask & wrong).sum())
        return {
            "flagged": int(mask.sum()),
            "precision": round(float(tp / mask.sum()), 4) if mask.any() else None,
            "recall": round(float(tp / wrong.sum()), 4) if wrong.any() else None,
        }

    for name, s, f in signal_columns(rows):
        a = auroc(-s, wrong)  # nan when the gold rows hold no label error, or nothing else: None, said so
        out[name] = {"auroc": None if a != a else round(a, 4), **pr(f)}
    out["corrected_ok"] = int(
        sum(1 for r, w in zip(rows, wrong) if r.flagged and w and r.suggested_label == gold[r.id])
    )
    hits = np.cumsum(wrong)
    out["precision_at"] = [round(float(h / (k + 1)), 4) for k, h in enumerate(hits)]
    return out


# -- the whole audit ----------------------------------------------------------------------------------------------


def score_answers(
    ids: list[str],
    texts: list[str],
    given: np.ndarray,
    labels: list[str],
    names: list[str],
    rows: list[dict[str, Any]],
    opts: AuditOptions,
) -> tuple[list[Suspect], dict[str, Any]]:
    """The audit of rows labeled by the judges (rows[i]: row i's labeling record, with "judges" and "error"):
    records most suspicious first, and the summary. `llmlabel audit` and `llmlabel.audit()` both end here."""
    answers: list[dict[str, Any]] = []
    errors: list[str | None] = []
    for rec in rows:
        js = rec.get("judges") or {}
        answers.append({n: js.get(n) or {} for n in names})
        errors.append(rec.get("error"))
    votes = VoteMatrix.from_results(map(from_record, rows), names, labels).codes
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
    return records, summary


def check_audit_task(cfg: Config, verify: bool) -> None:
    """One line for a task the audit cannot take: a taxonomy, or --verify with label sets."""
    if cfg.task.taxonomy is not None:
        raise InputError(
            "llmlabel audit does not audit taxonomy paths yet: audit one level at a time with a flat task "
            "(task.labels: that level's nodes, no task.taxonomy) and --label-column naming that level's column"
        )
    if verify and cfg.task.multi_label:
        raise InputError(
            "--verify shows the judges one given label; a multi-label audit asks each judge for its own label set "
            "and compares the sets: drop --verify"
        )


def audit_reads(cfg: Config, input_path: str | Path, gold: str | None) -> list[Read]:
    """What an audit reads: its input, --gold and the config's files (no file it writes may be one of them)."""
    return inputs(input_path) + inputs(gold, what="the --gold file") + config_reads(cfg)


def _audit_reads(input_path: str | Path, gold: str | None) -> list[Read]:
    return inputs(input_path) + inputs(gold, what="the --gold file")


def run_audit(
    cfg: Config, input_path: str | Path, output_path: str | Path, opts: AuditOptions | None = None
) -> AuditResult:
    """Ask the judges (resumable, cached: run_job into OUTPUT.judges.jsonl), score, write OUTPUT and its summary."""
    from llmlabel.io.output import write_output
    from llmlabel.pipeline.lifecycle import check_writes
    from llmlabel.pipeline.options import RunOptions
    from llmlabel.pipeline.run import run_job

    opts = opts or AuditOptions()
    input_path, output_path = Path(input_path), Path(output_path)
    check_writes(cfg, output_path, _audit_reads(input_path, opts.gold))  # (the judges' run checks its own file)
    if not 0.0 < opts.min_precision <= 1.0:
        raise InputError(f"--min-precision {opts.min_precision} must be in (0, 1]")
    check_audit_task(cfg, opts.verify)
    multi = cfg.task.multi_label
    gold = read_gold(opts.gold, cfg.task.id_column) if opts.gold else None
    labels = cfg.task.label_names
    if gold is not None:  # before any paid call: a gold label outside the set can be neither right nor wrong
        check = given_sets if multi else given_codes
        check(list(gold.values()), labels, f"gold file {opts.gold}", "a gold label")
    # Every given label is checked before any paid call: out-of-set labels stop the audit with no output.
    ids, texts, given = check_given_labels(input_path, cfg, opts.label_column)
    jpath = audit_judges_path(output_path)
    res = run_job(
        cfg,
        input_path,
        jpath,
        dataclasses.replace(
            opts.run or RunOptions(),
            # a multi-label audit asks each judge for its own set, blind to the given one
            kind="multilabel" if multi else "verify" if opts.verify else "label",
            given_label_column=None if multi else opts.label_column,
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
    answered = [by_id[rid] for rid in ids]
    if multi:
        allow = cfg.task.allow_empty
        records, summary = score_set_answers(ids, texts, given, labels, names, answered, opts, allow)
    else:
        records, summary = score_answers(ids, texts, given, labels, names, answered, opts)
    summary["input"] = str(input_path)
    if gold is not None:
        summary["gold"] = set_gold_metrics(records, gold, labels) if multi else gold_metrics(records, gold)
    write_output(output_path, [suspect_record(r) for r in records])
    atomic_write(audit_summary_path(output_path), json.dumps(summary, indent=2, ensure_ascii=False))
    result.records, result.summary, result.complete = records, summary, True
    return result


def _auroc_text(a: float | None) -> str:
    return "n/a" if a is None else f"{a:.3f}"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A few human lines for stderr."""
    if summary.get("multi_label"):
        return set_summary_lines(summary)
    out = []
    s = summary
    prec = f", estimated precision {s['est_precision']:.2f}" if s.get("est_precision") is not None else ""
    rec = f", estimated recall {s['est_recall']:.2f}" if s.get("est_recall") is not None else ""
    out.append(
        f"flagged {s['flagged']} of {s['rows']} rows{prec}{rec} (target precision {s['min_precision']}); "
        f"estimated label errors in the file: {s['est_label_errors']:.0f}"
    )
    if s.get("accuracy_note"):
        out.append(s["accuracy_note"])
    elif s.get("judges"):
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
            f"{name}: AUROC {_auroc_text(g[name]['auroc'])}, precision {g[name]['precision']}, "
            f"recall {g[name]['recall']}"
            for name in ("combined", "judges", "cleanlab")
            if name in g
        ]
        why = ""
        if g["label_errors"] in (0, g["rows"]):
            why = " (AUROC needs both right and wrong given labels among the gold rows)"
        out.append(f"against {g['rows']} gold rows ({g['label_errors']} label errors{why}): " + "; ".join(parts))
    return out
