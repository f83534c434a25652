"""The review loop: plan a round of rows for a human, merge their answers, state the dataset's accuracy.

`plan_round` and `merge_answers` are what `llmlabel review` runs, one call each; `simulate` runs whole rounds
with a callable as the human (benchmarks, notebooks). All state between calls lives in a `ReviewState`
(saved as OUTPUT.review.json by the CLI): the seed, the validation sample, every row asked and every answer,
so a later round never draws a different sample or asks an answered row again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from llmlabel.ensemble.calibration import calibrate_confidence
from llmlabel.errors import InputError
from llmlabel.evaluation.metrics import expected_calibration_error
from llmlabel.results import JudgeAnswer
from llmlabel.review.dataset import Dataset, ModelView, crossfit, model_view
from llmlabel.review.kinds import LabelKind
from llmlabel.review.records import HumanAnswer, ReviewItem
from llmlabel.review.selection import Strategy, activelab_priority, item, priorities, random_pick, ranked_pick
from llmlabel.review.stats import (
    Interval,
    Part,
    Threshold,
    accept_threshold,
    dataset_accuracy,
    proportion,
    stratified_accuracy,
)

__all__ = [
    "Asked",
    "ReviewResult",
    "ReviewState",
    "RoundReport",
    "Settings",
    "judge_confidence",
    "merge_answers",
    "plan_round",
    "simulate",
]

STATE_VERSION = 1


@dataclass(frozen=True)
class Settings:
    """What a review is started with; fixed for its life (a later call with other values is refused)."""

    budget: int
    validation: int
    round_size: int
    strategy: Strategy = "targeted"
    seed: int = 0
    target: float | None = None
    level: float = 0.95

    @staticmethod
    def make(
        budget: int,
        validation: int | None = None,
        round_size: int | None = None,
        strategy: Strategy = "targeted",
        seed: int = 0,
        target: float | None = None,
        level: float = 0.95,
    ) -> Settings:
        """Defaults: half the budget (at least 30, at most the budget) as the validation sample; the rest in one
        round without a target, in three rounds with one."""
        if budget < 1:
            raise InputError(f"--budget {budget} must be at least 1")
        if target is not None and not 0.0 < target < 1.0:
            raise InputError(f"--target-accuracy {target} must be between 0 and 1")
        if not 0.0 < level < 1.0:
            raise InputError(f"--level {level} must be between 0 and 1")
        v = min(budget, max(30, budget // 2)) if validation is None else validation
        if not 0 <= v <= budget:
            raise InputError(f"--validation {v} must be between 0 and --budget {budget}")
        rest = budget - v
        if round_size is None:
            round_size = rest if target is None else math.ceil(rest / 3)
        if round_size < 0:
            raise InputError(f"--round-size {round_size} must be 0 or more")
        return Settings(budget, v, round_size, strategy, seed, target, level)


@dataclass
class Asked:
    """A row sent to a human: in which round, as what, and what the model said then."""

    id: str
    round: int
    pick: str  # validation | targeted
    label: str | None
    confidence: float | None
    why: str = ""


@dataclass
class ReviewState:
    output: str
    rows: int
    settings: Settings
    frame_excluded: list[str] = field(default_factory=list)  # round 1's targeted rows: outside the sampling frame
    validation_ids: list[str] = field(default_factory=list)
    asked: list[Asked] = field(default_factory=list)
    answers: dict[str, HumanAnswer] = field(default_factory=dict)
    answer_round: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    labelstudio: dict[str, Any] | None = None  # {"url", "project"} once rows went to Label Studio

    @property
    def budget_left(self) -> int:
        return self.settings.budget - len(self.asked)

    def open_items(self) -> list[Asked]:
        """Rows asked and not answered yet."""
        return [a for a in self.asked if a.id not in self.answers]

    def to_json(self) -> str:
        d = asdict(self)
        d["version"] = STATE_VERSION
        d["answers"] = {k: asdict(v) for k, v in self.answers.items()}
        return json.dumps(d, indent=1, ensure_ascii=False)

    @staticmethod
    def from_json(text: str, where: str) -> ReviewState:
        try:
            d = json.loads(text)
            if d.pop("version", None) != STATE_VERSION:
                raise ValueError("unknown version")
            d["settings"] = Settings(**d["settings"])
            d["asked"] = [Asked(**a) for a in d["asked"]]
            d["answers"] = {k: HumanAnswer(**v) for k, v in d["answers"].items()}
            return ReviewState(**d)
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"{where} is not a review state file this llmlabel can read ({e}); move it away") from None


@dataclass(frozen=True)
class LabelAccuracy:
    rows: int
    human_labels: int
    accuracy: Interval


@dataclass(frozen=True)
class JudgeCalibration:
    """A judge's confidence against the human answers: accuracy and ECE on the random validation rows (raw
    confidence), and whether a Platt map was fitted on every answered row."""

    gold_rows: int  # human-labeled rows the judge answered (the Platt map is fitted on them)
    validation_rows: int  # of them, random validation rows (accuracy and ECE are read on these)
    accuracy: float | None
    ece: float | None
    calibrated_on: int


@dataclass
class ReviewResult:
    """What merging the answers gave: every row (human labels first), the stated accuracy, and what comes next."""

    records: list[dict[str, Any]]
    accuracy: Interval
    human_labels: int
    accepted_rows: int
    target_met: bool | None
    threshold: Threshold | None
    per_label: dict[str, LabelAccuracy]
    judges: dict[str, JudgeCalibration]
    flag_precision: Interval | None = None  # an audit's flags, from the random spot-check
    audit_precision: float | None = None  # the audit's own estimate, beside it
    validation_unanswered: int = 0
    quality: dict[str, Any] = field(default_factory=dict)
    kind: str = "single"
    per_level: list[Interval] = field(default_factory=list)  # a taxonomy's accuracy at each level
    label_scores: dict[str, LabelScores] = field(default_factory=dict)  # a multi-label task's, per label

    def summary(self, state: ReviewState) -> dict[str, Any]:
        """FINAL.summary.json."""
        s = state.settings
        acc = self.accuracy

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        out: dict[str, Any] = {
            "estimated_accuracy": r(acc.estimate),
            "ci_low": r(acc.low),
            "ci_high": r(acc.high),
            "level": s.level,
            "validation_rows": acc.sample,
            "human_labels": self.human_labels,
            "rows": len(self.records),
            "accepted_rows": self.accepted_rows,
            "target_accuracy": s.target,
            "target_met": self.target_met,
            "threshold": None
            if self.threshold is None
            else {
                "confidence": r(self.threshold.confidence),
                "accepted_rows": self.threshold.accepted_rows,
                "estimated_accuracy": r(self.threshold.accuracy.estimate),
                "ci_low": r(self.threshold.accuracy.low),
                "ci_high": r(self.threshold.accuracy.high),
            },
            "per_label": {
                lab: {
                    "rows": v.rows,
                    "human_labels": v.human_labels,
                    "estimated_accuracy": r(v.accuracy.estimate),
                    "ci_low": r(v.accuracy.low),
                    "ci_high": r(v.accuracy.high),
                    "validation_rows": v.accuracy.sample,
                }
                for lab, v in self.per_label.items()
            },
            "judges": {
                n: {
                    "gold_rows": j.gold_rows,
                    "validation_rows": j.validation_rows,
                    "accuracy": r(j.accuracy),
                    "ece": r(j.ece),
                    "calibrated_on": j.calibrated_on,
                }
                for n, j in self.judges.items()
            },
            "rounds": state.rounds,
            "budget": s.budget,
            "budget_left": state.budget_left,
            "strategy": s.strategy,
            "seed": s.seed,
        }
        if self.validation_unanswered:
            out["validation_unanswered"] = self.validation_unanswered
        if self.flag_precision is not None:
            fp = self.flag_precision
            out["flag_precision"] = {
                "estimate": r(fp.estimate),
                "ci_low": r(fp.low),
                "ci_high": r(fp.high),
                "checked": fp.sample,
                "audit_estimate": self.audit_precision,
            }
        if self.quality:
            out["aggregation"] = {k: v for k, v in self.quality.items() if k not in ("judges",)}
        if self.kind != "single":
            out["kind"] = self.kind
            out["accuracy_is"] = ACCURACY_IS[self.kind]
            out["refit"] = NO_REFIT[self.kind]
        if self.per_level:
            out["per_level"] = [
                {
                    "level": i + 1,
                    "estimated_accuracy": r(a.estimate),
                    "ci_low": r(a.low),
                    "ci_high": r(a.high),
                    "validation_rows": a.sample,
                }
                for i, a in enumerate(self.per_level)
            ]
        if self.label_scores:
            out["per_label"] = {
                lab: {
                    "model_rows": v.model_rows,
                    "precision": r(v.precision.estimate),
                    "precision_ci": [r(v.precision.low), r(v.precision.high)],
                    "precision_rows": v.precision.sample,
                    "recall": r(v.recall.estimate),
                    "recall_ci": [r(v.recall.low), r(v.recall.high)],
                    "recall_rows": v.recall.sample,
                }
                for lab, v in self.label_scores.items()
            }
        return out


# What the stated accuracy means for each kind of task (FINAL.summary.json says it; docs/review.md explains).
ACCURACY_IS = {
    "multilabel": "subset accuracy: a row is right when its whole label set is right",
    "taxonomy": "a row is right when the path it reached is right (it may stop at a right parent); per_level gives "
    "each level's accuracy (a row that stopped above a level its true path has counts wrong there)",
}
# Why the aggregation is not refit on the answers for these kinds (the CLI says it in one line).
NO_REFIT = {
    "multilabel": "not refit: a multi-label task's labels are decided one by one from the judges' sets; human sets "
    "override rows, the other rows keep the model's sets (fit per-label thresholds with `gold:` and relabel "
    "from the cache)",
    "taxonomy": "not refit: a taxonomy's path is decided level by level as it is asked, so a refit could not change "
    "it without asking again; human paths override rows, the other rows keep the model's paths",
}


# -- planning a round --------------------------------------------------------------------------------------------


def new_state(ds: Dataset, settings: Settings) -> ReviewState:
    return ReviewState(output=str(ds.path), rows=len(ds), settings=settings)


def _rng(state: ReviewState, round_no: int) -> np.random.Generator:
    # One stream per round, from the review's seed: a round's draw never depends on how earlier rounds went.
    return np.random.default_rng([state.settings.seed, round_no])


def _gold(state: ReviewState) -> dict[str, str]:
    return {k: v.label for k, v in state.answers.items()}


def plan_round(ds: Dataset, state: ReviewState, view: ModelView | None = None) -> list[ReviewItem]:
    """The rows to show a human now. Rows asked and not yet answered come back as they were (nothing is drawn
    again); otherwise a new round is drawn while budget remains (empty list: nothing left to ask). The state is
    updated in place: save it once the rows are written."""
    s = state.settings
    idx = ds.index()
    if state.open_items():
        view = view or model_view(ds, _gold(state))
        return [_as_item(ds, view, a, idx[a.id]) for a in state.open_items()]
    left = state.budget_left
    if left <= 0:
        return []
    view = view or model_view(ds, _gold(state))
    round_no = state.rounds + 1
    rng = _rng(state, round_no)
    asked = {idx[a.id] for a in state.asked}
    picks: list[tuple[int, str, str, float]] = []  # row, pick, why, priority
    if s.strategy == "random":
        k = min(left, s.validation + s.round_size if round_no == 1 else s.round_size)
        pool = [i for i in range(len(ds)) if i not in asked]
        for i in random_pick(pool, k, rng):
            picks.append((i, "validation", "random sample (for the accuracy estimate)", 0.0))
    else:
        n_val = min(s.validation, left) if round_no == 1 else 0
        k = min(left - n_val, s.round_size)
        targeted = _targeted(ds, view, asked, k, s.strategy, rng)
        picks += targeted
        if round_no == 1:
            state.frame_excluded = [ds.ids[i] for i, *_ in targeted]
            frame = sorted(set(range(len(ds))) - {i for i, *_ in targeted})
            for i in random_pick(frame, n_val, rng):
                picks.append((i, "validation", "random sample (for the accuracy estimate)", 0.0))
    if not picks:
        return []
    # Shown in a shuffled order, so a reviewer cannot tell the random rows from the hard ones by position.
    order = rng.permutation(len(picks))
    picks = [picks[int(o)] for o in order]
    state.rounds = round_no
    items = []
    for i, pick, why, pr in picks:
        it = item(ds, view, i, pick, why, pr)
        items.append(it)
        state.asked.append(Asked(it.id, round_no, pick, view.label[i], it.confidence, why))
        if pick == "validation":
            state.validation_ids.append(it.id)
    return items


def _targeted(
    ds: Dataset, view: ModelView, asked: set[int], k: int, strategy: str, rng: np.random.Generator
) -> list[tuple[int, str, str, float]]:
    if k <= 0:
        return []
    value, why = priorities(ds, view)
    out: list[tuple[int, str, str, float]] = []
    if ds.audit:
        # Flagged rows first, drawn at random among them: the flags' precision then reads straight off the
        # answers (the most suspicious first would overstate it). Then the highest-value unflagged rows.
        flagged = [i for i in np.flatnonzero(ds.flagged) if int(i) not in asked]
        for i in random_pick([int(i) for i in flagged], k, rng):
            out.append((i, "targeted", why[i] + " (a random spot-check of the flags)", float(value[i])))
        taken = asked | {i for i, *_ in out}
        for i in ranked_pick(value, taken, k - len(out), rng):
            out.append((i, "targeted", why[i], float(value[i])))
        return out
    if strategy == "activelab":
        value = activelab_priority(ds, view)
        why = [f"ActiveLab re-labeling priority {v:.3f}" for v in value]
    for i in ranked_pick(value, asked, k, rng):
        out.append((i, "targeted", why[i], float(value[i])))
    return out


def _as_item(ds: Dataset, view: ModelView, a: Asked, i: int) -> ReviewItem:
    it = item(ds, view, i, a.pick, a.why or f"asked in round {a.round}")
    # The label shown is the one the human was first shown, so a re-written sheet matches the first.
    if ds.audit:
        return it
    return ReviewItem(
        it.id, it.text, a.label, a.confidence, it.pick, it.why, it.priority, it.given_label, dict(it.probs)
    )


# -- merging answers -------------------------------------------------------------------------------------------------


def add_answers(ds: Dataset, state: ReviewState, answers: Iterable[HumanAnswer], source: str) -> int:
    """Check and keep the answers; returns how many are new. One-line errors for an id not in OUTPUT, a label
    outside the task's set, two different answers for a row (a human label is never replaced silently)."""
    ids = set(ds.ids)
    k = ds.k
    new: dict[str, HumanAnswer] = {}
    for a in answers:
        if a.id not in ids:
            raise InputError(f"{source}: id {a.id!r} is not a row of {ds.path}; answer only the rows sent for review")
        key = k.parse(a.label)
        if key is None:
            raise InputError(f"{source}: row {a.id!r} has human_label {a.label!r}, not {k.example()}; fix it and rerun")
        a = HumanAnswer(a.id, key, a.annotator, a.source)  # a set or path as its key (review.kinds)
        before = state.answers.get(a.id) or new.get(a.id)
        if before is not None and before.label != a.label:
            raise InputError(
                f"{source}: row {a.id!r} is answered {a.label!r}, but it already has the human label "
                f"{before.label!r}; human labels are never replaced: fix the sheet (or remove the row from the "
                "review state file by hand)"
            )
        if before is None:
            new[a.id] = a
    round_no = max(state.rounds, 1)
    for rid, a in new.items():
        state.answers[rid] = a
        state.answer_round[rid] = round_no
    return len(new)


