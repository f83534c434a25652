"""The one run lifecycle (pipeline/lifecycle.py, issue 24 item 1): every entry checks its output the same way,
the Run closes the response cache it opened on every path out, a stopped run's error carries typed fields that
each front end words itself, and a Ray actor's error reaches the driver as the same type."""

import asyncio
import json
from types import SimpleNamespace

import pyarrow as pa
import pytest
from conftest import one_line_error, run_main, write_config, write_corpus
from fakeserver import FakeLLM

from llmlabel.config import load_config
from llmlabel.errors import InputError, JudgeError
from llmlabel.llm import cache as cache_module
from llmlabel.pipeline.options import RunOptions


@pytest.fixture
def files(tmp_path, fake):
    """An input with a label column, the config's gold: file, examples_file and a prompt template."""
    rows = ["id,text,label"] + [f"r{i},text {i},{'positive' if i % 2 else 'negative'}" for i in range(6)]
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "gold.csv").write_text("id,label\nr0,negative\nr1,positive\n")
    (tmp_path / "examples.csv").write_text("text,label\ngreat stuff,positive\nawful stuff,negative\n")
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "label.jsonl").write_text("{}\n")  # a template file with a table's extension
    cfg = write_config(tmp_path / "c.jsonl", fake.base_url, gold=str(tmp_path / "gold.csv"), prompts_dir=str(prompts))
    text = cfg.read_text().replace(
        "  name: sentiment\n", f"  name: sentiment\n  examples_file: {tmp_path / 'examples.csv'}\n"
    )
    cfg.write_text(text)
    return tmp_path, cfg


def _label(cfg, inp, out):
    from llmlabel.pipeline.run import run_job

    run_job(load_config(cfg), inp, out, RunOptions(progress=False))


def _labeler(cfg, inp, out):
    from llmlabel.pipeline.labeler import Labeler

    with Labeler(str(cfg)) as lab:
        lab.label_file(inp, out)


def _audit(cfg, inp, out):
    from llmlabel.auditing.audit import AuditOptions, run_audit

    run_audit(load_config(cfg), inp, out, AuditOptions(progress=False))


def _ray(cfg, inp, out):
    from llmlabel.distributed.driver import run_job_ray

    run_job_ray(load_config(cfg), inp, out, RunOptions(progress=False))  # refused before Ray starts


ENTRIES = {"label": _label, "Labeler": _labeler, "audit": _audit, "ray": _ray}


@pytest.mark.parametrize(
    "target, needle",
    [
        ("in.csv", "the input file"),
        ("c.jsonl", "the config file"),
        ("gold.csv", "the config's gold: file"),
        ("examples.csv", "task.examples_file"),
        ("prompts/label.jsonl", "a prompt template"),
    ],
)
@pytest.mark.parametrize("entry", ENTRIES)
def test_every_entry_refuses_an_output_it_reads(files, fake, entry, target, needle):
    tmp_path, cfg = files
    paths = [tmp_path / n for n in ("in.csv", "c.jsonl", "gold.csv", "examples.csv", "prompts/label.jsonl")]
    before = {p: p.read_bytes() for p in paths}
    with pytest.raises(InputError) as e:
        ENTRIES[entry](cfg, tmp_path / "in.csv", tmp_path / target)
    assert needle in str(e.value) and "choose another -o path" in str(e.value)
    assert "\n" not in str(e.value)
    assert fake.requests == 0 and {p: p.read_bytes() for p in paths} == before


@pytest.fixture
def opened(monkeypatch):
    """Every response cache opened, and whether each was closed."""
    caches: list[list[bool]] = []
    real_init, real_close = cache_module.ResponseCache.__init__, cache_module.ResponseCache.close

    def init(self, directory):
        real_init(self, directory)
        self._test_closed = [False]
        caches.append(self._test_closed)

    def close(self):
        self._test_closed[0] = True
        real_close(self)

    monkeypatch.setattr(cache_module.ResponseCache, "__init__", init)
    monkeypatch.setattr(cache_module.ResponseCache, "close", close)
    return caches


