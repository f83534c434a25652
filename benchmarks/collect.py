#!/usr/bin/env python3
"""Build BENCHMARKS.md, a one-page summary of benchmarks/results/*.md, and its plots.

Every figure on the page is read from a results file (the file a benchmark script wrote, with its command,
date and machine), never typed in here: HEADLINES names, per area, which table cell or sentence of which file
holds the figure. A results file whose tables no longer hold a headline stops the build with one line naming
it. Accuracies on fewer than 100 rows are shown with their 95% Wilson interval. The plots (PNG, matplotlib,
the `bench` extra) go to benchmarks/results/plots/; without matplotlib the existing PNGs are kept.

Superseded runs live in benchmarks/results/archive/ and are listed, not summarised.

    python benchmarks/collect.py [--out BENCHMARKS.md] [--no-plots]
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PLOTS = "plots"  # under the results folder
SMALL_N = 100  # accuracies on fewer rows get their 95% interval


class CollectError(Exception):
    """A results file does not hold what a headline reads from it."""


# -- reading results files -------------------------------------------------------------------------------


@dataclass
class Table:
    heading: str  # the nearest heading above the table
    columns: list[str]
    rows: list[list[str]]

    def row(self, first: str) -> dict[str, str]:
        """The first row whose first cell (bold marks stripped) starts with `first`."""
        for r in self.rows:
            if clean(r[0]).startswith(first):
                return dict(zip(self.columns, r))
        raise CollectError(f"no row starting {first!r} in the table under {self.heading!r}")


@dataclass
class Result:
    path: Path
    title: str
    date: str
    command: str
    machine: str
    text: str
    tables: list[Table] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem

    def table(self, heading: str = "", column: str = "") -> Table:
        """The first table under a heading containing `heading` (and with a column `column`)."""
        for t in self.tables:
            if heading in t.heading and (not column or column in t.columns):
                return t
        raise CollectError(f"no table under a heading with {heading!r} (column {column!r})")

    def cell(self, first: str, column: str, heading: str = "") -> str:
        return clean(self.table(heading, column).row(first)[column])

    def find(self, pattern: str) -> re.Match[str]:
        m = re.search(pattern, self.text)
        if not m:
            raise CollectError(f"no text matching {pattern!r}")
        return m

    def rows_of(self, heading: str) -> int:
        """The sample size in a heading such as 'sst2 (40 rows scored, 2 labels)'."""
        m = re.search(r"\((\d+) rows", self.table(heading).heading)
        if not m:
            raise CollectError(f"no row count in the heading with {heading!r}")
        return int(m.group(1))


def clean(cell: str) -> str:
    return cell.strip().strip("*").strip()


def parse(path: Path) -> Result:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    title = lines[0].lstrip("#").strip() if lines else path.stem
    date = command = machine = ""
    if m := re.search(r"^- date: (\d{4}-\d{2}-\d{2})", text, re.M):
        date = m.group(1)
    if m := re.search(r"^- command: `(.+?)`", text, re.M):
        command = m.group(1)
    if m := re.search(r"^- machine: (.+)$", text, re.M):
        # "x86_64, 2 CPUs (AMD EPYC), Python 3.11.7, Linux ..." -> "x86_64, 2 CPUs (AMD EPYC)"
        machine = re.split(r", Python|; Python", m.group(1))[0]
    if m := re.search(r"^- load average \(1 min\) at start: ([\d.]+)", text, re.M):
        machine += f", load {m.group(1)}"
    elif m := re.search(r"load average before the run: ([\d.]+)", text):
        machine += f", load {m.group(1)}"
    # The real-model scripts write one line: "2026-12-01 11:18, 2 cores (x86_64) shared ... Command: `...`"
    if m := re.search(r"^(\d{4}-\d{2}-\d{2}) \d{2}:\d{2}(?: UTC)?, (.+?)\. Command: `(.+?)`", text, re.M):
        date = date or m.group(1)
        command = command or m.group(3)
        if not machine:
            where = re.split(r", llama\.cpp|; this run|, run under", m.group(2))[0]
            machine = where.replace(" (load", ", load").replace(" at start)", "").replace("load at start", "load")
    tables, heading, i = [], title, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-:| ]+\|$", lines[i + 1].strip()):
            columns = [clean(c) for c in line.strip().strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            tables.append(Table(heading, columns, rows))
            continue
        i += 1
    return Result(path, title, date, command, machine, text, tables)


# -- figures -------------------------------------------------------------------------------------------


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion p observed on n rows."""
    if n <= 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def acc(value: str | float, n: int) -> str:
    """An accuracy with its sample size; below SMALL_N rows, two decimals and the 95% Wilson interval."""
    p = float(value)
    if n < SMALL_N:
        lo, hi = wilson(p, n)
        two = Decimal(str(value).strip()).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)  # 0.425 -> 0.43
        return f"{two} [{lo:.2f}, {hi:.2f}] (n={n})"
    return f"{p:.3f} (n={n:,})"


