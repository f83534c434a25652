"""Scoring a taxonomy output (rows with a `path`) against gold paths.

Gold paths come from columns label_l1, label_l2, ... (one a level; empty below a shallower path), else from a
`path` column (a JSON list, or names joined by "/"), else from the label column joined by "/". A node is its
path, so a name under two parents is two nodes (use the label_l* columns, or a JSON list, for names with "/").

Per level i: accuracy (rows whose path is right down to level i, over the rows whose gold path has a level
i: a row that stopped above it counts wrong), coverage (rows that reached level i) and precision (right among
those that reached it): stopping at the parent trades coverage for precision. Hierarchical F1 (Kiritchenko et
al. 2005): each path as the set of its prefixes, precision and recall over all rows pooled."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmlabel.errors import InputError
from llmlabel.io.rows import iter_rows
from llmlabel.results import RowResult


def _field(v: Any) -> Any:
    if isinstance(v, str) and v[:1] == "[":
        try:
            return json.loads(v)
        except ValueError:
            return None
    return v


def _as_path(v: Any) -> list[str]:
    v = _field(v)
    if isinstance(v, list):
        return [str(x) for x in v if str(x)]
    return [p for p in str(v).split("/") if p] if v not in (None, "") else []


def read_gold_paths(gold_path: str | Path, id_column: str, label_column: str) -> dict[str, list[str]]:
    """id -> gold path (rows without one left out)."""
    p = Path(gold_path)
    if not p.is_file():
        raise InputError(f"gold file {p} not found; pass an existing file")
    out: dict[str, list[str]] = {}
    for i, row in enumerate(iter_rows(p)):
        rid = str(row.get(id_column)) if row.get(id_column) not in (None, "") else str(i)
        if "label_l1" in row:
            path, lvl = [], 1
            while row.get(f"label_l{lvl}") not in (None, ""):
                path.append(str(row[f"label_l{lvl}"]))
                lvl += 1
        elif "path" in row:
            path = _as_path(row["path"])
        elif label_column in row:
            path = _as_path(row[label_column])
        else:
            raise InputError(
                f"gold file {p} has no label_l1, path or '{label_column}' column for the gold paths; "
                "add one or pass --label-column"
            )
        if path:
            out[rid] = path
    return out


def evaluate_paths(
    out: Path, gold_path: str | Path, id_column: str, label_column: str, results: Iterable[RowResult]
) -> dict[str, Any]:
    """A taxonomy output's report; `results`: its rows (io.records.read_results)."""
    gold = read_gold_paths(gold_path, id_column, label_column)
    if not gold:
        raise InputError(f"gold file {gold_path} has no gold paths; check --label-column")
    pairs: list[tuple[list[str], list[str]]] = []
    n_output = errors = 0
    for r in results:
        n_output += 1
        if r.id not in gold:
            continue
        errors += bool(r.error)
        pairs.append(([x for x in r.path or () if x], gold[r.id]))
    if not pairs:
        raise InputError(f"no ids in common between {out} and {gold_path}; check --id-column")
    return {
        "taxonomy": True,
        "output": str(out),
        "gold": str(gold_path),
        "rows_output": n_output,
        "rows_gold": len(gold),
        "rows_evaluated": len(pairs),
        "rows_with_error": errors,
        **score_paths(pairs),
    }


def score_paths(pairs: list[tuple[list[str], list[str]]]) -> dict[str, Any]:
    """Per-level accuracy, coverage and precision, exact path accuracy, mean depth and hierarchical P/R/F1 of
    (predicted path, gold path) pairs (at least one)."""
    levels = []
    for lvl in range(1, max(len(g) for _, g in pairs) + 1):
        has = [(p, g) for p, g in pairs if len(g) >= lvl]
        reached = [(p, g) for p, g in has if len(p) >= lvl]
        right = sum(p[:lvl] == g[:lvl] for p, g in reached)
        levels.append(
            {
                "level": lvl,
                "rows": len(has),
                "accuracy": round(right / len(has), 6),
                "coverage": round(len(reached) / len(has), 6),
                "precision": round(right / len(reached), 6) if reached else None,
            }
        )
    tp = sum(_common(p, g) for p, g in pairs)
    n_pred, n_gold = sum(len(p) for p, _ in pairs), sum(len(g) for _, g in pairs)
    hp = tp / n_pred if n_pred else 0.0
    hr = tp / n_gold if n_gold else 0.0
    return {
        "levels": levels,
        "exact_path_accuracy": round(sum(p == g for p, g in pairs) / len(pairs), 6),
        "mean_depth": round(sum(len(p) for p, _ in pairs) / len(pairs), 4),
        "hierarchical": {
            "precision": round(hp, 6),
            "recall": round(hr, 6),
            "f1": round(2 * hp * hr / (hp + hr), 6) if hp + hr else 0.0,
        },
    }


def _common(p: list[str], g: list[str]) -> int:
    """How many of p's prefixes are g's: the length of their common start."""
    n = 0
    for a, b in zip(p, g):
        if a != b:
            break
        n += 1
    return n


def format_paths(rep: dict[str, Any]) -> list[str]:
    h = rep["hierarchical"]
    lines = [
        f"exact path accuracy {rep['exact_path_accuracy']:.4f}, mean depth {rep['mean_depth']}"
        + (f", {rep['rows_with_error']} rows with an error" if rep["rows_with_error"] else ""),
        f"hierarchical precision {h['precision']:.4f}, recall {h['recall']:.4f}, F1 {h['f1']:.4f}",
    ]
    for lv in rep["levels"]:
        prec = "-" if lv["precision"] is None else f"{lv['precision']:.4f}"
        lines.append(
            f"level {lv['level']} ({lv['rows']} rows): accuracy {lv['accuracy']:.4f}, "
            f"coverage {lv['coverage']:.4f}, precision {prec}"
        )
    return lines