def judge_confidence(ans: JudgeAnswer | None, kind: LabelKind | None = None) -> tuple[str | None, float | None]:
    """A judge's label and its own confidence in it: its probability for the label when it gave logprobs, else
    1.0 (a judge without logprobs says nothing less than sure). A multi-label or taxonomy judge's answer is its
    set or path (review.kinds), at 1.0."""
    if kind is not None and not kind.single:
        key = kind.judge_key(ans)
        return key, None if key is None else 1.0
    if ans is None or not ans.label:
        return None, None
    lab = ans.label
    p = ans.probs
    if p is not None and lab in p:
        return lab, float(p[lab])
    return lab, 1.0


def judge_calibrators(
    ds: Dataset, gold: dict[str, str], min_rows: int = 20
) -> dict[str, tuple[Callable[[float], float] | None, int]]:
    """Per judge, a Platt map of its own confidence fitted on the human-labeled rows (ensemble.calibration's
    calibrate_confidence; None under `min_rows` rows or when the judge is always right), and the rows it saw."""
    idx = ds.index()
    out: dict[str, tuple[Callable[[float], float] | None, int]] = {}
    for name in ds.judge_names:
        conf, ok = [], []
        for rid, lab in gold.items():
            jl, c = judge_confidence(ds.results[idx[rid]].judges.get(name), ds.k)
            if jl is not None and c is not None:
                conf.append(c)
                ok.append(ds.k.right(jl, lab))
        out[name] = (calibrate_confidence(conf, ok, min_rows=min_rows), len(conf))
    return out