@dataclass
class Headline:
    what: str
    name: str  # results file stem
    figure: Callable[[Result], str]


@dataclass
class Area:
    title: str
    note: str
    headlines: list[Headline]
    plots: list[tuple[str, str]] = field(default_factory=list)  # (png name, caption)


def _sweep(r: Result) -> str:
    t = "Sweep against fakellm"
    c64, c128 = (r.cell(c, "% of ideal", t) for c in ("64", "128"))
    return f"{c64} of ideal at concurrency 64 ({r.cell('64', 'rows/s', t)} rows/s); {c128} at 128"


def _pair(r: Result, column: str, dataset: str, strategy: str) -> str:
    t = r.table(column=column)
    for row in t.rows:
        if clean(row[0]) == dataset and clean(row[1]) == strategy:
            return clean(dict(zip(t.columns, row))[column])
    raise CollectError(f"no {dataset} / {strategy} row under {t.heading!r}")


def _coverages(r: Result) -> str:
    t = r.table(column="coverage")
    vals = [float(clean(row[t.columns.index("coverage")]).split()[0]) for row in t.rows]
    return f"{min(vals):.2f} to {max(vals):.2f} over {len(vals)} cells (nominal 0.95)"


def _taxonomy(r: Result) -> tuple[str, str, str, str]:
    t = r.table(column="level-2 precision")
    rows = {(clean(x[0]), clean(x[1])): dict(zip(t.columns, x)) for x in t.rows}
    a, b = rows[("wos1k", "0.0")], rows[("wos1k", "0.5")]
    return a["level-2 precision"], a["level-2 coverage"], b["level-2 precision"], b["level-2 coverage"]


def _real_quality(r: Result, task: str) -> str:
    n = r.rows_of(task)
    t = r.table(task)
    return f"{task} {acc(t.row('qwen (')['accuracy'], n)} / {clean(t.row('ensemble (dawid_skene')['accuracy'])}"


def _lever(r: Result, task: str, base: str, lever: str) -> str:
    t = r.table(column="prompt")
    rows = {(clean(x[0]), clean(x[1])): dict(zip(t.columns, x)) for x in t.rows}
    b, v = rows[(task, base)], rows[(task, lever)]
    return f"{acc(b['accuracy'], int(b['rows']))} -> {acc(v['accuracy'], int(v['rows']))}"


def _model_lever(r: Result, task: str, model: str, lever: str) -> str:
    """embedded_models: one (task, model, lever) row's accuracy with its interval and n."""
    t = r.table(column="lever")
    row = next(  # "default" matches the default lever, whichever calibrations it had ("default (cc+bc)")
        dict(zip(t.columns, x))
        for x in t.rows
        if (clean(x[1]), clean(x[2])) == (task, model) and clean(x[3]).split(" (")[0] == lever
    )
    return acc(row["accuracy"], int(row["n"]))


def _job_accuracy(r: Result) -> str:
    """embedded_job_speed: the job's accuracy with its n, and rows/s."""
    accuracy = acc(r.find(r"= ([\d.]+) \[").group(1), int(r.find(r"accuracy \d+/(\d+)").group(1)))
    return f"{accuracy}; {r.cell('rows/s', 'value')} rows/s"


def _job_speed(r: Result) -> str:
    """embedded_job_speed: rows/s (s/row); llama.cpp's own prompt / generated tokens/s."""
    return "{} rows/s ({} s/row); {} / {}".format(
        r.cell("rows/s", "value"),
        r.cell("s/row", "value"),
        r.cell("llama.cpp prompt", "value"),
        r.cell("llama.cpp generated", "value"),
    )


