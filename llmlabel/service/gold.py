"""What Label Studio teaches the service: the projects connected by an authenticated /setup, the predictions
/predict sent (label and raw confidence per task) and the human labels its annotations carry (gold rows).
A SQLite database in the state dir (`labelstudio.sqlite`), written only from the server's event loop.

/train refits the confidence of a project's predictions on its gold rows (ensemble.calibration's Platt
scaling, as `label` does with a config's gold file): the score Label Studio sorts tasks by becomes the
probability that the label is right. Labels are not changed: the judges' answers are what they are."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlabel.io.labelstudio import LSAnswer
from llmlabel.taxonomy import PATH_SEP

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (project INTEGER PRIMARY KEY, label_config TEXT, connected REAL NOT NULL);
CREATE TABLE IF NOT EXISTS predictions (
    project INTEGER NOT NULL, task INTEGER NOT NULL, label TEXT NOT NULL, confidence REAL, model_version TEXT,
    PRIMARY KEY (project, task));
CREATE TABLE IF NOT EXISTS gold (
    project INTEGER NOT NULL, task INTEGER NOT NULL, row_id TEXT NOT NULL, label TEXT NOT NULL, annotator TEXT,
    annotation INTEGER, text TEXT, updated TEXT, received REAL NOT NULL, PRIMARY KEY (project, task));
"""
MIN_GOLD = 20  # calibrate_confidence's minimum


@dataclass(frozen=True)
class Refit:
    """What a /train did, in words a Label Studio user reads."""

    project: int
    gold_rows: int
    with_prediction: int
    calibrated: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "gold_rows": self.gold_rows,
            "gold_rows_with_prediction": self.with_prediction,
            "confidence_calibrated": self.calibrated,
            "message": self.message,
        }


def _right(gold: str, predicted: str) -> bool:
    """Whether a stored prediction is right by its annotation: the same choice (ignoring case); for a set
    (choices joined by "|"), the same set in any order; for a taxonomy path (joined by " > "), the path the
    prediction reached is the start of the annotation's (its score is the chance that the path reached is
    right, and a prediction that stopped at the right parent is right as far as it goes)."""
    g, p = gold.casefold(), predicted.casefold()
    if g == p:
        return True
    if "|" in g or "|" in p:
        return sorted(g.split("|")) == sorted(p.split("|"))
    sep = PATH_SEP.casefold()
    return (sep in g or sep in p) and (g + sep).startswith(p + sep)


