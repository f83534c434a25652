"""Self-consistency (`samples:` on a judge): k requests a row, each cached under its own key (sample 0 under
the key a one-sample judge always had), the vote as the judge's answer, and every sample counted and paid."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import label_main, one_line_error, read_jsonl, run_main, write_config, write_corpus
from fakeserver import FakeLLM

from llmlabel.config import load_config, parse_config
from llmlabel.errors import ConfigError
from llmlabel.io.rows import iter_rows
from llmlabel.llm.cache import open_cache
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.row_labeler import RowLabeler


class SeededFake(FakeLLM):
    """Answers by the request's seed (`by_seed`; other seeds: the usual deterministic label), as a server
    that honours seeds would; an answer that is not a label makes that sample invalid."""

    def __init__(self, by_seed: dict[int, str]) -> None:
        super().__init__()
        self.by_seed = by_seed

    def handle(self, req: dict[str, Any], headers: dict[str, str]) -> tuple[int | None, Any, dict[str, str]]:
        status, payload, h = super().handle(req, headers)
        if status == 200 and req.get("seed") in self.by_seed:
            payload["choices"][0]["message"]["content"] = json.dumps({"label": self.by_seed[req["seed"]]})
        return status, payload, h


@pytest.fixture
def seeded(request):
    server = SeededFake(request.param).start()
    yield server
    server.stop()


def _judge(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "a", "model": "m", "base_url": url, "temperature": 0.7, "seed": 1, **extra}


@pytest.mark.slow
def test_k_requests_a_row_then_a_rerun_is_free(tmp_path, fake, capsys, quiet_fake_server):
    write_corpus(tmp_path / "in.csv", 10)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url, judges=[_judge(fake.base_url, samples=3)])
    out = tmp_path / "o.jsonl"
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    assert fake.requests == 30
    seeds = sorted(b["seed"] for b in fake.bodies)
    assert seeds == [1] * 10 + [2] * 10 + [3] * 10  # sample i asks with seed + i
    assert all(b["temperature"] == 0.7 for b in fake.bodies)
    run = json.loads((tmp_path / "o.jsonl.ledger.json").read_text())["runs"][-1]
    assert run["judges"]["a"]["requests"] == run["judges"]["a"]["responses"] == 30
    got = read_jsonl(out)
    # The fake answers one label per text whatever the seed: a unanimous vote, confidence 1.
    assert all(g["confidence"] == 1.0 and g["judges"]["a"]["probs"][g["label"]] == 1.0 for g in got)
    # A rerun: every sample of every row comes from the cache (the per-chunk fast path covers samples).
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    assert fake.requests == 30 and read_jsonl(out) == got
    run = json.loads((tmp_path / "o.jsonl.ledger.json").read_text())["runs"][-1]
    assert run["judges"]["a"]["requests"] == 0 and run["judges"]["a"]["cache_hits"] == 30
    # ... all of them in the synchronous bulk lookup: no row is handed on to be asked.
    cfg_ = load_config(cfg)
    labeler = RowLabeler(cfg_, cfg_.judges, RunOptions(progress=False), open_cache(cfg_.cache_dir))
    lines: list[bytes] = []
    sink = SimpleNamespace(append=lambda rec: lines.append(b""), append_lines=lines.extend)
    rest, found = labeler.from_cache(list(enumerate(iter_rows(tmp_path / "in.csv"))), sink)
    assert rest == [] and found == 30 and len(lines) == 10
    labeler.cache.close()


@pytest.mark.slow
def test_sample_0_is_served_by_a_one_sample_judges_cache(tmp_path, fake, capsys, quiet_fake_server):
    write_corpus(tmp_path / "in.csv", 8)
    one = write_config(tmp_path / "one.yaml", fake.base_url, judges=[_judge(fake.base_url)])
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(one), "-o", str(tmp_path / "one.jsonl"))
    assert rc == 0, err
    assert fake.requests == 8
    many = write_config(tmp_path / "many.yaml", fake.base_url, judges=[_judge(fake.base_url, samples=4)])
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(many), "-o", str(tmp_path / "many.jsonl"))
    assert rc == 0, err
    assert fake.requests == 8 + 8 * 3  # samples 1..3 only: sample 0 was cached by the one-sample run
    assert sorted(b["seed"] for b in fake.bodies[8:]) == [2] * 8 + [3] * 8 + [4] * 8


@pytest.mark.parametrize("seeded", [{1: "negative", 2: "positive", 3: "negative", 4: "maybe"}], indirect=True)
@pytest.mark.slow
def test_the_vote_is_the_judges_answer_and_a_failed_sample_is_left_out(tmp_path, seeded, capsys, quiet_fake_server):
    write_corpus(tmp_path / "in.csv", 3)
    cfg = write_config(tmp_path / "c.yaml", seeded.base_url, judges=[_judge(seeded.base_url, samples=4)])
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    assert rc == 0, err
    for g in read_jsonl(tmp_path / "o.jsonl"):
        # seeds 1, 3: negative; 2: positive; 4: "maybe" (invalid, re-asked once, then left out of the vote)
        assert g["label"] == "negative" and g["error"] is None
        assert g["judges"]["a"] == {"label": "negative", "probs": {"positive": 0.3333, "negative": 0.6667}}
        assert g["confidence"] == 0.6667
    assert seeded.requests == 3 * (3 + 2)


@pytest.mark.parametrize("seeded", [{1: "maybe", 2: "perhaps"}], indirect=True)
def test_a_row_fails_only_when_every_sample_failed(tmp_path, seeded, capsys, quiet_fake_server):
    write_corpus(tmp_path / "in.csv", 2)
    cfg = write_config(tmp_path / "c.yaml", seeded.base_url, judges=[_judge(seeded.base_url, samples=2)])
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    assert rc == 0, err  # a row error, not the run's
    got = read_jsonl(tmp_path / "o.jsonl")
    assert len(got) == 2 and all(g["label"] is None and g["error"] for g in got)
    assert all("all 2 samples failed (invalid answer: label 'maybe'" in g["judges"]["a"]["error"] for g in got)


def test_max_requests_counts_every_sample(tmp_path, fake, capsys, quiet_fake_server):
    write_corpus(tmp_path / "in.csv", 20)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url, judges=[_judge(fake.base_url, samples=3)])
    rc, err = label_main(
        capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"), "--max-requests", "9"
    )
    assert rc == 3 and "--max-requests 9 reached" in err
    assert fake.requests == 9


def test_plan_multiplies_by_samples(tmp_path, fake, capsys):
    write_corpus(tmp_path / "in.csv", 30)
    judges = [
        _judge(fake.base_url, samples=3, price_per_million={"input": 1.0}),
        {**_judge(fake.base_url), "name": "b"},
    ]
    rc, out, err = run_main(
        capsys, "plan", str(tmp_path / "in.csv"), "-c", str(write_config(tmp_path / "c.yaml", None, judges=judges))
    )
    assert rc == 0, err
    assert "a (m): 90 requests (3 samples a row)" in out and "b (m): 30 requests," in out
    assert "total: 120 requests" in out and fake.requests == 0


def test_samples_at_temperature_0_is_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"temperature > 0 \(e\.g\. 0\.7\)"):
        parse_config({"task": {"labels": ["a", "b"]}, "judges": [{"name": "j", "model": "m", "samples": 3}]})
    write_corpus(tmp_path / "in.csv", 2)
    cfg = write_config(tmp_path / "c.yaml", None, judges=[{"name": "j", "model": "m", "samples": 3}])
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    one_line_error(rc, err, "samples: 3 with temperature 0", "set a temperature > 0")


def test_samples_outside_label_mode_is_refused(tmp_path, fake, capsys):
    judge = _judge("http://x.test/v1", samples=3)
    with pytest.raises(ConfigError, match="label mode only, not candidates"):
        parse_config({"task": {"labels": ["a", "b"]}, "judges": [judge], "mode": "candidates"})
    (tmp_path / "in.csv").write_text("id,text,label\n1,great,positive\n2,awful,negative\n")
    cfg = write_config(tmp_path / "c.yaml", None, judges=[_judge(fake.base_url, samples=3)])
    rc, _, err = run_main(
        capsys, "audit", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "a.jsonl"), "--verify"
    )
    one_line_error(rc, err, "label mode only, not verify")
    assert fake.requests == 0


def test_batch_submits_every_sample_and_the_online_rerun_is_free(tmp_path):
    from fakebatch import FakeBatch

    from llmlabel.pipeline.batch import BatchOptions, run_batch
    from llmlabel.pipeline.run import run_job

    fb = FakeBatch().start()
    try:
        write_corpus(tmp_path / "in.csv", 6)
        cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=[_judge(fb.base_url, samples=3)]))
        res = run_batch(
            cfg, tmp_path / "in.csv", tmp_path / "b.jsonl", RunOptions(progress=False), BatchOptions(poll=0.01)
        )
        assert res.collected == 18 and len(set(fb.line_keys)) == 18 and fb.online == 0
        run_job(cfg, tmp_path / "in.csv", tmp_path / "o.jsonl", RunOptions(progress=False))
        assert fb.online == 0 and all(g["error"] is None for g in read_jsonl(tmp_path / "o.jsonl"))
    finally:
        fb.stop()


def test_unfinished_runs_resume_only_with_the_same_samples(tmp_path):
    from llmlabel.pipeline.fingerprint import _NOT_ANSWERS, _digest, answers_fingerprint

    write_corpus(tmp_path / "in.csv", 2)
    fps = []
    for k in (1, 3):
        cfg = load_config(write_config(tmp_path / "c.yaml", None, judges=[_judge("http://x.test/v1", samples=k)]))
        labeler = RowLabeler(cfg, cfg.judges, RunOptions(progress=False), open_cache(cfg.cache_dir))
        fps.append(answers_fingerprint(labeler)["judge 'a'"])
        if k == 1:  # samples: 1 (and per_label off) leave the fingerprint as it was before the fields existed
            assert fps[0] == _digest(cfg.judges[0].model_dump(exclude=_NOT_ANSWERS | {"samples", "per_label"}))
        labeler.cache.close()
    assert fps[0] != fps[1]