def merge_answers(ds: Dataset, state: ReviewState) -> ReviewResult:
    """Learn from every answer in `state` and state the final dataset's accuracy."""
    s = state.settings
    gold = _gold(state)
    view = model_view(ds, gold)
    idx = ds.index()
    n = len(ds)
    human = np.zeros(n, dtype=bool)
    for rid in gold:
        human[idx[rid]] = True
    in_frame = np.ones(n, dtype=bool)
    for rid in state.frame_excluded:
        in_frame[idx[rid]] = False
    val_ids = [r for r in state.validation_ids if r in gold]
    val = np.zeros(n, dtype=bool)
    for rid in val_ids:
        val[idx[rid]] = True
    # The model's label on each human-labeled frame row, learned without that row's answer.
    reviewed_frame = [ds.ids[i] for i in np.flatnonzero(human & in_frame)]
    cf = crossfit(ds, gold, reviewed_frame, folds=3, seed=s.seed)
    learned = ds.kind is None
    if gold and not ds.audit and ds.kind is None:
        # Learning is kept only where it helps: the refit on answers is checked against the judges' own labels on
        # the answered rows (out of fold). A few skewed answers (hard rows only, a label prior far from the
        # data's) can make the refit leave good judges out; then the judges' labels stay.
        base = model_view(ds)
        hits_cf = sum(cf[r][0] == gold[r] for r in reviewed_frame)
        hits_base = sum(base.label[idx[r]] == gold[r] for r in reviewed_frame)
        if hits_cf < hits_base:
            learned = False
            view = ModelView(base.label, base.confidence, base.probs, {"learned": False, **base.quality})
            cf = {r: (base.label[idx[r]], float(base.confidence[idx[r]])) for r in reviewed_frame}
    m_label: list[str | None] = list(view.label)
    m_conf = view.confidence.copy()
    k = ds.k
    right = np.zeros(n, dtype=bool)
    for rid, (lab, c) in cf.items():
        i = idx[rid]
        m_label[i], m_conf[i] = lab, c
        right[i] = k.right(lab, gold[rid])
    other = human & in_frame & ~val
    unrev = ~human

    def part(mask: np.ndarray, human_mask: np.ndarray | None = None, correct: np.ndarray = right) -> Part:
        hm = human if human_mask is None else human_mask
        return Part(
            human=int(hm.sum()),
            unreviewed=int((unrev & mask).sum()),
            frame=int((in_frame & mask).sum()),
            sample=int((val & mask).sum()),
            sample_correct=int((val & mask & correct).sum()),
            other_correct=int((other & mask & correct).sum()),
        )

    # The strata: the frame cut by the round-1 confidence (the judges' own, before any answer), fixed before the
    # validation sample was drawn.
    base_conf = model_view(ds).confidence

    def accuracy(correct: np.ndarray) -> Interval:
        strata = _strata(base_conf, in_frame, val, lambda m: part(m, correct=correct), unrev)
        return stratified_accuracy(int(human.sum()), strata, s.level)

    acc = accuracy(right)
    per_label: dict[str, LabelAccuracy] = {}
    lab_arr = np.array([x if x is not None else "\x00" for x in m_label], dtype=object)
    final_lab = np.array([gold[ds.ids[i]] if human[i] else (m_label[i] or "\x00") for i in range(n)], dtype=object)
    # Per label: one label per row, or a taxonomy's paths (each path reached is a label); a multi-label task's
    # labels are read one at a time instead (precision and recall, below).
    keys = ds.labels if k.single else ([] if k.name == "multilabel" else sorted(set(lab_arr) - {"\x00"}))
    for lab in keys:
        hm = human & (final_lab == lab)
        p = part(lab_arr == lab, hm)
        per_label[lab] = LabelAccuracy(p.rows, int(hm.sum()), dataset_accuracy(p, s.level))
    per_level: list[Interval] = []
    if k.name == "taxonomy":
        for level in range(1, k.depth + 1):
            at = np.zeros(n, dtype=bool)
            for rid in gold:
                at[idx[rid]] = k.right_at(m_label[idx[rid]], gold[rid], level)
            per_level.append(accuracy(at))
    set_scores = _label_scores(k, m_label, gold, idx, val, in_frame, s.level) if k.name == "multilabel" else {}
    threshold: Threshold | None = None
    target_met: bool | None = None
    accepted = n
    if s.target is not None:
        target_met = acc.estimate is not None and acc.low >= s.target
        if not target_met:
            labeled = lab_arr != "\x00"
            threshold = accept_threshold(
                [float(m_conf[i]) for i in np.flatnonzero(val)],
                lambda t: part(labeled & (m_conf >= t)),
                s.target,
                s.level,
            )
            accepted = threshold.accepted_rows if threshold else int(human.sum())
    judges = _judge_report(ds, gold, val)
    records = _final_records(ds, view, state, judges)
    flag_precision = None
    if ds.audit and ds.flagged.any():
        asked = {a.id for a in state.asked}
        chk = [rid for rid in gold if rid in asked and ds.flagged[idx[rid]]]
        wrong = sum(1 for rid in chk if gold[rid] != view.label[idx[rid]])
        flag_precision = proportion(wrong, len(chk), int(ds.flagged.sum()), s.level)
    return ReviewResult(
        records=records,
        accuracy=acc,
        human_labels=int(human.sum()),
        accepted_rows=accepted,
        target_met=target_met,
        threshold=threshold,
        per_label=per_label,
        judges={k: v[0] for k, v in judges.items()},
        flag_precision=flag_precision,
        audit_precision=ds.audit_precision,
        validation_unanswered=len(state.validation_ids) - len(val_ids),
        quality={**view.quality, "learned_from_answers": learned},
        kind=k.name,
        per_level=per_level,
        label_scores=set_scores,
    )


