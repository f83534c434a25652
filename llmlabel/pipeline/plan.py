"""`llmlabel plan`: what a run would cost, from rendered prompts, without calling anything."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

from llmlabel.config import Config, Judge
from llmlabel.io.rows import iter_rows, scan
from llmlabel.llm.batch_api import batch_prices
from llmlabel.llm.prompts import Prompts, first_kind, fits_kind
from llmlabel.llm.tokens import count_message_tokens, count_tokens, truncate


def _answer_tokens(cfg: Config, judge: Judge) -> int:
    labels = cfg.task.label_names
    longest = max(labels, key=len)
    if cfg.kind == "multilabel":  # a typical set: two labels
        return count_tokens(json.dumps({"labels": [longest, labels[0]]}))
    if judge.logprobs:
        return 1
    if cfg.mode == "candidates":
        return count_tokens(json.dumps({"candidates": labels[:2], "label": longest}))
    return count_tokens(json.dumps({"label": longest}))


def plan(
    cfg: Config,
    judges: list[Judge],
    input_path: str | Path,
    sample: int = 200,
    limit: int | None = None,
    batch: bool = False,
) -> str:
    """The estimate, at the Batch API's prices with `batch` (`label --batch`)."""
    task = cfg.task
    rows = scan(input_path, task.text_column, task.id_column, limit)
    lines = [f"input: {input_path} ({rows} rows), mode {cfg.mode}, aggregate {cfg.aggregate}, {len(judges)} judge(s)"]
    total_req = total_cost = 0.0
    example = None
    prompts = Prompts(task, cfg.prompts_dir)
    kind = first_kind(task, cfg.kind)  # a taxonomy: its top level's question (each level below: about as much)
    for j in judges:
        sizes = []
        for row in islice(iter_rows(input_path), min(sample, rows)):
            text = prompts.row_text(row) or ""
            # (a per-label judge: its first label's question; the others differ only in their label line)
            asked = fits_kind(task.label_names[0]) if j.per_label else kind
            msgs = prompts.messages(j, asked, truncate(text, j.max_text_tokens)[0], logprob_codes=j.logprobs)
            sizes.append(count_message_tokens(msgs))
            example = example or msgs
        mean_in = sum(sizes) / max(1, len(sizes))
        out_tok = _answer_tokens(cfg, j)
        # self-consistency: every sample is a paid request; per-label: every label's question
        asks = rows * (len(task.label_names) if j.per_label else j.samples)
        tin, tout = mean_in * asks, out_tok * asks
        pin, pout = batch_prices(j) if batch else (j.price_per_million.input, j.price_per_million.output)
        cost = (tin * pin + tout * pout) / 1e6
        total_req += asks
        total_cost += cost
        each = f" ({j.samples} samples a row)" if j.samples > 1 else ""
        each = " (one per label a row)" if j.per_label else each
        lines.append(
            f"  {j.name} ({j.model}): {asks} requests{each}, ~{tin:,.0f} input tokens ({mean_in:.0f}/request), "
            f"~{tout:,.0f} output tokens, ~${cost:.4f}"
        )
    note = (
        " (a cascade asks later judges only when needed: this is the upper bound)"
        if cfg.cascade and cfg.cascade.enabled
        else ""
    )
    tier = " at batch prices" if batch else ""
    lines.append(f"total: {int(total_req)} requests, ~${total_cost:.4f}{tier}{note}; cached answers are free")
    lines.append("example prompt (first row):")
    for m in example or []:
        lines.append(f"--- {m['role']} ---\n{m['content']}")
    return "\n".join(lines)