def _per_label(r: Result) -> str:
    """embedded_quality: per-label questions with Batch Calibration against one question a row as llmlabel reads
    it (its default where that is one question; else the reading it had before per-label questions), on the same
    rows."""
    t = r.table(column="lever")
    new = t.row("bc [per_label]")
    try:
        old = t.row("one question a row: llmlabel's reading before per_label")
    except CollectError:
        old = t.row("llmlabel's default (")
    return f"{acc(new['accuracy'], int(new['n']))} against {acc(old['accuracy'], int(old['n']))}"


def _audit(r: Result) -> str:
    p = r.table(column="flagged").row("pooled")
    return f"{p['flagged']} flags, estimated precision {p['est. precision']}, true {p['true precision']}, recall {p['recall']}"


def _student(r: Result, n: int) -> str:
    t = r.table(column="accuracy")
    teacher = t.row("teacher")["accuracy"]
    students = [
        (float(x[1]), clean(x[0])) for x in t.rows if clean(x[0]).startswith("student") and "gold labels" not in x[0]
    ]
    best, which = max(students)
    feats = re.search(r"\[(.+?)\]", which)
    return f"teacher {acc(teacher, n)}; best student {acc(best, n)} ({feats.group(1) if feats else which})"


def _ece(r: Result) -> str:
    t = r.table(column="ECE (± se)")
    out = []
    for task in ("sst2", "sms", "trec"):
        rows = [dict(zip(t.columns, x)) for x in t.rows if x[0] == task and x[1] == "B"]
        plain = next(x for x in rows if x["gold rows"] == "0")
        gold = next(x for x in rows if x["gold rows"] != "0")
        out.append(f"{task} {plain['ECE (± se)'].split()[0]} / {gold['ECE (± se)'].split()[0]}")
    return "; ".join(out)