@pytest.mark.parametrize("command", ["label", "batch", "audit", "Labeler"])
def test_the_cache_is_closed_when_making_the_job_fails(files, fake, capsys, opened, command):
    """An examples_file row with a label outside task.labels fails when the job is made, after its cache was
    opened: that cache is closed all the same (RowLabeler opened it and nobody closed it before the Run owned it)."""
    tmp_path, cfg = files
    (tmp_path / "examples.csv").write_text("text,label\ngreat stuff,superb\n")
    out = tmp_path / "o.jsonl"
    if command == "Labeler":
        from llmlabel.errors import ConfigError
        from llmlabel.pipeline.labeler import Labeler

        with Labeler(str(cfg)) as lab, pytest.raises(ConfigError, match="not in task.labels"):
            lab.label_file(tmp_path / "in.csv", out)
    else:
        args = ["audit" if command == "audit" else "label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out)]
        rc, _, err = run_main(capsys, *args, *(["--batch"] if command == "batch" else []))
        one_line_error(rc, err, "task.examples_file", "not in task.labels")
    assert opened and all(closed for (closed,) in opened), opened
    assert fake.requests == 0


@pytest.mark.usefixtures("quiet_fake_server")  # (a 401 cuts connections: the server's threads would print)
def test_a_stopped_run_carries_its_rows_and_ledger_and_only_the_cli_words_a_rerun(tmp_path, capsys):
    """The library's error says what went wrong; where the rows are is a field (errors.KeptRows), and the CLI adds
    its own advice from it (the service adds its resume route)."""
    from llmlabel.pipeline.run import run_job

    server = FakeLLM(status=401).start()
    try:
        write_corpus(tmp_path / "in.csv", 5)
        cfg = write_config(tmp_path / "c.yaml", server.base_url)
        out = tmp_path / "o.jsonl"
        with pytest.raises(JudgeError) as e:
            run_job(load_config(cfg), tmp_path / "in.csv", out, RunOptions(progress=False))
        assert "rerun" not in str(e.value)
        assert e.value.kept is not None and e.value.kept.part == tmp_path / "o.jsonl.part"
        assert e.value.kept.rows == e.value.ledger.rows_done
        rc, _, err = run_main(capsys, "label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out))
        one_line_error(rc, err, "kept in o.jsonl.part", "rerun the same command to continue")
    finally:
        server.stop()


def test_a_ray_actors_error_reaches_the_driver_as_its_own_type(tmp_path, fake, monkeypatch):
    """An actor's error travels to the driver as the exception itself (not its class name looked up in
    llmlabel.errors): an error class of another module (local.models.LocalError) keeps its type."""
    from llmlabel.distributed import driver, worker
    from llmlabel.llm.cache import open_cache
    from llmlabel.local.models import LocalError
    from llmlabel.pipeline.row_labeler import RowLabeler

    class FailingExecutor:
        async def execute(self, *a, **k):
            raise LocalError("llama-server exited: install llama-cpp-python")

    monkeypatch.setattr(worker, "LocalExecutor", FailingExecutor)
    cfg = load_config(write_config(tmp_path / "c.yaml", fake.base_url))

    async def no_pauses():
        return {}

    gate = SimpleNamespace(pauses=SimpleNamespace(remote=no_pauses))
    actor = worker.LabelWorker(cfg, cfg.judges, RunOptions(progress=False), frozenset(), gate)

    async def one_batch():
        out = await actor(pa.Table.from_pylist([{"id": "r0", "text": "great"}]))
        if actor._watch is not None:
            actor._watch.cancel()
        return out

    out = asyncio.run(one_batch())
    labeler = RowLabeler(cfg, cfg.judges, RunOptions(progress=False), open_cache(cfg.cache_dir))
    try:
        driver._noted(labeler, json.loads(out["note"][0]))
        assert type(labeler.fatal) is LocalError
        assert str(labeler.fatal) == "llama-server exited: install llama-cpp-python"
    finally:
        labeler.cache.close()
        actor.labeler.cache.close()
