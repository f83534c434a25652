"""The benchmark scripts keep running against today's API (issue 24: "every test and benchmark keeps passing").

No other test runs them, so an API change used to break them silently (labelsets_real imported a removed
function; distill_labelsets and review_bench handed dicts to functions that now take typed results). Here:

- every benchmarks/*.py runs `--help` as `python benchmarks/X.py --help` would, with the data folder missing
  (../shared is not there in CI): its imports resolve and its options parse;
- the three scripts that broke run their scoring on a few synthetic rows: labelsets_real's whole `--score`
  over hand-made typed outputs, distill_labelsets' GoEmotions and taxonomy runs and review_bench's ECE table
  against tests/fakeserver.py (never ../shared's fakellm) standing in for common.FakeLLM.
"""

from __future__ import annotations

import csv
import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fakeserver import FakeLLM

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
# common.py is the scripts' library: it has no command line
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "common.py")

# Runs each script as __main__ with `--help` in one process (the imports they share load once) and writes
# {script: [exit code, printed a usage, traceback]}. A process of its own: some scripts patch llmlabel at import.
HELP_ALL = """
import contextlib, io, json, runpy, sys, traceback
from pathlib import Path
bench, out = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(bench))
res = {}
for name in sys.argv[3:]:
    printed, code, tb = io.StringIO(), None, ""
    sys.argv = [str(bench / name), "--help"]
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            runpy.run_path(str(bench / name), run_name="__main__")
    except SystemExit as e:
        code = e.code
    except BaseException:
        tb = traceback.format_exc()
    res[name] = [code, "usage:" in printed.getvalue(), tb]
out.write_text(json.dumps(res))
"""


@pytest.fixture(scope="module")
def helps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    tmp = tmp_path_factory.mktemp("bench-help")
    out = tmp / "help.json"
    # LLMLABEL_SHARED names a folder that is not there: no script may need the data to import or to show --help
    env = {**_env(), "LLMLABEL_SHARED": str(tmp / "no-shared")}
    r = subprocess.run(
        [sys.executable, "-c", HELP_ALL, str(BENCH), str(out), *SCRIPTS],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,  # as their docstrings run them (batch_mode.py finds tests/ from there)
        timeout=280,
    )
    assert r.returncode == 0 and out.exists(), r.stderr[-3000:]
    return json.loads(out.read_text())


def _env() -> dict[str, str]:
    import os

    # the checkout under test first (as `PYTHONPATH=$PWD python benchmarks/X.py` runs it)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}, "PYTHONPATH": path}


@pytest.mark.slow  # one process importing every script's libraries (numpy, scikit-learn, ...): ~10 s
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_imports_and_shows_its_help(helps: dict[str, list[Any]], script: str) -> None:
    code, usage, tb = helps[script]
    assert not tb, f"python benchmarks/{script} --help failed:\n{tb}"
    assert code == 0 and usage, f"python benchmarks/{script} --help: exit {code!r}, no usage printed"


