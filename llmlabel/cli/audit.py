"""`llmlabel audit`: rank a labeled dataset's rows by how likely their given label is wrong."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from llmlabel.errors import LLMLabelError


def _fraction(v: str) -> float:
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a number") from None
    if not 0.0 < f <= 1.0:
        raise argparse.ArgumentTypeError(f"{v} must be in (0, 1]")
    return f


def cmd_audit(a: argparse.Namespace) -> int:
    from pathlib import Path

    from llmlabel.auditing.audit import AuditOptions, audit_reads, run_audit, summary_lines
    from llmlabel.auditing.exports import export_csv, export_labelstudio, labelstudio_config
    from llmlabel.config import load_config
    from llmlabel.io import paths
    from llmlabel.io.guard import SIDECARS, check_output

    cfg = load_config(a.config)
    reads = audit_reads(cfg, a.input, a.gold)
    check_output(a.output, reads)
    written = [Path(a.output), *(paths.sidecar(a.output, s) for s in SIDECARS)]
    for path, what, flag in (
        (a.html, ".html", "--html"),
        (a.export_labelstudio, ".json", "--export-labelstudio"),
        (a.export_csv, ".csv", "--export-csv"),
    ):
        if path and not path.lower().endswith(what):
            raise LLMLabelError(f"{path}: expected a {what} file name")
        if path:  # nor may a report overwrite what the audit reads or writes
            check_output(
                path,
                reads + [(w, "a file of the audit's output") for w in written],
                flag=flag,
                table=False,
                sidecars=False,
            )
            if flag == "--export-labelstudio":  # and the labeling config written beside it
                ls_xml = Path(path).with_suffix(".labeling.xml")
                check_output(
                    ls_xml,
                    reads + [(w, "a file of the audit's output") for w in written],
                    flag=flag,
                    table=False,
                    sidecars=False,
                )
    target = _ls_target(a, cfg.task.label_names, cfg.task.multi_label)  # checked before the judges are paid
    opts = AuditOptions(
        label_column=a.label_column,
        verify=a.verify,
        min_precision=a.min_precision,
        features=a.features,
        classifier=not a.no_classifier,
        gold=a.gold,
        max_cost=a.max_cost,
        max_requests=a.max_requests,
        progress=not a.quiet,
    )
    try:
        res = run_audit(cfg, a.input, a.output, opts)
    except LLMLabelError as e:
        ledger = e.ledger  # what the stopped run cost (set by its finish)
        if ledger is not None and ledger.rows_done:
            print(ledger.table(), file=sys.stderr)
        raise
    except ImportError as e:
        raise LLMLabelError(
            f"--features {a.features} needs an optional package ({e.name}); install it, or use --features tfidf"
        ) from None
    if res.ledger is not None:
        print(res.ledger.table(), file=sys.stderr)
    for w in res.warnings:
        print(f"llmlabel: warning: {w}", file=sys.stderr)
    if not res.complete:
        print(
            f"llmlabel: stopped: {res.stopped_by}; the judges' answers so far are kept, rerun the same command "
            "to continue",
            file=sys.stderr,
        )
        return 130
    for line in summary_lines(res.summary):
        print(line, file=sys.stderr)
    done: list[str] = [f"wrote {len(res.records)} rows to {a.output} (most suspicious first)"]
    if a.html:
        from llmlabel.auditing.report import write_report

        write_report(a.html, res.records, res.summary)
        done.append(f"report {a.html}")
    if a.export_labelstudio:
        n = export_labelstudio(a.export_labelstudio, res.records, target)
        done.append(f"{n} Label Studio tasks in {a.export_labelstudio}")
        if not a.ls_config:
            xml = str(Path(a.export_labelstudio).with_suffix(".labeling.xml"))
            labelstudio_config(xml, cfg.task.label_names, target, cfg.task.multi_label)
            done.append(f"their labeling config in {xml}")
    if a.export_csv:
        n = export_csv(a.export_csv, res.records)
        done.append(f"{n} rows for review in {a.export_csv}")
    print("; ".join(done), file=sys.stderr)
    return 0


def _ls_target(a: argparse.Namespace, labels: list[str], multi_label: bool = False) -> Any:
    """The Label Studio project the export is for: a labeling config file, or the --ls-* names."""
    from pathlib import Path

    from llmlabel.auditing.exports import LSTarget

    names = {"from_name": a.ls_from_name, "to_name": a.ls_to_name, "text_key": a.ls_text_key}
    if a.ls_config:
        if any(v is not None for v in names.values()):
            raise LLMLabelError(
                "--ls-config names the control and text field: drop --ls-from-name/--ls-to-name/--ls-text-key"
            )
        try:
            xml = Path(a.ls_config).read_text(encoding="utf-8")
        except OSError as e:
            raise LLMLabelError(f"cannot read --ls-config {a.ls_config}: {e.strerror}") from None
        return LSTarget.from_config(xml, labels, multi_label=multi_label or None)
    return LSTarget(**{k: v for k, v in names.items() if v is not None})


def register(sub: Any) -> None:
    s = sub.add_parser("audit", help="find likely label errors in a labeled dataset, most suspicious first")
    s.add_argument("input", help="labeled corpus (CSV/JSONL/Parquet) with a text and a label column")
    s.add_argument("-c", "--config", required=True, help="YAML config (task, judges, options)")
    s.add_argument("-o", "--output", required=True, help="audit output: .jsonl, .csv or .parquet, sorted by score")
    s.add_argument("--label-column", default="label", help="column holding the given labels (default: label)")
    s.add_argument(
        "--verify", action="store_true", help="ask through the verify prompt, which shows the judges the given label"
    )
    s.add_argument(
        "--min-precision",
        type=_fraction,
        default=0.8,
        help="flag as many rows as keep the estimated precision of the flags at or above this (default 0.8)",
    )
    s.add_argument("--html", metavar="REPORT.html", help="write a self-contained HTML report")
    s.add_argument(
        "--gold",
        metavar="FILE",
        help="true labels (id,label) for some rows: precision curves in the report and summary; never used to score",
    )
    s.add_argument(
        "--export-labelstudio",
        "--labelstudio-export",
        metavar="FILE.json",
        help="flagged rows as Label Studio tasks: the suggestion as a prediction, the given label beside it",
    )
    s.add_argument(
        "--ls-config",
        metavar="CONFIG.xml",
        help="the Label Studio project's labeling config: the export uses its <Choices> name, toName and text "
        "field, and its choices' spelling (default: writes FILE.labeling.xml beside the export)",
    )
    s.add_argument("--ls-from-name", help="Label Studio: the <Choices> name predictions go in (default: label)")
    s.add_argument("--ls-to-name", help="Label Studio: the <Text> name the choices label (default: text)")
    s.add_argument(
        "--ls-text-key", help="Label Studio: the task data key of the text, $KEY in the config (default: text)"
    )
    s.add_argument("--export-csv", metavar="FILE.csv", help="flagged rows as a CSV review sheet")
    s.add_argument(
        "--features",
        default="tfidf",
        choices=["tfidf", "tfidf-sklearn", "embeddings"],
        help="classifier features for the confident-learning signal (default tfidf)",
    )
    s.add_argument("--no-classifier", action="store_true", help="judges only: skip the confident-learning signal")
    s.add_argument("--max-cost", type=float, help="stop cleanly once this many dollars are spent")
    s.add_argument("--max-requests", type=int, help="stop cleanly after this many paid requests")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_audit)
