#!/usr/bin/env python3
"""Concatenate every benchmarks/results/*.md into BENCHMARKS.md at the repository root.

Known files come in a fixed order; any other results file follows, alphabetically. Headings are shifted down
one level so each results file becomes a section of the one document.

    python benchmarks/collect.py [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ORDER = [
    "throughput",
    "cache",
    "memory",
    "startup",
    "cost",
    "ensemble",
    "distill",
    "audit",
    "serve",
    "local_quality",
    "local_quality_gold",
    "real_quality",
    "real_quality_gold",
    "real_quality_40",
    "candist_real",
    "ab_revisions",
]
SCRIPTS = {
    "throughput": "throughput.py",
    "cache": "cache_bench.py",
    "memory": "memory_bench.py",
    "startup": "startup_bench.py",
    "cost": "cost_bench.py",
}

INTRO = """# Benchmarks

Every figure below comes from a committed script in `benchmarks/` and was written by that script into
`benchmarks/results/<name>.md`; each section states the exact command it was produced with, the date, the
machine and the load average when it ran. Nothing here is typed in by hand or extrapolated. To reproduce a
section, run its command from the repository root (the simulated server is `../shared/tools/fakellm.py`, the
datasets are in `../shared/data/`), then `python benchmarks/collect.py` to rebuild this file.
"""


def ordered(files: list[Path]) -> list[Path]:
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(files, key=lambda p: (rank.get(p.stem, len(ORDER)), p.stem))


def demote(text: str) -> str:
    out, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and re.match(r"#{1,5} ", line):
            line = "#" + line
        out.append(line)
    return "\n".join(out).strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    a = ap.parse_args(argv)
    files = ordered([p for p in Path(a.results).glob("*.md") if p.is_file()])
    if not files:
        print(f"no results files in {a.results}", file=sys.stderr)
        return 1
    toc = [
        f"- [{p.stem}](benchmarks/results/{p.name})"
        + (f" — `benchmarks/{SCRIPTS[p.stem]}`" if p.stem in SCRIPTS else "")
        for p in files
    ]
    parts = [
        INTRO.strip(),
        f"Collected {dt.date.today().isoformat()} by `python benchmarks/collect.py` from:\n\n" + "\n".join(toc),
    ]
    for p in files:
        parts.append(f"<!-- from benchmarks/results/{p.name} -->\n" + demote(p.read_text(encoding="utf-8")))
    Path(a.out).write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    print(f"wrote {a.out} from {len(files)} results files: {', '.join(p.name for p in files)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