# -- the scoring of the scripts that broke ----------------------------------------------------------------
@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """A benchmark module, imported as its script imports its neighbours (benchmarks/ on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCH))
    common = importlib.import_module("common")
    monkeypatch.setattr(common, "cpu_probe", lambda: 0.0)  # the results header's speed probe: 3M loop steps
    return importlib.import_module


def _csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _jsonl(path: Path, results: list[Any]) -> None:
    """Typed results written as `llmlabel label` writes them (io.records.to_record)."""
    from llmlabel.io.records import to_record

    path.write_text("".join(json.dumps(to_record(r)) + "\n" for r in results))


def test_labelsets_real_scores_typed_outputs(
    bench: Callable[[str], ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`labelsets_real.py --score` over outputs as llmlabel writes them: every table, figures from the rows."""
    from llmlabel.results import JudgeAnswer, RowResult

    lr = bench("labelsets_real")
    data = tmp_path / "data"
    data.mkdir()
    intents = {"travel": ["book_flight", "lost_luggage"], "banking": ["balance", "transfer"], "oos": ["oos"]}
    (data / "clinc150_labels.txt").write_text("\n".join(x for v in intents.values() for x in v))
    (data / "goemotions_labels.txt").write_text("joy\nanger\nneutral\n")
    (data / "wos1k_l1_descriptions.json").write_text(json.dumps({"CS": "computer science", "Bio": "biology"}))
    clinc = [("c0", "book_flight"), ("c1", "balance"), ("c2", "transfer"), ("c3", "oos")]
    domain = {x: d for d, v in intents.items() for x in v}
    _csv(data / "clinc150_test.csv", [{"id": i, "text": f"please {g}", "label": g} for i, g in clinc])
    _csv(data / "clinc150_train.csv", [{"id": f"t{i}", "text": f"do {g} now", "label": g} for i, g in clinc])
    _csv(
        data / "clinc150_hier_test.csv",
        [{"id": i, "text": f"please {g}", "label_l1": domain[g], "label_l2": g} for i, g in clinc],
    )
    goemo = [("g0", "joy"), ("g1", "anger|joy"), ("g2", "neutral"), ("g3", "anger")]
    _csv(data / "goemotions_test.csv", [{"id": i, "text": f"comment {i}", "labels": g} for i, g in goemo])
    wos = [("w0", "CS", "ML"), ("w1", "Bio", "Genetics"), ("w2", "CS", "Networks"), ("w3", "Bio", "Ecology")]
    _csv(data / "wos1k_test.csv", [{"id": i, "text": f"abstract {i}", "label_l1": a, "label_l2": b} for i, a, b in wos])
    monkeypatch.setattr(lr, "DATA", data)

    work = tmp_path / "work"
    work.mkdir()

    def output(name: str, results: list[RowResult]) -> None:
        _jsonl(work / f"{name}.out.jsonl", results)
        (work / f"{name}.timing.json").write_text(
            json.dumps({"rows": len(results), "seconds": 2.0 * len(results), "load_start": 1.0, "load_end": 1.5})
        )

    ans = {"local": JudgeAnswer(label="x")}
    # GoEmotions: every set right but g1's (joy only)
    output("goemo", [RowResult(i, "multilabel", labels=tuple(g.split("|")[-1:]), judges=ans) for i, g in goemo])
    # CLINC: all labels 3 of 4 right (c2 answered `balance`); the shortlist 4 of 4
    output("clinc_all", [RowResult(i, label="balance" if i == "c2" else g, judges=ans) for i, g in clinc])
    output("clinc_sl", [RowResult(i, label=g, judges=ans) for i, g in clinc])
    for run in ("tax_t0", "tax_t05", "taxd_t0", "taxd_t05"):
        # the 0.5 runs stop c0 at its domain; c3's path is right at level 1 only
        paths = {i: (domain[g], g) for i, g in clinc}
        paths["c3"] = ("oos", "book_flight")
        if run.endswith("t05"):
            paths["c0"] = ("travel",)
        output(run, [RowResult(i, "taxonomy", label=p[-1], path=p, judges=ans) for i, p in paths.items()])
    output("wos_t0", [RowResult(i, "taxonomy", label=b, path=(a, b), judges=ans) for i, a, b in wos])
    # no wos_t05 output: its table keeps the threshold-0 row alone

    out = tmp_path / "labelsets_real.md"
    rows = "goemo=4,clinc_all=4,clinc_sl=4,tax=4,taxd=4,wos=4"
    monkeypatch.setattr(
        sys, "argv", ["labelsets_real.py", "--work", str(work), "--score", "--rows", rows, "--out", str(out)]
    )
    lr.main()
    text = out.read_text()
    lines = text.splitlines()

    def row(start: str) -> list[str]:
        hit = [line for line in lines if line.startswith(start)]
        assert len(hit) == 1, (start, text)
        return [c.strip() for c in hit[0].strip("|").split("|")]

    # n, micro-F1 (5 gold labels, 4 found, no wrong one), macro-F1, ..., subset accuracy 3/4
    goemo_row = row("| 4 | 0.889 |")
    assert goemo_row[4] == "0.750", text
    assert row("| all 151 labels listed | 4 | 0.750")
    assert row("| shortlist 10 (9 nearest + `oos`) | 4 | 1.000")
    # taxonomy tables: level-1 accuracy 4/4 at both thresholds; level-2 precision 3/4 (t0), 2/3 (t0.5)
    assert text.count("| 0.0 | 4 | 1.000") == 3, text
    assert text.count("| 0.5 | 4 | 1.000") == 2, text
    assert "| 4 | 0.750" in text and "0.667" in text, text