HEADLINES: list[Area] = [
    Area(
        "Speed, cost and scale",
        "Simulated server (`../shared/tools/fakellm.py`, or `benchmarks/lean_server.py`) on the same 2 cores as the client.",
        [
            Headline("Throughput, one judge, 100 ms server (ideal = concurrency / latency)", "throughput", _sweep),
            Headline(
                "3,000 rows at concurrency 64, process start-up included (target 80%)",
                "throughput",
                lambda r: r.find(r"median of 5 runs: ([\d.]+% of ideal \([\d,]+ rows/s\))").group(1),
            ),
            Headline(
                "Client CPU per 1,000 requests, zero-latency server (aiohttp vs the openai SDK)",
                "throughput",
                lambda r: "{} vs {} CPU s".format(
                    r.cell("aiohttp", "marginal CPU s / 1,000 req"), r.cell("sdk", "marginal CPU s / 1,000 req")
                ),
            ),
            Headline(
                "Start-up: `llmlabel --help`; a 10-row job, cold cache (median wall, and CPU: wall grows with the load)",
                "startup",
                lambda r: "{} s / {} s wall; {} s / {} s CPU".format(
                    r.cell("`llmlabel --help`", "median s"),
                    r.cell("`llmlabel label`", "median s"),
                    r.cell("`llmlabel --help`", "median CPU s"),
                    r.cell("`llmlabel label`", "median CPU s"),
                ),
            ),
            Headline(
                "Warm rerun of 5,000 rows x 3 judges vs the cold run",
                "cache",
                lambda r: "{} ({} s cold)".format(
                    r.find(r"median of 5\) = ([\d.]+% of cold, 0 requests)").group(1), r.cell("cold", "seconds")
                ),
            ),
            Headline(
                "Peak RSS labeling 10,000 / 1,000,000 rows (target <= 300 MB)",
                "memory",
                lambda r: "{} / {} MiB".format(r.cell("10,000", "peak RSS MiB"), r.cell("1,000,000", "peak RSS MiB")),
            ),
            Headline(
                "20,000 rows at zero latency: local engine / 2 shards + merge / Ray, 2 actors",
                "ray_engine",
                lambda r: "{} / {} / {} rows/s".format(
                    r.cell("local engine", "rows/s", "0 ms"),
                    r.cell("2 shards", "rows/s", "0 ms"),
                    r.cell("ray, 2 actors", "rows/s", "0 ms"),
                ),
            ),
            Headline(
                "`llmlabel serve`, 200 clients, every item a new judge call",
                "serve",
                lambda r: "{} req/s, p50 {} ms, p99 {} ms, {} errors".format(
                    r.cell("unique", "req/s"),
                    r.cell("unique", "p50 ms"),
                    r.cell("unique", "p99 ms"),
                    r.cell("unique", "errors"),
                ),
            ),
            Headline(
                "Prompt tokens per row, TREC test, label / candidates prompt",
                "cost",
                lambda r: "{} / {}".format(
                    r.table(column="mean tokens").rows[0][3], r.table(column="mean tokens").rows[1][3]
                ),
            ),
        ],
        [("throughput.png", "Rows per second and share of the ideal against concurrency (100 ms server)")],
    ),
    Area(
        "Aggregation, distillation and audit with simulated judges",
        "Judges simulated by fakellm with known accuracies and fixed confusions; TREC and SST-2 from `../shared/data`.",
        [
            Headline(
                "TREC test (500), judges 0.85 / 0.70 / 0.60: Dawid-Skene vs majority vs best judge",
                "ensemble",
                lambda r: "{} vs {} vs {}".format(
                    r.cell("dawid-skene", "accuracy", "TREC"),
                    r.cell("majority", "accuracy", "TREC"),
                    r.cell("single judge `strong`", "accuracy", "TREC"),
                ),
            ),
            Headline(
                "Student distilled from a 0.71 teacher's candidate sets vs from its labels (TREC test, 500)",
                "distill",
                lambda r: "{} vs {}".format(
                    r.cell("candidates (refinery), confidence-weighted", "accuracy on TREC test"),
                    r.cell("single label (teacher)", "accuracy on TREC test"),
                ),
            ),
            Headline(
                "`llmlabel audit`, 2,000 TREC rows, 10% flipped: AUROC; precision / recall of the flags",
                "audit",
                lambda r: "{}; {} / {}".format(
                    r.cell("combined", "AUROC (score vs flipped)", "0.85"),
                    r.cell("combined", "precision of flags", "0.85"),
                    r.cell("combined", "recall of flags", "0.85"),
                ),
            ),
        ],
    ),
    Area(
        "Quality of the real embedded models",
        "Real llama.cpp servers with Qwen2.5-Coder-1.5B (the default judge since issue 29), Qwen2.5-Coder-0.5B (the"
        " default before it), SmolLM2-135M and Gemma 3 270M, on seeded samples; intervals are 95% Wilson intervals.",
        [
            Headline(
                "Embedded Qwen 0.5B (the default before the 1.5B, calibrated logprobs) on SST-2 dev",
                "local_quality",
                lambda r: (
                    acc(r.cell("qwen", "accuracy"), int(r.find(r"(\d+) reviews scored").group(1)))
                    + ", ECE "
                    + r.find(r"ECE ([\d.]+)").group(1)
                ),
            ),
            Headline(
                "... with 30 gold rows (Platt-scaled confidence), scored on the other rows",
                "local_quality_gold",
                lambda r: (
                    acc(r.cell("llmlabel's label", "accuracy"), int(r.find(r"(\d+) reviews scored").group(1)))
                    + ", ECE "
                    + r.find(r"ECE ([\d.]+)").group(1)
                ),
            ),
            Headline(
                "SST-2 / SMS spam / TREC, 100 rows each: Qwen alone; Dawid-Skene over Qwen, SmolLM2 and Gemma",
                "real_quality_cascade",
                lambda r: "; ".join(_real_quality(r, t) for t in ("sst2", "sms", "trec")),
            ),
            Headline(
                "Cascade SmolLM2 > Gemma > Qwen with the 64-row probe, SST-2: accuracy, judges a row",
                "real_quality_cascade",
                lambda r: "{}, {}".format(
                    acc(r.cell("cascade", "accuracy", "sst2"), r.rows_of("sst2")),
                    r.cell("cascade", "s/row", "sst2").replace("judges/row", "judges"),
                ),
            ),
            Headline(
                "Retrieved demonstrations (4 per row), TREC: zero-shot -> few-shot",
                "fewshot_real_floor",
                lambda r: _lever(r, "trec", "zero-shot", "4 retrieved demonstrations"),
            ),
            Headline(
                "Retrieved demonstrations (4 per row), SST-2: zero-shot -> few-shot",
                "fewshot_real_floor",
                lambda r: _lever(r, "sst2", "zero-shot", "4 retrieved demonstrations"),
            ),
            Headline(
                "Self-consistency (5 samples, T=1.2) without logprobs, SST-2: rows kept at 90% accuracy",
                "selfconsistency_real",
                lambda r: "{} (greedy: {}); accuracy {}".format(
                    r.table(column="cov@0.9").rows[2][7],
                    r.table(column="cov@0.9").rows[0][7],
                    acc(r.table(column="cov@0.9").rows[2][3], int(r.table(column="cov@0.9").rows[2][2])),
                ),
            ),
            Headline("ECE without / with 30 gold rows (SST-2, SMS, TREC; 100-120 rows each)", "confidence_real", _ece),
            Headline(
                "Label sets with the embedded 0.5B: GoEmotions micro-F1 (40 rows); CLINC150 shortlist of 10 vs all "
                "151 labels, accuracy and prompt tokens a row (30 rows)",
                "labelsets_real",
                lambda r: "{}; {} at {} tokens vs {} at {}".format(
                    r.cell("40", "micro-F1"),
                    r.cell("shortlist 10", "accuracy (95% interval)").split(" ")[0],
                    r.cell("shortlist 10", "prompt tokens a row").split(" ")[0],
                    r.cell("all 151", "accuracy (95% interval)").split(" ")[0],
                    r.cell("all 151", "prompt tokens a row").split(" ")[0],
                ),
            ),
            Headline(
                "Per task kind, as `llmlabel label` labelled with each model before per-label questions: the 0.5B / "
                "the 1.5B: BBC news "
                "(4 topics); CLINC domains; TREC; SST-2; SMS; CLINC150's 151 intents",
                "embedded_models",
                lambda r: "; ".join(
                    "{} / {}".format(_model_lever(r, t, "0.5b", "default"), _model_lever(r, t, "1.5b", "default"))
                    for t in ("news", "clinc_domain", "trec", "sst2", "sms", "clinc_intent")
                ),
            ),
            Headline(
                "The 1.5B through `llmlabel label` (no key, fresh cache) with one question a row, the default before "
                "per-label questions, on 200 BBC news stories, 4 topics, first 40 words: accuracy; rows/s on quiet cores",
                "embedded_job_news",
                _job_accuracy,
            ),
            Headline(
                "... the same 200 stories with the topics named as AG News' (World, Sports, Business, Sci/Tech)",
                "embedded_job_news_ag",
                _job_accuracy,
            ),
            Headline(
                "The 1.5B default (per-label questions) through `llmlabel label` on 200 HuffPost headlines and "
                "summaries (cased, like AG News') under AG News' four topic names: accuracy; rows/s",
                "embedded_job_news_hp",
                _job_accuracy,
            ),
            Headline(
                "Per-label questions + bc (the embedded default for 3-5 labels) against one question a row as "
                "llmlabel reads it (cc+bc, or bc where it undoes cc), the same rows: the 200 BBC stories under AG "
                "News' names",
                "embedded_news_ag_1.5b",
                _per_label,
            ),
            Headline(
                "... TREC's question types (6 labels: they keep one question a row)",
                "embedded_trec_1.5b_per_label",
                _per_label,
            ),
            Headline("... the BBC stories under their own topic names", "embedded_news_1.5b_per_label", _per_label),
            Headline(
                "... CLINC150's 10 domains (first 60 rows; 10 labels: they keep one question a row)",
                "embedded_clinc_domain_1.5b_per_label",
                _per_label,
            ),
            Headline(
                "The 0.5B (`[local-small]`; per-label questions for 3-5 labels since these runs): per-label questions "
                "+ bc against one question a row as llmlabel read it, the same 200 rows: the BBC stories under their "
                "own topic names",
                "embedded_news_per_label",
                _per_label,
            ),
            Headline("... HuffPost under AG News' names", "embedded_news_hp_per_label", _per_label),
            Headline("... the BBC stories under AG News' names", "embedded_news_ag_per_label", _per_label),
            Headline(
                "... TREC's question types (6 labels: they keep one question a row)",
                "embedded_trec_per_label",
                _per_label,
            ),
            Headline(
                "The 1.5B default in a whole `llmlabel label` job on quiet cores (100 SST-2 rows, fresh cache): "
                "rows/s; llama.cpp's own prompt / generated tokens/s",
                "embedded_job_speed",
                _job_speed,
            ),
            Headline(
                "... a four-topic job, per-label questions (4 requests a row), on quiet cores (60 HuffPost rows "
                "under AG News' names, fresh cache)",
                "embedded_job_news_hp_quiet",
                _job_speed,
            ),
        ],
        [
            (
                "quality.png",
                "Accuracy per data set and setup, 40 rows each, with 95% Wilson intervals (real_quality_modes)",
            )
        ],
    ),
    Area(
        "A stated accuracy: the review loop",
        "`llmlabel review`: a seeded random validation sample plus rows ranked by the value of a human label; the "
        "gold file answers as the human. Labels from three fakellm judges (review_sim) or the embedded Qwen 0.5B "
        "(review_real).",
        [
            Headline(
                "SMS (1,000 rows), 3 simulated judges: true accuracy after 300 human labels, targeted vs random",
                "review_sim",
                lambda r: "{} vs {} (before review {})".format(
                    _pair(r, "B=300", "sms", "targeted"),
                    _pair(r, "B=300", "sms", "random"),
                    _pair(r, "B=0", "sms", "targeted"),
                ),
            ),
            Headline(
                "Coverage of the stated 95% interval, 50 seeded reviews per set and strategy (simulated judges)",
                "review_sim",
                lambda r: _coverages(r),
            ),
            Headline(
                "Coverage of the stated 95% interval over the embedded model's labels (50 reviews per set and strategy)",
                "review_real",
                lambda r: _coverages(r),
            ),
        ],
        [("risk_coverage.png", "Accuracy of the rows kept against the share kept, most confident first (review_real)")],
    ),
    Area(
        "Label sets beyond one label",
        "Judges simulated by fakellm (accuracies 0.85 / 0.75 / 0.65 or 0.6); GoEmotions, CLINC150 and Web of Science "
        "from `../shared/data`.",
        [
            Headline(
                "GoEmotions (28 labels, 800 rows scored): micro-F1, Dawid-Skene per label vs the best judge",
                "multilabel_goemotions",
                lambda r: "{} vs {}".format(r.cell("dawid_skene", "micro-F1"), r.cell("a alone", "micro-F1")),
            ),
            Headline(
                "CLINC150 (151 labels, 1,000 rows): shortlist of 10 (oos pinned) vs every label listed, accuracy and "
                "prompt tokens a row",
                "shortlist_clinc150",
                lambda r: "{} at {} tokens vs {} at {}".format(
                    r.cell("shortlist 10 (9 nearest", "accuracy"),
                    r.cell("shortlist 10 (9 nearest", "prompt tokens a row per judge"),
                    r.cell("all 151 labels", "accuracy"),
                    r.cell("all 151 labels", "prompt tokens a row per judge"),
                ),
            ),
            Headline(
                "Multi-label audit, GoEmotions 800 rows, 30% of rows with a label dropped, added or swapped, judges "
                "0.85 / 0.75 / 0.6: pair precision / recall of the flags, judges vs cleanlab vs combined",
                "audit_multilabel",
                lambda r: " vs ".join(
                    "{} / {}".format(
                        r.cell(s, "pair precision", "three judges"), r.cell(s, "pair recall", "three judges")
                    )
                    for s in ("judges", "cleanlab", "combined")
                ),
            ),
            Headline(
                "Students from label sets (TF-IDF, 1,500 train / 500 test) vs gold: GoEmotions one-vs-rest micro / "
                "macro-F1; CLINC150 per-level student, level 1 / level 2 accuracy",
                "distill_labelsets",
                lambda r: "{}; {}".format(
                    r.cell("GoEmotions", "student vs gold"), r.cell("clinc150 (taxonomy)", "student vs gold")
                ),
            ),
            Headline(
                "Web of Science (7 -> 132, 1,000 rows): level-2 precision and coverage, no back-off vs threshold 0.5",
                "taxonomy_clinc_wos",
                lambda r: "{} ({}) vs {} ({})".format(*_taxonomy(r)),
            ),
        ],
    ),
    Area(
        "Audit on real data with a real judge",
        "`llmlabel audit` with the embedded Qwen 0.5B judge and the TF-IDF confident-learning signal; 10% of the labels"
        " flipped, 5 flip seeds pooled.",
        [
            Headline("SST-2, 200 rows (judge right on 85%)", "audit_real_sst2", _audit),
            Headline("SMS spam, 200 rows (judge right on 52.5%)", "audit_real_sms_flip", _audit),
            Headline("TREC, 240 rows (judge right on 41%)", "audit_real_trec", _audit),
        ],
    ),
    Area(
        "Distilling from a real teacher",
        "Qwen2.5-Coder-1.5B labels TREC train; students are scored on seeded TREC test questions (gold).",
        [
            Headline("Zero-shot teacher, 150 train rows (150 test)", "candist_real", lambda r: _student(r, 150)),
            Headline(
                "Few-shot teacher (guideline + 2 demonstrations a label), 1,500 train rows (300 test)",
                "candist_real_fewshot",
                lambda r: _student(r, 300),
            ),
            Headline(
                "Same teacher, 3,000 train rows (300 test)", "candist_real_fewshot_3000", lambda r: _student(r, 300)
            ),
        ],
    ),
]