def project_id(value: object) -> int | None:
    """Label Studio's project as its id: 3, "3" or /setup's "3.1700000000" (id.created_at) -> 3."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 2**63 else None  # SQLite's INTEGER
    if isinstance(value, dict):
        return project_id(value.get("id"))
    if isinstance(value, str):
        head = value.split(".", 1)[0].strip()
        return project_id(int(head)) if head.isdigit() and len(head) < 20 else None
    return None


class GoldStore:
    def __init__(self, state_dir: str | Path) -> None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(Path(state_dir) / "labelstudio.sqlite", check_same_thread=False)
        self.db.executescript(_SCHEMA)
        self.db.commit()
        self.calibration: dict[int, Callable[[float], float]] = {}
        self.calibrated_on: dict[int, int] = {}  # gold rows of each project's refit

    def close(self) -> None:
        self.db.close()

    # -- projects --------------------------------------------------------------------------------------------
    def connect(self, project: int, label_config: str | None) -> None:
        self.db.execute(
            "INSERT INTO projects VALUES (?, ?, ?) ON CONFLICT(project) DO UPDATE SET label_config=excluded.label_config",
            (project, label_config, time.time()),
        )
        self.db.commit()

    def label_config(self, project: int) -> str | None:
        row = self.db.execute("SELECT label_config FROM projects WHERE project=?", (project,)).fetchone()
        return None if row is None else row[0]

    def connected(self, project: int) -> bool:
        return self.db.execute("SELECT 1 FROM projects WHERE project=?", (project,)).fetchone() is not None

    # -- predictions and gold --------------------------------------------------------------------------------
    def predicted(self, project: int, rows: Iterable[tuple[int, str, float | None]], version: str) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?)",
            [(project, task, label, conf, version) for task, label, conf in rows],
        )
        self.db.commit()

    def add_gold(self, project: int, answers: Iterable[LSAnswer]) -> int:
        """Stores each answer as its task's gold row (a later update replaces it); the number stored."""
        rows = [
            (project, a.task_id, a.row_id, a.label, a.annotator, a.annotation_id, a.text, a.updated, time.time())
            for a in answers
            if a.task_id is not None
        ]
        # An older annotation arriving late (webhooks are retried) does not replace a newer one.
        self.db.executemany(
            "INSERT INTO gold VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(project, task) DO UPDATE SET "
            "row_id=excluded.row_id, label=excluded.label, annotator=excluded.annotator, "
            "annotation=excluded.annotation, text=excluded.text, updated=excluded.updated, "
            "received=excluded.received WHERE excluded.updated >= gold.updated",
            rows,
        )
        self.db.commit()
        return len(rows)

    def remove_annotations(self, project: int, annotation_ids: Iterable[int]) -> int:
        ids = list(annotation_ids)
        n = 0
        for a in ids:
            n += self.db.execute("DELETE FROM gold WHERE project=? AND annotation=?", (project, a)).rowcount
        self.db.commit()
        return n

    def gold(self, project: int) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT task, row_id, label, annotator, annotation, updated FROM gold WHERE project=? ORDER BY task",
            (project,),
        )
        keys = ("task", "row_id", "label", "annotator", "annotation", "updated")
        return [dict(zip(keys, r)) for r in cur.fetchall()]

    # -- refit -----------------------------------------------------------------------------------------------
    def refit(self, project: int) -> Refit:
        """Platt scaling of the project's prediction scores on its gold rows (those /predict answered); a
        prediction is right when its choice is the annotation's (both in the project's spelling; see `_right`)."""
        from llmlabel.ensemble.calibration import calibrate_confidence

        rows = self.db.execute(
            "SELECT g.label, p.label, p.confidence FROM gold g LEFT JOIN predictions p "
            "ON p.project=g.project AND p.task=g.task WHERE g.project=?",
            (project,),
        ).fetchall()
        pairs = [(float(conf), _right(gl, pl)) for gl, pl, conf in rows if pl is not None and conf is not None]
        cal = calibrate_confidence([c for c, _ in pairs], [ok for _, ok in pairs], min_rows=MIN_GOLD)
        if cal is None:
            self.calibration.pop(project, None)
            self.calibrated_on.pop(project, None)
            why = (
                f"needs {MIN_GOLD}+ gold rows that llmlabel predicted"
                if len(pairs) < MIN_GOLD
                else "its predictions are all right (or all wrong) on them, nothing to fit"
            )
            msg = (
                f"{len(rows)} gold rows stored ({len(pairs)} with an llmlabel prediction); scores not recalibrated: "
                f"{why}. Labels are never changed by training."
            )
            return Refit(project, len(rows), len(pairs), False, msg)
        self.calibration[project] = cal
        self.calibrated_on[project] = len(pairs)
        right = sum(ok for _, ok in pairs)
        msg = (
            f"scores recalibrated (Platt) on {len(pairs)} gold rows ({right} predicted right): a prediction's "
            "score is now the estimated probability that its label is right. Labels are never changed by training."
        )
        return Refit(project, len(rows), len(pairs), True, msg)

    def score(self, project: int | None, confidence: float | None) -> float | None:
        """A prediction's score: its confidence, through the project's refit when there is one."""
        if confidence is None:
            return None
        cal = self.calibration.get(project) if project is not None else None
        return round(cal(confidence), 4) if cal is not None else confidence

    def summary(self, project: int) -> dict[str, Any]:
        n = self.db.execute("SELECT COUNT(*) FROM gold WHERE project=?", (project,)).fetchone()[0]
        p = self.db.execute("SELECT COUNT(*) FROM predictions WHERE project=?", (project,)).fetchone()[0]
        return {"project": project, "gold_rows": n, "predictions": p, "calibrated": project in self.calibration}