class ServedFake:
    """common.FakeLLM's interface (a context manager with base_url and requests()) over tests/fakeserver.py,
    answering from the data files the script gives it: a row's `labels` set, its taxonomy path
    (label_l1, label_l2) or its `label`."""

    def __init__(self, data: list[Path], extra: list[str] | None = None, **_: Any) -> None:
        answers: dict[str, str] = {}
        paths: dict[str, list[str]] = {}
        for f in data:
            with open(f, newline="", encoding="utf-8") as fh:
                for r in csv.DictReader(fh):
                    if "label_l1" in r:
                        paths[r["text"]] = [r["label_l1"], r["label_l2"]]
                    else:
                        answers[r["text"]] = r.get("labels", r.get("label", ""))
        self.server = FakeLLM(answers=answers, paths=paths)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def requests(self) -> int:
        return self.server.requests

    def start(self) -> ServedFake:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> ServedFake:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The scripts' `llmlabel` processes import this checkout."""
    import os

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    yield


@pytest.fixture
def distill_labelsets(
    bench: Callable[[str], ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_env: None
) -> ModuleType:
    """benchmarks/distill_labelsets.py, its judges served by tests/fakeserver.py, its DATA tmp_path/data."""
    dl = bench("distill_labelsets")
    monkeypatch.setattr(dl, "FakeLLM", ServedFake)
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(dl, "DATA", tmp_path / "data")
    return dl


@pytest.mark.slow  # four `llmlabel` processes (label twice, distill, predict)
def test_distill_labelsets_scores_a_tiny_multilabel_run(distill_labelsets: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "data"
    emotions = ["joy", "anger", "fear"]
    (data / "goemotions_labels.txt").write_text("\n".join(emotions) + "\n")
    words = {"joy": "happy glad", "anger": "mad furious", "fear": "scared afraid"}

    def sets(n: int, split: str) -> list[dict[str, str]]:
        out = []
        for i in range(n):
            got = [emotions[i % 3]] + ([emotions[(i + 1) % 3]] if i % 4 == 0 else [])
            text = f"{split} {i} " + " ".join(words[e] for e in got)
            out.append({"id": f"{split}{i}", "text": text, "labels": "|".join(got)})
        return out

    _csv(data / "goemotions_train.csv", sets(30, "train"))
    _csv(data / "goemotions_test.csv", sets(9, "test"))
    table, _ = distill_labelsets.multilabel(30, 9, 0)
    assert len(table) == 1 and table[0][1] == "30 / 9", table
    # student vs teacher, student vs gold, teacher vs gold: "micro-F1 / macro-F1"; the teacher answers gold
    assert table[0][4] == "1.000 / 1.000", table
    for cell in table[0][2:4]:
        assert all(0 <= float(x) <= 1 for x in cell.split(" / ")), table


@pytest.mark.slow  # four `llmlabel` processes (label twice, distill, predict)
def test_distill_labelsets_scores_a_tiny_taxonomy_run(distill_labelsets: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "data"
    tree = {"animals": ["dog", "cat"], "vehicles": ["car", "bike"]}
    (data / "tree.json").write_text(json.dumps(tree))
    nodes = [(a, b) for a, kids in tree.items() for b in kids]

    def paths(n: int, split: str) -> list[dict[str, str]]:
        return [
            {"id": f"{split}{i}", "text": f"{split} {i} about a {b} ({a})", "label_l1": a, "label_l2": b}
            for i, (a, b) in ((i, nodes[i % 4]) for i in range(n))
        ]

    files = (_csv(data / "tax_train.csv", paths(24, "train")), _csv(data / "tax_test.csv", paths(8, "test")))
    task = {"instructions": "What is it about?"}
    rows, notes = distill_labelsets.taxonomy("tiny", files, data / "tree.json", task, (24, 8), 0)
    assert [r[0] for r in rows] == ["tiny (taxonomy)", "tiny (taxonomy), same student at threshold 0"], rows
    assert rows[0][4] == "1.000 / 1.000", rows  # the teacher against gold, both levels
    assert "level-2 coverage" in notes[0], notes


@pytest.mark.slow  # one `llmlabel label` process
def test_review_bench_ece_table_from_a_labeled_output(
    bench: Callable[[str], ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_env: None
) -> None:
    rb = bench("review_bench")
    from llmlabel.review.dataset import load_output

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"id": f"s{i}", "text": f"sentence {i}", "label": "positive" if i % 3 else "negative"} for i in range(45)]
    _csv(data / "sst2_dev.csv", rows)
    monkeypatch.setattr(rb, "DATA", data)
    # the fake answers gold, but for every fifth row
    wrong = {r["text"]: "negative" if r["label"] == "positive" else "positive" for r in rows[::5]}
    with ServedFake([data / "sst2_dev.csv"]) as fake:
        fake.server.answers.update(wrong)
        out, _, gold, labels = rb.label(tmp_path, "sst2", fake.base_url)
    ds = load_output(out, labels)
    eces = rb.ece_table(ds, gold, draws=2)
    # every judge, the simulated logprob one and the ensemble, raw (0 gold rows) and after 30 gold rows
    assert set(eces) == {"logprob (simulated)", "strong", "medium", "weak", "ensemble"}, eces
    for name in ("strong", "medium", "weak"):
        assert set(eces[name]) == {0, 30}, eces
        # JSON answers say confidence 1.0 and are right on 4 rows of 5: ECE 0.2 before calibration
        assert eces[name][0] == pytest.approx(0.2), eces


def test_embedded_quality_samples_a_jsonl_news_task_in_turn(
    bench: Callable[[str], ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HuffPost stand-in's reading (issue 29): JSON lines, headline and summary joined, categories mapped to
    AG News' names, out-of-set categories dropped, labels taken in turn; a file of another sha256 refused."""
    import hashlib

    eq = bench("embedded_quality")
    cats = ["WORLD NEWS"] * 6 + ["SPORTS"] * 2 + ["TECH", "SCIENCE", "COMEDY", "BUSINESS"]
    lines = [
        {"category": c, "headline": f"Head {i}", "short_description": f"sum {i}" if i % 2 else ""}
        for i, c in enumerate(cats)
    ]
    path = tmp_path / "hp.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    task = {**eq.TASKS["news_hp"], "path": path, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    monkeypatch.setitem(eq.TASKS, "news_hp", task)
    rows = eq.sample("news_hp", 8)
    labels = [r["label"] for r in rows]
    assert set(labels) == {"World", "Sports", "Sci/Tech", "Business"} and "COMEDY" not in labels
    # in turn: the first four rows are one of each label (a balanced sample however skewed the file)
    assert sorted(labels[:4]) == sorted(["World", "Sports", "Sci/Tech", "Business"])
    assert labels.count("World") == 3 and labels.count("Sci/Tech") == 2
    for r in rows:  # headline and summary joined by a space; an empty summary adds nothing
        i = int(r["text"].split()[1])
        assert r["text"] == (f"Head {i} sum {i}" if i % 2 else f"Head {i}")
    monkeypatch.setitem(eq.TASKS, "news_hp", {**task, "sha256": "0" * 64})
    with pytest.raises(SystemExit, match="sha256 differs"):
        eq.sample("news_hp", 8)
