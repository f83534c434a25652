#!/usr/bin/env python3
"""Taxonomies labeled top-down (task.taxonomy) with simulated judges: CLINC150 (10 domains + oos -> 150
intents) and the Web of Science excerpt (7 domains -> 132 areas, long abstracts).

Three fakellm judges label each row level by level (fakellm answers at whichever level the request's label
set names; when the level above was wrong, the gold node is not listed and it answers a random listed one).
The same run is scored at several `taxonomy_threshold`s: the first run pays, the others read the cache (a
rerun pays nothing; the requests column shows it). `llmlabel eval` gives accuracy, coverage and precision per
level and hierarchical F1: what stopping at the parent buys in precision, and what it costs in coverage.

    python benchmarks/taxonomy_bench.py                    # 1,000 rows of each
    python benchmarks/taxonomy_bench.py --rows 300 --out /tmp/tax.md
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DATA,
    FakeLLM,
    accuracy_args,
    header,
    judge,
    label_and_eval,
    now,
    read_csv,
    sample_parser,
    table,
    tempdir,
    write_config,
    write_csv,
    write_result,
)

ACCURACIES = {"judge-a": 0.85, "judge-b": 0.75, "judge-c": 0.65}
THRESHOLDS = (0.0, 0.5, 0.7)  # three one-vote judges: a level's confidence is 1/3, 2/3 or 1


def _rows(files: list[Path], n: int, seed: int) -> list[dict]:
    rows = [r for f in files for r in read_csv(f)]
    return random.Random(seed).sample(rows, min(n, len(rows)))


def tokens(tree: Path, task_extra: dict, rows: list[dict]) -> tuple[float, float]:
    """Mean prompt tokens a row and judge (llmlabel's counter): listing every leaf in one flat prompt, against
    the top-down questions (the top level, then the gold domain's children: what a right first answer asks)."""
    from llmlabel.config import Judge, Task
    from llmlabel.llm.prompts import Prompts, taxonomy_kind
    from llmlabel.llm.tokens import count_message_tokens
    from llmlabel.taxonomy import Taxonomy

    tax = Taxonomy.load(str(tree))
    j = Judge(name="a", model="m")
    leaves = list(
        dict.fromkeys(k for p, kids in tax.children.items() if p for k in kids if (*p, k) not in tax.children)
    )
    flat = Prompts(Task(name="flat", instructions=task_extra["instructions"], labels=leaves), None)
    top = Prompts(Task.model_validate({"name": "t", "taxonomy": tax.as_tree(), **task_extra}), None)
    f = t = 0
    for r in rows:
        f += count_message_tokens(flat.messages(j, "label", r["text"]))
        t += count_message_tokens(top.messages(j, taxonomy_kind((), tax.roots), r["text"]))
        kids = tax.kids((r["label_l1"],))
        if len(kids) > 1:
            t += count_message_tokens(top.messages(j, taxonomy_kind((r["label_l1"],), kids), r["text"]))
    return f / len(rows), t / len(rows)


def bench(name: str, files: list[Path], tree: Path, task_extra: dict, n: int, seed: int) -> tuple[list, str]:
    rows = _rows(files, n, seed)
    flat_tokens, top_tokens = tokens(tree, task_extra, rows)
    out_rows = []
    with (
        tempdir("llmlabel-tax-") as tmp,
        FakeLLM(files, extra=accuracy_args(ACCURACIES)) as fake,
    ):
        inp = write_csv(tmp / "in.csv", ["id", "text"], ([r["id"], r["text"]] for r in rows))
        gold_rows = ([r["id"], r["label_l1"], r["label_l2"]] for r in rows)
        gold = write_csv(tmp / "gold.csv", ["id", "label_l1", "label_l2"], gold_rows)
        judges = [judge(m.replace("judge-", ""), m, fake.base_url, 32) for m in ACCURACIES]
        for th in THRESHOLDS:
            task = {"name": name, "taxonomy": str(tree), "taxonomy_threshold": th, **task_extra}
            cfg = write_config(tmp / "c.yaml", judges, tmp / "cache", task=task)
            run, paid, rep = label_and_eval(inp, cfg, gold, tmp, fake)
            lv = {x["level"]: x for x in rep["levels"]}
            h = rep["hierarchical"]
            out_rows.append(
                [
                    name,
                    th,
                    f"{lv[1]['accuracy']:.3f}",
                    f"{lv[2]['accuracy']:.3f}",
                    f"{lv[2]['coverage']:.3f}",
                    f"{lv[2]['precision']:.3f}",
                    f"{h['precision']:.3f}",
                    f"{h['recall']:.3f}",
                    f"{h['f1']:.3f}",
                    paid,
                    f"{run.wall:.1f}",
                ]
            )
    note = (
        f"{name}: {len(rows)} rows sampled (seed {seed}) from {', '.join(f.name for f in files)}; prompt tokens a "
        f"row and judge (llmlabel's counter): {flat_tokens:,.0f} listing every leaf in one prompt, {top_tokens:,.0f} "
        "top-down (the top level, then the gold domain's children; single-child domains ask once)"
    )
    return out_rows, note


def main() -> None:
    a = sample_parser().parse_args()
    started = now()
    results, notes = [], []
    clinc = "Which request to a virtual assistant is this? oos: out of scope (none of the domains)."
    r, note = bench(
        "clinc150",
        [DATA / "clinc150_hier_test.csv"],
        DATA / "clinc150_taxonomy.json",
        {"instructions": clinc},
        a.rows,
        a.seed,
    )
    results += r
    notes.append(note)
    wos = json.loads((DATA / "wos1k_l1_descriptions.json").read_text())
    r, note = bench(
        "wos1k",
        [DATA / "wos1k_train.csv", DATA / "wos1k_test.csv"],
        DATA / "wos1k_taxonomy.json",
        {"instructions": "Which research domain, then which area, is this abstract from?", "labels": wos},
        a.rows,
        a.seed,
    )
    results += r
    notes.append(note)
    text = header(
        "Taxonomies labeled top-down: CLINC150 and Web of Science, simulated judges",
        "n/a",
        started,
        [
            *notes,
            f"judges: fakellm models {', '.join(f'{m}={acc}' for m, acc in ACCURACIES.items())}, asked at every "
            "level; their votes combined per level (majority soft vote)",
            "gold: label_l1, label_l2 columns; metrics from `llmlabel eval` (level 2 accuracy counts a row "
            "that stopped at its domain as wrong; precision is over the rows that reached level 2)",
            "threshold 0: every row goes to an intent/area; 0.5: a level needs two judges of three; 0.7: all "
            "three. Each dataset's first run pays; the other thresholds are reruns over the cache",
            "fakellm seeds each answer by (model, text, system prompt), and the system prompt is shared by every "
            "level: a simulated judge that errs on a text errs at both levels, so level-2 accuracy at threshold 0 "
            "stays close to level 1's (real judges err more independently)",
        ],
    )
    text += "\n" + table(
        [
            "data",
            "taxonomy_threshold",
            "level-1 accuracy",
            "level-2 accuracy",
            "level-2 coverage",
            "level-2 precision",
            "hier. precision",
            "hier. recall",
            "hier. F1",
            "requests paid",
            "wall s",
        ],
        results,
    )
    write_result("taxonomy_clinc_wos.md", text, a.out)


if __name__ == "__main__":
    main()
