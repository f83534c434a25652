"""The audit's exports: flagged rows as Label Studio tasks or a review sheet, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmlabel.io.files import atomic_write


def export_labelstudio(
    path: str | Path, records: list[dict[str, Any]], from_name: str = "label", to_name: str = "text"
) -> int:
    """Flagged rows as Label Studio tasks: data (text, given label, row id) and one prediction, the suggested
    label. Import with a labeling config like <Choices name="label" toName="text"> over
    <Text name="text" value="$text"/>."""
    tasks = []
    for r in records:
        if not r["flagged"]:
            continue
        tasks.append(
            {
                "data": {"text": r["text"], "given_label": r["given_label"], "row_id": r["id"], "score": r["score"]},
                "predictions": [
                    {
                        "model_version": "llmlabel-audit",
                        "score": round(1.0 - r["score"], 6),
                        "result": [
                            {
                                "from_name": from_name,
                                "to_name": to_name,
                                "type": "choices",
                                "value": {"choices": [r["suggested_label"]]},
                            }
                        ],
                    }
                ],
            }
        )
    atomic_write(path, json.dumps(tasks, ensure_ascii=False, indent=1))
    return len(tasks)


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