# -- plots ----------------------------------------------------------------------------------------------


def _num(s: str) -> float:
    return float(clean(s).replace(",", "").rstrip("%"))


def plot_throughput(results: dict[str, Result], out: Path) -> None:
    import matplotlib.pyplot as plt

    r = results["throughput"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for heading, label in (("Sweep against fakellm", "fakellm"), ("Sweep against the lean server", "lean server")):
        t = r.table(heading)
        conc = [_num(x[0]) for x in t.rows]
        col = {c: i for i, c in enumerate(t.columns)}
        ax1.plot(conc, [_num(x[col["rows/s"]]) for x in t.rows], "o-", label=f"llmlabel vs {label}")
        ax2.plot(conc, [_num(x[col["% of ideal"]]) for x in t.rows], "o-", label=f"llmlabel vs {label}")
        if label == "fakellm":
            ax1.plot(conc, [_num(x[col["ideal rows/s"]]) for x in t.rows], "k--", label="ideal (concurrency / 0.1 s)")
            ax2.plot(
                conc, [_num(x[col["bare aiohttp loop, % of ideal"]]) for x in t.rows], "s:", label="bare aiohttp loop"
            )
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_yscale("log")
    ax1.set_ylabel("rows/s")
    ax2.set_ylabel("% of ideal")
    ax2.axhline(90, color="grey", lw=0.8)
    fig.suptitle(f"One judge, 100 ms server, 2 cores ({r.date})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(fig)


def plot_quality(results: dict[str, Result], out: Path) -> None:
    import matplotlib.pyplot as plt

    r = results["real_quality_modes"]
    setups = [
        ("qwen (", "Qwen 0.5B"),
        ("smollm2 (", "SmolLM2 135M"),
        ("gemma3 (", "Gemma 3 270M"),
        ("ensemble (majority", "ensemble, majority"),
        ("ensemble (dawid_skene", "ensemble, Dawid-Skene"),
        ("qwen, 4 retrieved", "Qwen + 4 retrieved demos"),
        ("qwen, candidate sets", "Qwen, candidate sets"),
        ("cascade", "cascade (no probe)"),
    ]
    tasks = [("sst2", "SST-2"), ("sms", "SMS spam"), ("trec", "TREC")]
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(setups)
    for j, (first, label) in enumerate(setups):
        xs, ys, lo, hi = [], [], [], []
        for i, (task, _) in enumerate(tasks):
            n = r.rows_of(task)
            p = _num(r.table(task).row(first)["accuracy"])
            a, b = wilson(p, n)
            xs.append(i + (j - len(setups) / 2 + 0.5) * width)
            ys.append(p)
            lo.append(p - a)
            hi.append(b - p)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=label)
    ax.set_xticks(range(len(tasks)), [f"{t} ({r.rows_of(k)} rows)" for k, t in tasks])
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.suptitle(f"Real local models, label mode, calibrated logprobs ({r.date}); bars: 95% Wilson", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(fig)


def plot_risk_coverage(results: dict[str, Result], out: Path) -> None:
    import matplotlib.pyplot as plt

    t = results["review_real"].table(column="keep 100%")
    xs = [int(c.removeprefix("keep ").rstrip("%")) / 100 for c in t.columns[1:]]
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    for row in t.rows:
        ax.plot(xs, [float(clean(v)) for v in row[1:]], marker="o", label=clean(row[0]))
    ax.set_xlabel("share of rows kept (most confident first)")
    ax.set_ylabel("accuracy of the rows kept")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(fig)


PLOTTERS = {"throughput.png": plot_throughput, "quality.png": plot_quality, "risk_coverage.png": plot_risk_coverage}


# -- the page -------------------------------------------------------------------------------------------

INTRO = """# Benchmarks

A summary: one table per area, each figure read from a results file that a committed script in `benchmarks/`
wrote (with the exact command, date, machine and load). Follow a row's link for the full tables and what was
measured. The machines are small shared VMs (2 cores, other jobs running; the load is in each file), so
seconds are pessimistic and differences of a few percent are noise. Accuracies on fewer than 100 rows are given
with their 95% Wilson interval `[low, high]`.

Rebuild this page (and its plots) from the results files with `python benchmarks/collect.py` (plots need the
`bench` extra: `pip install -e '.[bench]'`) after a benchmark script rewrites its results file (the real-model
scripts call it themselves). Superseded runs move to `benchmarks/results/archive/`, listed at the end."""


def _row(r: Result, h: Headline) -> str:
    try:
        fig = h.figure(r)
    except (CollectError, KeyError, IndexError, ValueError, AttributeError) as e:
        raise CollectError(f"{r.path.name}: cannot read the headline {h.what!r}: {e}") from None
    link = f"[{r.name}](benchmarks/results/{r.path.name})"
    cmd = f"`{r.command}`" if r.command else "(see file)"
    return f"| {h.what} | {fig} | {cmd} | {r.date} | {r.machine} | {link} |"


def build(results_dir: Path, plots: bool) -> tuple[str, list[str]]:
    """The page's Markdown, and the plots that could not be drawn (with why)."""
    results = {p.stem: parse(p) for p in sorted(results_dir.glob("*.md"))}
    used: set[str] = set()
    parts, skipped = [INTRO], []
    plot_dir = results_dir / PLOTS
    rel = results_dir.relative_to(ROOT).as_posix() if results_dir.is_relative_to(ROOT) else str(results_dir)
    for area in HEADLINES:
        lines = [f"## {area.title}", "", area.note, ""]
        lines += ["| what | figure | command | date | machine | results |", "|---|---|---|---|---|---|"]
        for h in area.headlines:
            if h.name not in results:
                raise CollectError(f"{h.name}.md is missing from {results_dir}; the headline {h.what!r} reads it")
            lines.append(_row(results[h.name], h))
            used.add(h.name)
        for png, caption in area.plots:
            if plots:
                try:
                    plot_dir.mkdir(exist_ok=True)
                    PLOTTERS[png](results, plot_dir / png)
                except ImportError:
                    skipped.append(f"{png}: matplotlib is not installed (pip install -e '.[bench]')")
                except (CollectError, KeyError, IndexError, ValueError) as e:
                    raise CollectError(f"plot {png}: {e}") from None
            if (plot_dir / png).is_file():
                lines += ["", f"![{caption}]({rel}/{PLOTS}/{png})", "", f"*{caption}.*"]
        parts.append("\n".join(lines))
    listing = ["## All results files", "", "| file | what | date | command |", "|---|---|---|---|"]
    for name, r in results.items():
        listing.append(
            f"| [{name}]({rel}/{r.path.name}) | {r.title} | {r.date} | {'`' + r.command + '`' if r.command else ''} |"
        )
    parts.append("\n".join(listing))
    archive = sorted((results_dir / "archive").glob("*.md"))
    if archive:
        parts.append(
            "## Archive\n\nSuperseded runs and the `_before` halves of before/after comparisons, kept for the"
            " record; the runs above replace them.\n\n"
            + "\n".join(f"- [{p.stem}]({rel}/archive/{p.name}): {parse(p).title}" for p in archive)
        )
    return "\n\n".join(parts) + "\n", skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--no-plots", action="store_true", help="keep the existing PNGs")
    a = ap.parse_args(argv)
    try:
        page, skipped = build(Path(a.results).resolve(), plots=not a.no_plots)
    except CollectError as e:
        print(f"collect: {e}", file=sys.stderr)
        return 1
    Path(a.out).write_text(page, encoding="utf-8")
    for s in skipped:
        print(f"collect: plot not redrawn: {s}", file=sys.stderr)
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
