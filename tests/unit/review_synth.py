"""A synthetic labeled output for the review tests: judges of known accuracy over rows of known truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmlabel.ensemble.combine import combine_row
from llmlabel.io.records import to_record
from llmlabel.llm.answers import JudgeAnswer
from llmlabel.results import RowResult

LABELS = ["a", "b", "c"]


def synth_output(
    path: Path,
    n: int = 400,
    seed: int = 0,
    accuracies: tuple[float, ...] = (0.8, 0.7, 0.65),
    logprobs: tuple[bool, ...] = (True, True, False),
    prior: tuple[float, ...] = (0.6, 0.3, 0.1),
) -> dict[str, str]:
    """Write a `llmlabel label`-shaped JSONL output to `path`; return the true label of every id.

    A judge with logprobs is surer when right (its probability for its label ~ Beta(8,2) when right, Beta(4,4)
    when wrong), so confidence carries signal; a judge without logprobs answers the label alone."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(len(LABELS), size=n, p=np.array(prior) / sum(prior))
    gold: dict[str, str] = {}
    with open(path, "w") as fh:
        for i in range(n):
            t = int(truth[i])
            answers = {}
            for j, (acc, lp) in enumerate(zip(accuracies, logprobs)):
                right = rng.random() < acc
                lab = t if right else int(rng.choice([k for k in range(len(LABELS)) if k != t]))
                probs = None
                if lp:
                    p = float(rng.beta(8, 2) if right else rng.beta(4, 4))
                    p = max(p, 1 / len(LABELS) + 0.01)
                    rest = (1 - p) / (len(LABELS) - 1)
                    probs = {LABELS[k]: round(p if k == lab else rest, 4) for k in range(len(LABELS))}
                answers[f"j{j}"] = JudgeAnswer(label=LABELS[lab], probs=probs)
            agg = combine_row(answers, LABELS, "label")
            rec = to_record(RowResult(f"r{i}", inputs={"text": f"row {i}"}).decided(agg, answers))
            fh.write(json.dumps(rec) + "\n")
            gold[f"r{i}"] = LABELS[t]
    return gold