@dataclass(frozen=True)
class LabelScores:
    """A multi-label task's label, read alone on the random validation rows: the model's precision (of the rows
    it gave the label, how many a human gave it too) and recall (of the rows a human gave it, how many the model
    did), each with its Wilson interval. These describe the model's labels on the rows nobody reviewed."""

    model_rows: int  # frame rows the model gave the label (the population precision is read over)
    precision: Interval
    recall: Interval


def _label_scores(
    k: LabelKind,
    m_label: list[str | None],
    gold: dict[str, str],
    idx: dict[str, int],
    val: np.ndarray,
    in_frame: np.ndarray,
    level: float,
) -> dict[str, LabelScores]:
    out: dict[str, LabelScores] = {}
    sample = [(k.members(m_label[idx[rid]]), k.members(g)) for rid, g in gold.items() if val[idx[rid]]]
    frame_sets = [k.members(m_label[i]) for i in np.flatnonzero(in_frame)]
    for lab in k.labels:
        tp = sum(1 for m, g in sample if lab in m and lab in g)
        fp = sum(1 for m, g in sample if lab in m and lab not in g)
        fn = sum(1 for m, g in sample if lab not in m and lab in g)
        pop = sum(1 for m in frame_sets if lab in m)
        out[lab] = LabelScores(
            pop, proportion(tp, tp + fp, max(pop, tp + fp), level), proportion(tp, tp + fn, None, level)
        )
    return out


