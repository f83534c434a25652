"""`llmlabel review`: send a human the rows worth it, merge their answers, state the dataset's accuracy.

    llmlabel review OUTPUT -c CONFIG --budget N [--target-accuracy A] -o TO_REVIEW.csv       (rows to review)
    llmlabel review OUTPUT -c CONFIG --answers TO_REVIEW.csv -o FINAL.jsonl                  (merge, estimate)

with `--labelstudio URL --project ID` in place of the sheet on either side. The review's state (seed, the
validation sample, every row asked and answered) is kept in OUTPUT.review.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from llmlabel.errors import InputError

TOKEN_ENV = "LABEL_STUDIO_API_KEY"


def _state_path(output: Path) -> Path:
    from llmlabel.io.paths import review_state_path

    return review_state_path(output)


def _check_paths(writes: list[Path], reads: list[Path]) -> None:
    """No file this command writes is one it reads (or another it writes)."""
    seen: dict[Path, Path] = {}
    for r in reads:
        seen[r.resolve()] = r
    for w in writes:
        rw = w.resolve()
        if rw in seen:
            raise InputError(f"{w} is also {seen[rw]}, which this command reads or writes; choose another -o path")
        seen[rw] = w


def _labelstudio() -> Any:
    """The Label Studio transport (imported when used: it brings httpx's client in)."""
    import importlib

    return importlib.import_module("llmlabel.review.labelstudio")


def _token() -> str:
    tok = os.environ.get(TOKEN_ENV, "").strip()
    if not tok:
        raise InputError(f"set {TOKEN_ENV} to your Label Studio access token (Account & Settings) to use --labelstudio")
    return tok


def _read_sheet(path: Path) -> list[Any]:
    """Answers from a filled review sheet (id, human_label[, annotator]) or a Label Studio JSON export."""
    from llmlabel.io.rows import iter_rows
    from llmlabel.review.records import HumanAnswer

    if not path.is_file():
        raise InputError(f"answers file {path} not found; pass the review sheet with its human_label column filled")
    if path.suffix.lower() == ".json":
        return list(_labelstudio().read_export(path))
    out = []
    for i, row in enumerate(iter_rows(path)):
        if i == 0 and ("id" not in row or "human_label" not in row):
            raise InputError(f"{path}: needs 'id' and 'human_label' columns; fill the human_label column of the sheet")
        lab = row.get("human_label")
        if lab is None or str(lab).strip() == "":
            continue  # not answered (yet)
        who = row.get("annotator")
        out.append(HumanAnswer(str(row.get("id")), str(lab).strip(), None if who in (None, "") else str(who)))
    return out


def _keep_answers(path: Path, state: Any) -> None:
    """A filled sheet is a person's work: refuse to write over answers not merged yet."""
    if not path.is_file():
        return
    try:
        answers = _read_sheet(path)
    except (InputError, OSError, ValueError):
        return  # not a sheet (or not readable as one): nothing of the review's to lose
    new = [x for x in answers if x.id not in state.answers]
    if new:
        raise InputError(
            f"{path} holds {len(new)} answers not merged yet; merge them first (--answers {path} -o FINAL.jsonl) "
            "or choose another -o path"
        )


def _write_sheet(path: Path, items: list[Any], audit: bool) -> None:
    from llmlabel.io.output import write_output

    recs = []
    for it in items:
        r: dict[str, Any] = {"id": it.id, "text": it.text, "label": it.label, "confidence": it.confidence}
        if audit:
            r["given_label"] = it.given_label
        r["why"] = it.why
        r["human_label"] = ""
        recs.append(r)
    write_output(path, recs)


def _settings(a: argparse.Namespace, state: Any, where: Path) -> Any:
    from llmlabel.review.loop import Settings

    if state is not None:
        s = state.settings
        given = {
            "budget": a.budget,
            "validation": a.validation,
            "round_size": a.round_size,
            "strategy": a.strategy,
            "seed": a.seed,
            "target": a.target_accuracy,
            "level": a.level,
        }
        diff = [
            f"--{k.replace('_', '-')} {v} (was {getattr(s, k)})"
            for k, v in given.items()
            if v is not None and v != getattr(s, k)
        ]
        if diff:
            raise InputError(
                f"{where} records a review started with other settings: {', '.join(diff)}; drop those options "
                "or move the state file away to start over"
            )
        return s
    if a.budget is None:
        raise InputError("--budget N is needed to start a review: how many rows a human may label in all")
    return Settings.make(
        a.budget, a.validation, a.round_size, a.strategy or "targeted", a.seed or 0, a.target_accuracy, a.level or 0.95
    )


def cmd_review(a: argparse.Namespace) -> int:
    from llmlabel.config import load_config
    from llmlabel.io.files import atomic_write
    from llmlabel.io.rows import input_format
    from llmlabel.review.dataset import load_output
    from llmlabel.review.kinds import kind_for
    from llmlabel.review.loop import ReviewState, add_answers, merge_answers, new_state, plan_round

    out_in = Path(a.output)
    answering = a.answers is not None or (a.labelstudio is not None and a.to is not None)
    if a.labelstudio is None and a.to is None:
        raise InputError(
            "pass -o TO_REVIEW.csv (rows to review) or -o FINAL.jsonl with --answers, or --labelstudio URL"
        )
    if a.answers is not None and a.to is None:
        raise InputError("--answers needs -o FINAL.jsonl: the merged dataset is written there")
    cfg = load_config(a.config)
    state_file = _state_path(out_in)
    reads = [out_in, Path(a.config), state_file]
    if cfg.gold:
        reads.append(Path(cfg.gold))
    if a.answers:
        reads.append(Path(a.answers))
    if a.to is not None:
        input_format(Path(a.to), "output")
    state = ReviewState.from_json(state_file.read_text(), str(state_file)) if state_file.is_file() else None
    if state is None and answering:
        raise InputError(
            f"no review was started for {out_in} ({state_file.name} is missing): run "
            f"`llmlabel review {out_in} -c {a.config} --budget N -o TO_REVIEW.csv` first"
        )
    settings = _settings(a, state, state_file)
    ds = load_output(out_in, cfg.task.label_names, cfg.aggregate, cfg.mode, kind_for(cfg.task))
    if state is None:
        state = new_state(ds, settings)
    elif state.rows != len(ds):
        raise InputError(
            f"{state_file} belongs to an output of {state.rows} rows, not {len(ds)}; move it away to start over"
        )
    if a.labelstudio:
        prev = state.labelstudio or {}
        if prev and prev.get("project") is not None and a.project is not None and int(prev["project"]) != a.project:
            raise InputError(f"this review's rows are in Label Studio project {prev['project']}, not {a.project}")
        if a.project is None and prev.get("project") is not None:
            a.project = int(prev["project"])  # the project the rows were sent to
        if answering and a.answers is None and a.project is None:
            raise InputError("--labelstudio needs --project ID to read the answers from")

    if not answering:
        writes = [] if a.to is None else [Path(a.to)]
        _check_paths(writes, reads)
        if a.to is not None:
            _keep_answers(Path(a.to), state)
        items = plan_round(ds, state)
        if not items:
            print(
                f"llmlabel: the budget of {settings.budget} human labels is spent; nothing left to review",
                file=sys.stderr,
            )
            atomic_write(state_file, state.to_json())
            return 0
        _send(a, items, ds, state, Path(a.to) if a.to else None)
        atomic_write(state_file, state.to_json())
        return 0

    final = Path(a.to)
    from llmlabel.io.paths import sidecar

    summary_file = sidecar(final, ".summary.json")
    _check_paths([final, summary_file], reads)
    if a.answers:
        answers = _read_sheet(Path(a.answers))
        source = a.answers
    else:
        answers = list(_labelstudio().pull(a.labelstudio, _token(), a.project))
        source = f"Label Studio project {a.project}"
    new = add_answers(ds, state, answers, source)
    res = merge_answers(ds, state)
    summary = res.summary(state)  # before the next round is drawn: budget_left is what the answers leave
    nxt: list[Any] = []
    if (settings.target is not None and not res.target_met and state.budget_left > 0) or state.open_items():
        nxt = plan_round(ds, state)
    import json

    from llmlabel.io.output import write_output

    write_output(final, res.records)
    next_path = None
    if nxt:
        if a.labelstudio:
            summary["next_round"] = {"round": state.rounds, "rows": len(nxt), "labelstudio_project": a.project}
        else:
            next_path = Path(a.next) if a.next else sidecar(final, f".round{state.rounds}.csv")
            _check_paths([next_path], reads + [final, summary_file])
            summary["next_round"] = {"round": state.rounds, "rows": len(nxt), "path": str(next_path)}
    atomic_write(summary_file, json.dumps(summary, indent=2, ensure_ascii=False))
    if nxt:
        _send(a, nxt, ds, state, next_path, quiet=True)
    atomic_write(state_file, state.to_json())
    for line in _report(res, summary, new):
        print(line, file=sys.stderr)
    if nxt:
        where = f"Label Studio project {a.project}" if a.labelstudio else str(next_path)
        print(
            f"round {state.rounds}: {len(nxt)} more rows to review written to {where}; fill human_label and rerun "
            f"with --answers {where if not a.labelstudio else ''}".rstrip(),
            file=sys.stderr,
        )
    print(f"wrote {len(res.records)} rows to {final} and the summary to {summary_file}", file=sys.stderr)
    return 0


def _send(a: argparse.Namespace, items: list[Any], ds: Any, state: Any, path: Path | None, quiet: bool = False) -> None:
    if a.labelstudio:
        ls = _labelstudio()
        project = a.project if a.project is not None else (state.labelstudio or {}).get("project")
        pid = ls.push(
            a.labelstudio,
            _token(),
            items,
            ds.labels,
            project=project,
            text_key=a.text_key,
            from_name=a.from_name or ("taxonomy" if ds.k.name == "taxonomy" else "label"),
            to_name=a.to_name,
            **({"kind": ds.kind} if ds.kind is not None else {}),
        )
        state.labelstudio = {"url": a.labelstudio, "project": int(pid)}
        if not quiet:
            print(f"sent {len(items)} rows (round {state.rounds}) to Label Studio project {pid}", file=sys.stderr)
        return
    assert path is not None
    _write_sheet(path, items, ds.audit)
    if not quiet:
        n_val = sum(1 for it in items if it.pick == "validation")
        print(
            f"round {state.rounds}: wrote {len(items)} rows to review to {path} ({n_val} random for the estimate, "
            f"{len(items) - n_val} chosen for the value of a human label); fill human_label, then run "
            f"`llmlabel review {a.output} -c {a.config} --answers {path} -o FINAL.jsonl`",
            file=sys.stderr,
        )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _report(res: Any, s: dict[str, Any], new: int) -> list[str]:
    lvl = f"{s['level']:.0%}"
    lines = [
        f"{new} new answers; {s['human_labels']} human labels in all, {s['budget_left']} left of the budget",
        f"estimated accuracy {_pct(s['estimated_accuracy'])} ({lvl} interval {_pct(s['ci_low'])}-{_pct(s['ci_high'])}, "
        f"from {s['validation_rows']} random rows)",
    ]
    if s["target_accuracy"] is not None:
        if s["target_met"]:
            lines.append(f"target {s['target_accuracy']} met: the interval's lower bound reaches it")
        else:
            why = "budget spent" if s["budget_left"] <= 0 else "more rows to review"
            t = s["threshold"]
            extra = (
                f"; keeping rows with confidence >= {t['confidence']} ({t['accepted_rows']} rows) meets it "
                f"({lvl} interval {_pct(t['ci_low'])}-{_pct(t['ci_high'])})"
                if t
                else "; no confidence threshold meets it yet"
            )
            lines.append(f"target {s['target_accuracy']} not met ({why}){extra}")
    if s.get("kind"):
        lines.append(f"{s['kind']}: {s['accuracy_is'].split(';')[0]}")
        for lv in s.get("per_level", []):
            lines.append(
                f"  level {lv['level']}: accuracy {_pct(lv['estimated_accuracy'])} ({lvl} interval "
                f"{_pct(lv['ci_low'])}-{_pct(lv['ci_high'])})"
            )
        if s["kind"] == "multilabel":
            lines.append("  per-label precision and recall (the model's, on the random rows) are in the summary")
        lines.append(f"aggregation {s['refit']}")
    fp = s.get("flag_precision")
    if fp:
        own = fp["audit_estimate"]
        lines.append(
            f"audit flags: precision {_pct(fp['estimate'])} ({lvl} interval {_pct(fp['ci_low'])}-{_pct(fp['ci_high'])}) "
            f"on {fp['checked']} checked flags; the audit estimated {_pct(own)}"
        )
    if s.get("validation_unanswered"):
        lines.append(
            f"warning: {s['validation_unanswered']} random rows are unanswered; answer them (skipping hard rows "
            "biases the estimate)"
        )
    return lines


def register(sub: Any) -> None:
    s = sub.add_parser(
        "review",
        help="choose the rows a human should label, merge their answers, state the dataset's accuracy",
        description="Without --answers: write the rows to review (-o TO_REVIEW.csv or --labelstudio URL). "
        "With --answers (or --labelstudio URL --project ID and -o): merge the human labels into FINAL "
        "and state its accuracy with an interval; while a --target-accuracy is not met and budget remains, "
        "the next round's rows are written too. The review's state is kept in OUTPUT.review.json.",
    )
    s.add_argument("output", help="the output of `llmlabel label` or `llmlabel audit` (never modified)")
    s.add_argument("-c", "--config", required=True, help="the YAML config the output was made with")
    s.add_argument("-o", dest="to", help="TO_REVIEW.csv|.jsonl (rows to review) or, with answers, FINAL.jsonl")
    s.add_argument("--budget", type=int, help="human labels in all, over every round")
    s.add_argument("--target-accuracy", type=float, help="rounds go on until the interval's lower bound reaches this")
    s.add_argument("--validation", type=int, help="random rows for the estimate (default: half the budget, >= 30)")
    s.add_argument(
        "--round-size",
        type=int,
        help="chosen rows per round (default: the rest of the budget, in three rounds with --target-accuracy)",
    )
    s.add_argument(
        "--strategy", choices=["targeted", "random", "activelab"], help="how rows are chosen (default targeted)"
    )
    s.add_argument("--seed", type=int, help="seed of the random sample (default 0)")
    s.add_argument("--level", type=float, help="the interval's confidence level (default 0.95)")
    s.add_argument(
        "--answers", help="the filled review sheet (CSV/JSONL with id, human_label) or a Label Studio export"
    )
    s.add_argument("--next", help="where the next round's rows go (default: FINAL.roundK.csv)")
    s.add_argument("--labelstudio", metavar="URL", help=f"a Label Studio server (token in ${TOKEN_ENV})")
    s.add_argument("--project", type=int, help="the Label Studio project id (created on the first push if omitted)")
    s.add_argument("--text-key", default="text", help="with --labelstudio: the task's text field (default text)")
    s.add_argument(
        "--from-name",
        default=None,
        help="with --labelstudio: the Choices (or, for a taxonomy, Taxonomy) control (default label / taxonomy)",
    )
    s.add_argument("--to-name", default="text", help="with --labelstudio: the Text object (default text)")
    s.set_defaults(func=cmd_review)
