#!/usr/bin/env python3
"""Many labels: shortlists on CLINC150 test (151 labels: 150 intents and `oos`) with simulated judges.

1. Shortlist recall@k (llm/shortlist.py's Shortlister alone, no judge): the share of rows whose gold label is
   among the k labels nearest to the text, from the label names only (CLINC150 has no descriptions), and
   with the train split as demonstrations (task.examples_file: each label described by its train texts).
2. Three simulated judges (fakellm, accuracies below) label the same rows listing all 151 labels, and with
   `shortlist: 10` (names only, and with the train demonstrations); accuracy from `llmlabel eval`, prompt
   tokens a request counted with llmlabel's own counter (llm/tokens.py) on the messages the run renders, and
   requests a row (a "none of these" answer asks the next list).

fakellm answers with its accuracy whatever the list length (a real small model loses accuracy on long
lists; this does not simulate that) and, when the gold label is not on the list it is shown, a random listed
answer ("none of these" included): so the simulated shortlist accuracy is about recall@k times the ensemble's.

    python benchmarks/shortlist_bench.py                  # 1,000 rows
    python benchmarks/shortlist_bench.py --rows 300 --out /tmp/sl.md
"""

from __future__ import annotations

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
KS = (5, 10, 20)


def recall(task: dict, rows: list[dict], pool: list[tuple[str, str]] | None, pinned: bool = False) -> list[str]:
    """recall@k over every row, then over the in-scope rows (gold not `oos`), as table cells. `pinned`: `oos`
    is on every list (task.shortlist_pinned), beside the k-1 nearest other labels."""
    from llmlabel.config import Task
    from llmlabel.llm.shortlist import Shortlister

    cells = []
    for k in KS:
        extra = {"shortlist": k, "shortlist_pinned": ["oos"]} if pinned else {"shortlist": k}
        sl = Shortlister(Task.model_validate({**task, **extra}), pool)
        hits = [(r["label"] in sl.shortlist(sl.ranked(r["text"]), 0), r["label"] != "oos") for r in rows]
        cells.append((sum(h for h, _ in hits) / len(hits), sum(h for h, i in hits if i) / sum(i for _, i in hits)))
    return [f"{a:.3f}" for a, _ in cells] + [f"{b:.3f}" for _, b in cells]


def prompt_tokens(cfg_path: Path, rows: list[dict]) -> float:
    """Mean prompt tokens of a row's first request (llmlabel's counter, on the messages a run renders)."""
    from llmlabel.config import load_config
    from llmlabel.llm.cache import open_cache
    from llmlabel.llm.tokens import count_message_tokens
    from llmlabel.pipeline.options import RunOptions
    from llmlabel.pipeline.row_labeler import RowLabeler

    cfg = load_config(cfg_path)
    labeler = RowLabeler(cfg, cfg.judges[:1], RunOptions(), open_cache(cfg.cache_dir))
    j = cfg.judges[0]
    sizes = [
        count_message_tokens(labeler.plan.messages(j, r["text"], None, labeler.plan.first_kind(r["text"]))[0])
        for r in rows
    ]
    return sum(sizes) / len(sizes)


def main() -> None:
    a = sample_parser().parse_args()
    started = now()
    src, train = DATA / "clinc150_test.csv", DATA / "clinc150_train.csv"
    labels = (DATA / "clinc150_labels.txt").read_text().split()
    rows = random.Random(a.seed).sample(read_csv(src), a.rows)
    pool = [(r["text"], r["label"]) for r in read_csv(train)]
    task = {
        "name": "clinc150",
        "instructions": "Which intent does this request to a virtual assistant express? oos: none of the intents.",
        "labels": labels,
    }
    n_in = sum(r["label"] != "oos" for r in rows)
    rec_table = table(
        ["shortlist from", *[f"recall@{k}" for k in KS], *[f"recall@{k}, {n_in} in-scope rows" for k in KS]],
        [
            ["label names only", *recall(task, rows, None)],
            ["names + train split (15,100 demonstrations)", *recall(task, rows, pool)],
            ["names + train split, `oos` pinned (k-1 nearest + oos)", *recall(task, rows, pool, pinned=True)],
        ],
    )
    results = []
    with (
        tempdir("llmlabel-sl-") as tmp,
        FakeLLM([src], extra=accuracy_args(ACCURACIES)) as fake,
    ):
        inp = write_csv(tmp / "in.csv", ["id", "text"], ([r["id"], r["text"]] for r in rows))
        gold = write_csv(tmp / "gold.csv", ["id", "label"], ([r["id"], r["label"]] for r in rows))
        judges = [judge(m.replace("judge-", ""), m, fake.base_url, 32) for m in ACCURACIES]
        setups = [
            ("all 151 labels listed", {}),
            ("shortlist 10, names only", {"shortlist": 10}),
            ("shortlist 10, names + train demonstrations", {"shortlist": 10, "examples_file": str(train)}),
            ("shortlist 20, names + train demonstrations", {"shortlist": 20, "examples_file": str(train)}),
            (
                "shortlist 10 (9 nearest + oos pinned), names + train demonstrations",
                {"shortlist": 10, "shortlist_pinned": ["oos"], "examples_file": str(train)},
            ),
        ]
        for name, extra in setups:
            cfg = write_config(tmp / "c.yaml", judges, tmp / "cache", task={**task, **extra})
            run, asked, rep = label_and_eval(inp, cfg, gold, tmp, fake)
            per_judge = {n: j.get("accuracy") for n, j in (rep.get("judges") or {}).items()}
            toks = prompt_tokens(cfg, rows)
            results.append(
                [
                    name,
                    f"{rep['accuracy']:.3f}",
                    " / ".join(f"{per_judge[n]:.3f}" for n in ("a", "b", "c") if per_judge.get(n) is not None),
                    f"{toks:,.0f}",
                    f"{asked / len(rows) / len(judges):.2f}",
                    f"{toks * asked / len(rows) / len(judges):,.0f}",
                    f"{run.wall:.1f}",
                ]
            )
    text = header(
        "Many labels: shortlists on CLINC150 test (151 labels), simulated judges",
        "n/a",
        started,
        [
            f"{a.rows} rows sampled from clinc150_test.csv (seed {a.seed}); gold: the dataset's intent (or oos)",
            f"judges: fakellm models {', '.join(f'{m}={acc}' for m, acc in ACCURACIES.items())}; majority vote",
            "prompt tokens: llmlabel's counter (cl100k, chat framing) on each row's first request as the run "
            "renders it; a request a row per judge counts the next shortlist after 'none of these' "
            "(shortlist_rounds: 2)",
        ],
    )
    text += "\n## Shortlist recall@k (Shortlister alone, TF-IDF words + character n-grams)\n\n" + rec_table + "\n"
    text += "\n## Labeling: all labels vs shortlists (three simulated judges)\n\n"
    text += table(
        [
            "setup",
            "accuracy",
            "judges alone (a / b / c)",
            "prompt tokens, first request",
            "requests a row per judge",
            "prompt tokens a row per judge",
            "wall s",
        ],
        results,
    )
    text += (
        "\n\nfakellm's accuracy does not fall with the list's length, so listing every label is not penalised "
        "here as it is with real small models; the shortlist's cost in accuracy is its misses (1 - recall@k), "
        "and its saving is the prompt tokens. `oos` (out of scope) is the label a nearest-label list misses most: "
        "its texts are about anything, so nearness to its name and examples says little; pinned to every list "
        "(task.shortlist_pinned) it is always offered.\n"
    )
    write_result("shortlist_clinc150.md", text, a.out)


if __name__ == "__main__":
    main()
