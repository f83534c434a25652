"""The audit's exports: flagged rows as Label Studio tasks or a review sheet, written atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llmlabel.io.files import atomic_write
from llmlabel.io.labelstudio import ROW_ID_KEY, choice_result, map_choices, parse_config, review_config
from llmlabel.results import Suspect


@dataclass(frozen=True)
class LSTarget:
    """Where the export's tasks go in a Label Studio project: its choices control, the object it labels, the
    task data key of the text, and each label's spelling among the project's choices."""

    from_name: str = "label"
    to_name: str = "text"
    text_key: str = "text"
    choice_of: dict[str, str] = field(default_factory=dict)  # task label -> project choice (default: itself)

    @classmethod
    def from_config(
        cls, xml: str, labels: list[str], mapping: dict[str, str] | None = None, multi_label: bool | None = None
    ) -> LSTarget:
        """The target a project's labeling config names (InputError when llmlabel cannot fill it, or when its
        control takes one choice and the task sets, or the other way round)."""
        ctl = parse_config(xml, labels, mapping, multi_label)
        to_label = map_choices(ctl.choices, labels, mapping, where="labeling config")
        return cls(ctl.from_name, ctl.to_name, ctl.text_key or "text", {lab: c for c, lab in to_label.items()})


def export_labelstudio(path: str | Path, records: list[Suspect], target: LSTarget | None = None) -> int:
    """Flagged rows as Label Studio tasks: data (the text under the target's key, the given label, the
    suggestion, the row id, why it was flagged) and one prediction, the suggested label, in the target's
    control. Import them into a project with `labelstudio_config` (the given label and the suggestion shown
    side by side) or one whose control the target names."""
    t = target or LSTarget()
    tasks = []
    for r in records:
        if not r.flagged:
            continue
        conf = round(1.0 - r.score, 6)
        if r.multi_label:  # the suggested set, for a choice="multiple" control
            choice: str | list[str] = [t.choice_of.get(lab, lab) for lab in r.suggested_labels or []]
            shown, given = ", ".join(choice) or "(none)", ", ".join(r.given_labels or []) or "(none)"
            why = "audit flag: " + "; ".join(
                f"{what} {', '.join(f'{lab} ({p:.2f})' for lab, p in pairs.items())}"
                for what, pairs in (("missing", r.missing), ("extra", r.extra))
                if pairs
            )
        else:
            choice = shown = t.choice_of.get(r.suggested_label, r.suggested_label)
            given = r.given_label
            why = f"audit flag: the judges doubt the given label (score {r.score:.3f})"
        tasks.append(
            {
                "data": {
                    t.text_key: r.text,
                    ROW_ID_KEY: r.id,
                    "given_label": given,
                    "suggested_label": shown,
                    "confidence": f"{conf:.2f}",
                    "why": why,
                    "score": r.score,
                },
                "predictions": [
                    {
                        "model_version": "llmlabel-audit",
                        "score": conf,
                        "result": [choice_result(choice, t.from_name, t.to_name)],
                    }
                ],
            }
        )
    atomic_write(path, json.dumps(tasks, ensure_ascii=False, indent=1))
    return len(tasks)


def labelstudio_config(
    path: str | Path, labels: list[str], target: LSTarget | None = None, multiple: bool = False
) -> None:
    """The labeling config that shows an export's tasks: text, given label and suggestion side by side
    (`multiple`: a multi-label audit's, a choice="multiple" control)."""
    t = target or LSTarget()
    choices = [t.choice_of.get(lab, lab) for lab in labels]
    atomic_write(path, review_config(choices, t.text_key, t.from_name, t.to_name, multiple))


def export_csv(path: str | Path, records: list[Suspect]) -> int:
    """Flagged rows as a review sheet: an empty `corrected_label` column for the reviewer to fill (a multi-label
    audit's: the sets joined by "|", and its missing and extra labels with P(wrong))."""
    import csv
    import io

    from llmlabel.io.tables import escape_formulas, spreadsheet_safe

    safe = spreadsheet_safe if escape_formulas() else (lambda v: v)
    buf = io.StringIO()
    w = csv.writer(buf)
    sets = bool(records) and records[0].multi_label  # a multi-label audit: sets joined by "|"
    pairs = ["missing", "extra"] if sets else []
    w.writerow(["id", "text", "given_label", "suggested_label", *pairs, "score", "votes", "corrected_label"])
    n = 0
    for r in records:
        if not r.flagged:
            continue
        votes = "; ".join(
            f"{j}={a.get('label') if 'labels' not in a else '|'.join(map(str, a['labels'] or []))}"
            for j, a in r.judges.items()
        )
        suspects = [" ".join(f"{lab}={p:.2f}" for lab, p in (getattr(r, k) or {}).items()) for k in pairs]
        row = (r.id, r.text, r.given_label, r.suggested_label, *suspects, r.score, votes)
        w.writerow([safe(v) for v in row] + [""])
        n += 1
    atomic_write(path, buf.getvalue())
    return n
