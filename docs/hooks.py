"""MkDocs hooks (mkdocs.yml `hooks:`): the generated config reference, and the benchmark pages from the repository.

- config.md: the marker line is replaced by the field tables docs/gen_config.py builds from llmlabel/config.py.
- BENCHMARKS.md, benchmarks/results/**/*.md and their plots live outside docs/; they are added to the site
  under the same relative paths, so BENCHMARKS.md's own links work unchanged.
- Pages link to them as GitHub sees the repository (`../BENCHMARKS.md`, `../benchmarks/results/x.md`); on the
  site those targets sit inside the docs root, so the leading `../` is dropped before the links are checked.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the llmlabel of this checkout, for gen_config
if str(DOCS) not in sys.path:
    sys.path.insert(0, str(DOCS))

import gen_config  # noqa: E402

_UP = re.compile(r"\]\(\.\./(BENCHMARKS\.md|benchmarks/results/)")


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "BENCHMARKS.md", abs_src_path=str(ROOT / "BENCHMARKS.md")))
    results = ROOT / "benchmarks" / "results"
    for path in sorted(results.rglob("*")):
        if path.is_file() and path.suffix in (".md", ".png"):
            uri = path.relative_to(ROOT).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if page.file.src_uri == "config.md":
        if gen_config.MARKER not in markdown:
            raise ValueError(f"docs/config.md lost its marker line {gen_config.MARKER!r}")
        markdown = markdown.replace(gen_config.MARKER, gen_config.markdown())
    if "/" not in page.file.src_uri:  # a page at the docs root: ../X on GitHub is X on the site
        markdown = _UP.sub(r"](\1", markdown)
    return markdown
