#!/usr/bin/env python3
"""Prompt tokens per row of the default templates (label and candidates) on TREC and SST-2.

Every row of each dataset is rendered exactly as `llmlabel label` sends it (llmlabel.llm.prompts.render_messages,
default templates, no few-shot examples) and counted with llmlabel.llm.tokens (cl100k_base, +4 tokens framing per
message, +2 per request, as `llmlabel plan` counts). Reported per row: mean / median / p95 / max prompt
tokens, the fixed part (system message + framing, paid on every row), the text part, the answer tokens
`llmlabel plan` assumes, and the JSON schema sent as response_format (counted separately: providers that
bill it as input add it once per request). A logprobs judge (answers with one code token) is shown too.
`llmlabel plan` on each dataset cross-checks the means.

    python benchmarks/cost_bench.py [--data-dir ../shared/data] [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DATA,
    SST2_TASK,
    TREC_TASK,
    header,
    judge,
    loadavg,
    now,
    read_csv,
    run_cli,
    table,
    tempdir,
    write_config,
    write_result,
)

DATASETS = [
    ("TREC test", "trec_test.csv", TREC_TASK),
    ("TREC train", "trec_train.csv", TREC_TASK),
    ("SST-2 dev", "sst2_dev.csv", SST2_TASK),
    ("SST-2 test", "sst2_test.csv", SST2_TASK),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--limit", type=int, help="rows per dataset (default: all)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if a.quick:
        a.limit = a.limit or 100
        a.out = a.out or "/tmp/cost-quick.md"
    from llmlabel.config import Config, Judge
    from llmlabel.llm.prompts import Prompts, render_messages, response_format
    from llmlabel.llm.tokens import count_message_tokens, count_tokens
    from llmlabel.pipeline.plan import _answer_tokens

    started, load0 = now(), loadavg()
    rows_out, plan_rows = [], []
    for title, fname, task in DATASETS:
        path = Path(a.data_dir) / fname
        data = read_csv(path)[: a.limit]
        for kind, logprobs in (("label", False), ("candidates", False), ("label", True)):
            cfg = Config.model_validate({"task": task, "mode": kind})
            j = Judge(name="j", model="m", base_url="http://127.0.0.1", logprobs=logprobs)
            prompts = Prompts(cfg.task, cfg.prompts_dir)
            sizes = [count_message_tokens(prompts.messages(j, kind, r["text"], logprob_codes=logprobs)) for r in data]
            fixed = count_message_tokens(render_messages(cfg, j, kind, "", logprob_codes=logprobs))
            texts = [count_tokens(r["text"]) for r in data]
            rf = None if logprobs else response_format("json_schema", kind, cfg.task.label_names, "labels")
            schema = count_tokens(json.dumps(rf, separators=(",", ":"))) if rf else 0
            srt = sorted(sizes)
            rows_out.append(
                [
                    title,
                    f"{len(data):,}",
                    kind + (" (logprobs judge)" if logprobs else ""),
                    f"{statistics.mean(sizes):.1f}",
                    f"{statistics.median(sizes):.0f}",
                    f"{srt[int(0.95 * (len(srt) - 1))]}",
                    f"{max(sizes)}",
                    f"{fixed}",
                    f"{statistics.mean(texts):.1f}",
                    f"{100 * fixed / statistics.mean(sizes):.0f}%",
                    f"{_answer_tokens(cfg, j)}",
                    f"{schema}",
                ]
            )
    # cross-check with the CLI on two datasets and both modes
    with tempdir("llmlabel-cost-") as tmp:
        for title, fname, task in (DATASETS[0], DATASETS[2]):
            for kind in ("label", "candidates"):
                cfg = write_config(
                    tmp / f"{kind}.yaml",
                    [judge("j", "m", "http://127.0.0.1:9/v1", 16)],
                    tmp / "cache",
                    task=task,
                    mode=kind,
                )
                args = ["plan", str(Path(a.data_dir) / fname), "-c", str(cfg), "--sample", str(a.limit or 100000)]
                out = run_cli(args, stdout=True)
                m = re.search(r"\((\d+)/(?:row|request)\)", out.stdout)  # `plan` says "(N/request)"
                plan_rows.append(
                    [
                        title,
                        kind,
                        f"`llmlabel plan {fname} -c {kind}.yaml --sample {a.limit or 100000}`",
                        m.group(1) if m else "?",
                        f"{out.wall:.2f}",
                    ]
                )
    text = header(
        "Cost: prompt tokens per row of the default templates",
        f"{load0:.2f}",
        started,
        [
            "tokens: llmlabel.llm.tokens (tiktoken cl100k_base, bundled offline); per message +4, per request +2",
            "prompts: the built-in `label.j2` / `candidates.j2`, task instructions and label descriptions as in "
            "benchmarks/common.py (TREC: 6 labels with descriptions, SST-2: 2), no few-shot examples",
            "fixed = the prompt of an empty text (system message + framing), paid on every row; "
            "answer = the output tokens `llmlabel plan` assumes per request; schema = tokens of the response_format "
            "JSON (json_schema), not included in the prompt columns",
            "the cascade's calls saved are measured in ensemble.md, not here",
        ],
    )
    text += "\n" + table(
        [
            "dataset",
            "rows",
            "prompt",
            "mean tokens",
            "median",
            "p95",
            "max",
            "fixed",
            "text mean",
            "fixed share",
            "answer",
            "schema",
        ],
        rows_out,
    )
    text += (
        "\n\n## Cross-check: `llmlabel plan` (mean prompt tokens per row)\n\n"
        + table(["dataset", "mode", "command", "tokens/row", "seconds"], plan_rows)
        + "\n"
    )
    write_result("cost.md", text, Path(a.out) if a.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