# Two strata of 40+ validation rows each: measured on synthetic reviews (tests/unit/test_review_stats.py), four
# strata of 25 rows covered 92-94% at a 95% level (each stratum's own interval is rough on few rows), two kept
# 94.5-95.7% and still narrowed the interval once later rounds had reviewed the unsure stratum through.
MIN_STRATUM_SAMPLE = 40  # validation rows a stratum needs; thinner strata are merged into their neighbour
MAX_STRATA = 2


def _strata(
    conf: np.ndarray,
    in_frame: np.ndarray,
    val: np.ndarray,
    part: Callable[[np.ndarray], Part],
    unrev: np.ndarray,
) -> list[Part]:
    """The frame cut at quantiles of the round-1 confidence into up to MAX_STRATA strata of at least
    MIN_STRATUM_SAMPLE validation rows each (merged by position only, never by what the answers say), plus the
    unreviewed rows outside the frame (round-1 targeted rows not answered yet) as a stratum with no sample."""
    n_val = int(val.sum())
    k = max(1, min(MAX_STRATA, n_val // MIN_STRATUM_SAMPLE))
    fc = conf[in_frame]
    edges = np.unique(np.quantile(fc, [i / k for i in range(1, k)])) if k > 1 and fc.size else np.array([])
    group = np.searchsorted(edges, conf, side="left")
    # Merge strata with too few validation rows into the next one down (then up), keeping their order.
    ids = sorted(set(group[in_frame].tolist()))
    merged: list[list[int]] = []
    for g in ids:
        if merged and int((val & np.isin(group, merged[-1])).sum()) < MIN_STRATUM_SAMPLE:
            merged[-1].append(g)
        else:
            merged.append([g])
    if len(merged) > 1 and int((val & np.isin(group, merged[-1])).sum()) < MIN_STRATUM_SAMPLE:
        last = merged.pop()
        merged[-1] += last
    parts = [part(np.isin(group, gs) & in_frame) for gs in merged] or [part(in_frame)]
    outside = unrev & ~in_frame
    if outside.any():
        parts.append(Part(human=0, unreviewed=int(outside.sum()), frame=0, sample=0, sample_correct=0))
    return parts


def _judge_report(
    ds: Dataset, gold: dict[str, str], val: np.ndarray
) -> dict[str, tuple[JudgeCalibration, Callable[[float], float] | None]]:
    idx = ds.index()
    cals = judge_calibrators(ds, gold)
    out = {}
    for name in ds.judge_names:
        conf, ok = [], []
        for rid, lab in gold.items():
            i = idx[rid]
            if not val[i]:
                continue
            jl, c = judge_confidence(ds.results[i].judges.get(name), ds.k)
            if jl is not None and c is not None:
                conf.append(c)
                ok.append(ds.k.right(jl, lab))
        f, rows = cals[name]
        out[name] = (
            JudgeCalibration(
                gold_rows=rows,
                validation_rows=len(ok),
                accuracy=float(np.mean(ok)) if ok else None,
                ece=expected_calibration_error(np.array(conf), np.array(ok)) if ok else None,
                calibrated_on=rows if f is not None else 0,
            ),
            f,
        )
    return out


def _final_records(
    ds: Dataset,
    view: ModelView,
    state: ReviewState,
    judges: dict[str, tuple[JudgeCalibration, Callable[[float], float] | None]],
) -> list[dict[str, Any]]:
    out = []
    for i, rec in enumerate(ds.records):
        rid = ds.ids[i]
        a = state.answers.get(rid)
        r = dict(rec)
        if ds.kind is not None:  # a set or a path: the model's row as it was, a human's answer written over it
            r["model_label"] = view.label[i]
            if a:
                ds.kind.write(r, a.label)
                r["confidence"] = 1.0
            r["label_source"] = "human" if a else "model"
        elif ds.audit:
            r["label"] = a.label if a else view.label[i]
            r["label_source"] = "human" if a else "given"
        else:
            r["model_label"] = view.label[i]
            r["label"] = a.label if a else view.label[i]
            r["confidence"] = 1.0 if a else (round(float(view.confidence[i]), 4) if view.label[i] else None)
            if not a:
                r["probs"] = view.probs[i]
            r["label_source"] = "human" if a else "model"
            js = r.get("judges")
            if isinstance(js, dict):
                new = {}
                answers = ds.results[i].judges
                for name, ans in js.items():
                    f = judges.get(name, (None, None))[1]
                    _, c = judge_confidence(answers.get(name))
                    new[name] = {**ans, "confidence_calibrated": round(f(c), 4)} if f and c is not None else ans
                r["judges"] = new
        if a:
            r["human_label"] = a.label
            if a.annotator:
                r["annotator"] = a.annotator
        out.append(r)
    return out


# -- whole rounds with a simulated human ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundReport:
    round: int
    asked: int
    human_labels: int
    result: ReviewResult


def simulate(
    ds: Dataset, settings: Settings, human: Callable[[ReviewItem], str | None], max_rounds: int = 100
) -> list[RoundReport]:
    """Run rounds with `human` answering each row (None: skipped) until the target is met, the budget is spent
    or nothing is left to ask. One report per round; the last is where it stopped."""
    state = new_state(ds, settings)
    reports: list[RoundReport] = []
    for _ in range(max_rounds):
        items = plan_round(ds, state)
        if not items:
            break
        got = [HumanAnswer(it.id, lab) for it in items if (lab := human(it)) is not None]
        add_answers(ds, state, got, "simulated human")
        # A skipped row was never asked: it leaves the budget and the sample (skips must not depend on the label).
        state.asked = [a for a in state.asked if a.id in state.answers]
        state.validation_ids = [r for r in state.validation_ids if r in state.answers]
        res = merge_answers(ds, state)
        reports.append(RoundReport(state.rounds, len(items), res.human_labels, res))
        if res.target_met or state.budget_left <= 0:
            break
    return reports
