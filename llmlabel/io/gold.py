"""Gold (true) labels by row id: the one reader behind `gold:` in configs, `llmlabel eval --gold` and
`llmlabel audit --gold`."""

from __future__ import annotations

from pathlib import Path

from llmlabel.errors import InputError
from llmlabel.io.rows import iter_rows, row_id


class Gold(dict[str, str]):
    """Labels by id. `numbered`: the file had no id column, so its rows were numbered from 0 (as
    `llmlabel label` numbers an input without one)."""

    numbered: bool = False


def read_gold(path: str | Path, id_column: str = "id", label_column: str = "label") -> Gold:
    """Every row with a non-empty label; one clear error for a missing file or label column."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"gold file {p} not found; check the gold path")
    gold = Gold()
    for i, row in enumerate(iter_rows(p)):
        if i == 0:
            if label_column not in row:
                raise InputError(
                    f"gold file {p} has no column '{label_column}' "
                    f"(columns: {', '.join(map(str, list(row)[:20]))}); a gold file has "
                    f"{id_column},{label_column} columns: pass --label-column"
                )
            gold.numbered = id_column not in row
        v = row.get(label_column)
        if v is None or str(v) == "":
            continue
        gold[row_id(row, id_column, i)] = str(v)
    return gold
