"""The audit's exports: flagged rows as Label Studio tasks or a review sheet, written atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlabel.io.files import atomic_write
from llmlabel.io.labelstudio import ROW_ID_KEY, choice_result, map_choices, parse_config, review_config


@dataclass(frozen=True)
class LSTarget:
    """Where the export's tasks go in a Label Studio project: its choices control, the object it labels, the
    task data key of the text, and each label's spelling among the project's choices."""

    from_name: str = "label"
    to_name: str = "text"
    text_key: str = "text"
    choice_of: dict[str, str] = field(default_factory=dict)  # task label -> project choice (default: itself)

    @classmethod
    def from_config(cls, xml: str, labels: list[str], mapping: dict[str, str] | None = None) -> LSTarget:
        """The target a project's labeling config names (InputError when llmlabel cannot fill it)."""
        ctl = parse_config(xml, labels, mapping)
        to_label = map_choices(ctl.choices, labels, mapping, where="labeling config")
        return cls(ctl.from_name, ctl.to_name, ctl.text_key or "text", {lab: c for c, lab in to_label.items()})


def export_labelstudio(path: str | Path, records: list[dict[str, Any]], target: LSTarget | None = None) -> int:
    """Flagged rows as Label Studio tasks: data (the text under the target's key, the given label, the
    suggestion, the row id, why it was flagged) and one prediction, the suggested label, in the target's
    control. Import them into a project with `labelstudio_config` (the given label and the suggestion shown
    side by side) or one whose control the target names."""
    t = target or LSTarget()
    tasks = []
    for r in records:
        if not r["flagged"]:
            continue
        suggested = t.choice_of.get(r["suggested_label"], r["suggested_label"])
        conf = round(1.0 - r["score"], 6)
        tasks.append(
            {
                "data": {
                    t.text_key: r["text"],
                    ROW_ID_KEY: r["id"],
                    "given_label": r["given_label"],
                    "suggested_label": suggested,
                    "confidence": f"{conf:.2f}",
                    "why": f"audit flag: the judges doubt the given label (score {r['score']:.3f})",
                    "score": r["score"],
                },
                "predictions": [
                    {
                        "model_version": "llmlabel-audit",
                        "score": conf,
                        "result": [choice_result(suggested, t.from_name, t.to_name)],
                    }
                ],
            }
        )
    atomic_write(path, json.dumps(tasks, ensure_ascii=False, indent=1))
    return len(tasks)


def labelstudio_config(path: str | Path, labels: list[str], target: LSTarget | None = None) -> None:
    """The labeling config that shows an export's tasks: text, given label and suggestion side by side."""
    t = target or LSTarget()
    atomic_write(path, review_config([t.choice_of.get(lab, lab) for lab in labels], t.text_key, t.from_name, t.to_name))


def export_csv(path: str | Path, records: list[dict[str, Any]]) -> int:
    """Flagged rows as a review sheet: an empty `corrected_label` column for the reviewer to fill."""
    import csv
    import io

    from llmlabel.io.tables import escape_formulas, spreadsheet_safe

    safe = spreadsheet_safe if escape_formulas() else (lambda v: v)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "text", "given_label", "suggested_label", "score", "votes", "corrected_label"])
    n = 0
    for r in records:
        if not r["flagged"]:
            continue
        votes = "; ".join(f"{j}={a.get('label')}" for j, a in (r.get("judges") or {}).items())
        w.writerow(
            [safe(v) for v in (r["id"], r["text"], r["given_label"], r["suggested_label"], r["score"], votes)] + [""]
        )
        n += 1
    atomic_write(path, buf.getvalue())
    return n
