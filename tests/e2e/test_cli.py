"""End-to-end: the `llmlabel` command against an in-test OpenAI-compatible server on 127.0.0.1."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import label_main, read_jsonl, run_cli, write_config, write_corpus


@pytest.mark.slow
def test_label_then_rerun_is_free(tmp_path, fake):
    rows = write_corpus(tmp_path / "in.csv", 60)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    out = tmp_path / "out.jsonl"
    r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out))
    assert r.returncode == 0, r.stderr
    got = read_jsonl(out)
    assert [g["id"] for g in got] == [x["id"] for x in rows]  # input order kept
    for g, x in zip(got, rows):
        assert g["text"] == x["text"] and g["label"] in ("positive", "negative") and g["error"] is None
        assert g["judges"]["a"]["label"] == g["label"] and g["confidence"] == 1.0
        assert set(g) >= {"id", "label", "confidence", "probs", "candidates", "judges", "error"}
    assert fake.requests == 60
    ledger = json.loads((tmp_path / "out.jsonl.ledger.json").read_text())
    run = ledger["runs"][-1]
    assert run["judges"]["a"]["input_tokens"] == fake.prompt_tokens
    assert run["cost"] == pytest.approx((fake.prompt_tokens * 1.0 + fake.completion_tokens * 2.0) / 1e6, abs=1e-6)
    assert "total" in r.stderr and "wrote 60 rows" in r.stderr
    # An identical rerun makes no request and writes the same rows.
    r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert fake.requests == 60
    assert read_jsonl(out) == got
    assert not (tmp_path / "out.jsonl.part").exists()


@pytest.mark.slow
def test_plan_and_prompt_make_no_request(tmp_path, fake):
    write_corpus(tmp_path / "in.csv", 30)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    r = run_cli("plan", str(tmp_path / "in.csv"), "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "30 requests" in r.stdout and "input tokens" in r.stdout and "$" in r.stdout
    r = run_cli("prompt", str(tmp_path / "in.csv"), "-c", str(cfg), "--row", "2")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert "review number 2:" in shown["messages"][-1]["content"]
    assert shown["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == ["positive", "negative"]
    assert fake.requests == 0


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
@pytest.mark.slow
def test_output_formats(tmp_path, fake, ext):
    write_corpus(tmp_path / "in.jsonl", 12, fmt="jsonl")
    cfg = write_config(tmp_path / "c.yaml", fake.base_url, mode="candidates")
    out = tmp_path / f"out{ext}"
    r = run_cli("label", str(tmp_path / "in.jsonl"), "-c", str(cfg), "-o", str(out), "--limit", "10")
    assert r.returncode == 0, r.stderr
    if ext == ".parquet":
        t = pq.read_table(out).to_pylist()
        assert len(t) == 10 and all(set(x["candidates"]) <= {"positive", "negative"} for x in t)
    else:
        import csv

        t = list(csv.DictReader(open(out)))
        assert len(t) == 10 and json.loads(t[0]["candidates"])
        assert json.loads(t[0]["judges"])["a"]["candidates"]


@pytest.mark.slow
def test_max_requests_stops_cleanly_and_rerun_continues(tmp_path, fake):
    write_corpus(tmp_path / "in.csv", 40)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    out = tmp_path / "out.jsonl"
    r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out), "--max-requests", "15")
    assert r.returncode == 3
    assert "--max-requests 15 reached" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and fake.requests == 15
    assert len(read_jsonl(tmp_path / "out.jsonl.part")) == 15
    r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert fake.requests == 40 and len(read_jsonl(out)) == 40


@pytest.mark.slow
def test_max_cost(tmp_path, fake):
    write_corpus(tmp_path / "in.csv", 40)
    judges = [
        {
            "name": "a",
            "model": "m",
            "base_url": fake.base_url,
            "concurrency": 1,
            "price_per_million": {"input": 10000.0, "output": 0},  # one request fits (worst case reserved)
        }
    ]
    cfg = write_config(tmp_path / "c.yaml", fake.base_url, judges=judges)
    r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"), "--max-cost", "10")
    assert r.returncode == 3 and "--max-cost $10 reached" in r.stderr
    assert 0 < fake.requests < 40


@pytest.mark.slow
def test_two_judges_majority_and_weights(tmp_path, fake):
    write_corpus(tmp_path / "in.csv", 10)
    judges = [
        {"name": "a", "model": "m1", "base_url": fake.base_url},
        {"name": "b", "model": "m2", "base_url": fake.base_url, "temperature": 0.5},
    ]
    cfg = write_config(tmp_path / "c.yaml", fake.base_url, judges=judges, aggregate="weighted")
    r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    assert r.returncode == 0, r.stderr
    got = read_jsonl(tmp_path / "o.jsonl")
    assert all(set(g["judges"]) == {"a", "b"} for g in got) and fake.requests == 20
    ledger = json.loads((tmp_path / "o.jsonl.ledger.json").read_text())
    assert set(ledger["runs"][-1]["quality"]["judges"]) == {"a", "b"}


@pytest.mark.slow
def test_partly_cached_rerun_asks_only_what_is_missing(tmp_path, fake):
    """Cached rows are answered by the bulk cache pass, the rest by judge calls: a new output from a cache
    that holds some rows for both judges and others for one equals a cold run's, paying only the misses."""
    write_corpus(tmp_path / "in.csv", 300)
    judges = [
        {"name": "a", "model": "m1", "base_url": fake.base_url},
        {"name": "b", "model": "m2", "base_url": fake.base_url},
    ]
    (tmp_path / "cold").mkdir()
    cold = write_config(tmp_path / "cold" / "c.yaml", fake.base_url, judges=judges)
    assert (
        run_cli("label", str(tmp_path / "in.csv"), "-c", str(cold), "-o", str(tmp_path / "cold.jsonl")).returncode == 0
    )
    assert fake.requests == 600
    (tmp_path / "warm").mkdir()
    warm = write_config(tmp_path / "warm" / "c.yaml", fake.base_url, judges=judges)
    only_a = write_config(tmp_path / "warm" / "a.yaml", fake.base_url, judges=judges[:1])
    # Rows 0-199 cached for both judges, rows 200-249 for judge a only, rows 250-299 not at all.
    assert (
        run_cli(
            "label", str(tmp_path / "in.csv"), "-c", str(warm), "-o", str(tmp_path / "w1.jsonl"), "--limit", "200"
        ).returncode
        == 0
    )
    assert (
        run_cli(
            "label", str(tmp_path / "in.csv"), "-c", str(only_a), "-o", str(tmp_path / "w2.jsonl"), "--limit", "250"
        ).returncode
        == 0
    )
    before = fake.requests
    assert before == 600 + 400 + 50
    r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(warm), "-o", str(tmp_path / "w3.jsonl"))
    assert r.returncode == 0, r.stderr
    assert fake.requests - before == 50 + 2 * 50
    assert read_jsonl(tmp_path / "w3.jsonl") == read_jsonl(tmp_path / "cold.jsonl")
    ledger = json.loads((tmp_path / "w3.jsonl.ledger.json").read_text())["runs"][-1]["judges"]
    assert ledger["a"]["cache_hits"] == 250 and ledger["b"]["cache_hits"] == 200


@pytest.mark.slow
def test_warm_rerun_is_answered_by_the_bulk_cache_pass(tmp_path, fake, monkeypatch):
    from llmlabel.config import load_config
    from llmlabel.llm.judge import JudgeClient
    from llmlabel.pipeline.options import RunOptions
    from llmlabel.pipeline.run import run_job

    write_corpus(tmp_path / "in.csv", 200)
    judges = [
        {"name": "a", "model": "m1", "base_url": fake.base_url},
        {"name": "b", "model": "m2", "base_url": fake.base_url},
    ]
    cfg = load_config(write_config(tmp_path / "c.yaml", fake.base_url, judges=judges))
    run_job(cfg, tmp_path / "in.csv", tmp_path / "cold.jsonl", RunOptions(progress=False))

    async def no_call(*a, **k):
        raise AssertionError("a cached row went through the per-row path")

    monkeypatch.setattr(JudgeClient, "ask", no_call)
    res = run_job(cfg, tmp_path / "in.csv", tmp_path / "warm.jsonl", RunOptions(progress=False))
    assert res.complete and res.ledger.judges["a"].cache_hits == 200 and res.ledger.judges["b"].cache_hits == 200
    # Byte for byte: rows with the same answers share one serialised ending (line_with), cold rows do not.
    assert (tmp_path / "warm.jsonl").read_bytes() == (tmp_path / "cold.jsonl").read_bytes()
    assert len({json.dumps(r["judges"]) for r in read_jsonl(tmp_path / "warm.jsonl")}) > 1


@pytest.mark.slow
def test_a_row_with_one_unusable_cached_answer_is_asked_and_counted_once(tmp_path, fake):
    """The bulk pass hands a row to the per-row path when any of its cached answers cannot be used; the
    other judges' hits on that row are then counted once, by that path."""
    from llmlabel.config import load_config
    from llmlabel.llm.cache import ResponseCache, open_cache
    from llmlabel.pipeline.options import RunOptions
    from llmlabel.pipeline.row_labeler import RowLabeler
    from llmlabel.pipeline.run import run_job

    write_corpus(tmp_path / "in.csv", 20)
    judges = [
        {"name": "a", "model": "m1", "base_url": fake.base_url},
        {"name": "b", "model": "m2", "base_url": fake.base_url},
    ]
    cfg = load_config(write_config(tmp_path / "c.yaml", fake.base_url, judges=judges))
    run_job(cfg, tmp_path / "in.csv", tmp_path / "cold.jsonl", RunOptions(progress=False))
    labeler = RowLabeler(cfg, cfg.judges, RunOptions(progress=False), open_cache(cfg.cache_dir))
    rec, text, given = labeler.start(3, {"id": "r3", "text": read_jsonl(tmp_path / "cold.jsonl")[3]["text"]})
    key = labeler.plan.encode(labeler.plan.request(cfg.judges[1], text, given)).key
    labeler.cache.close()
    cache = ResponseCache(cfg.cache_dir)
    assert cache.get(key) is not None
    cache.set(key, {"content": "not an answer", "finish_reason": "stop", "usage": {}, "top_logprobs": None})
    cache.close()
    before = fake.requests
    res = run_job(cfg, tmp_path / "in.csv", tmp_path / "warm.jsonl", RunOptions(progress=False))
    assert fake.requests == before + 1  # judge b is asked again for that row (the re-ask), nothing else
    assert res.ledger.judges["a"].cache_hits == 20 and res.ledger.judges["b"].cache_hits == 20
    assert read_jsonl(tmp_path / "warm.jsonl") == read_jsonl(tmp_path / "cold.jsonl")


@pytest.mark.slow
def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, fake):
    """A log file gets a progress line every few seconds (here LLMLABEL_PROGRESS_EVERY=0.05), not a bar."""
    write_corpus(tmp_path / "in.csv", 40)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    held = fake.hold(21)  # half the rows wait until three progress lines were written
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["LLMLABEL_PROGRESS_EVERY"] = "0.05"
    args = ["label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl")]
    p = subprocess.Popen([sys.executable, "-m", "llmlabel", *args], stderr=subprocess.PIPE, text=True, env=env)
    assert p.stderr is not None
    said: list[str] = []  # progress lines written while the run waits for its answers: three, one with an ETA
    try:
        while len(said) < 3 or not any("ETA" in ln for ln in said):
            line = p.stderr.readline()
            if not line:
                break
            said += [line] if " rows/s" in line else []
    finally:
        held.release()
    _, rest = p.communicate(timeout=120)
    err = "".join(said) + rest
    assert p.returncode == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("llmlabel: ") and " rows/s" in ln]
    assert len(said) >= 3 and len(lines) > len(said), err
    assert "\r" not in err and "it/s" not in err  # no tqdm bar in a log
    assert lines[-1].startswith("llmlabel: 40/40 rows (100%)") and "$0.00" in lines[-1]
    assert any("ETA" in ln for ln in lines[:-1])
    env = {"LLMLABEL_PROGRESS_EVERY": "0.05"}
    r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "q.jsonl"), "-q", env=env)
    assert r.returncode == 0 and " rows/s" not in r.stderr


def test_examples_file_sends_each_row_its_nearest_demonstrations(tmp_path, fake, capsys, quiet_fake_server):
    rows = write_corpus(tmp_path / "in.csv", 6)
    pool = tmp_path / "pool.csv"
    pool.write_text(
        "text,label\nreview number 3: the product is awful,negative\nthe weather is nice today,positive\n"
        "review of a film: great,positive\n"
    )
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    data = cfg.read_text().replace("task:\n", "task:\n  examples_file: pool.csv\n  examples_k: 2\n")
    cfg.write_text(data)
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    assert rc == 0, err
    by_text = {b["messages"][-1]["content"]: b["messages"] for b in fake.bodies}
    msgs = by_text[f"<text>\n{rows[0]['text']}\n</text>"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "review number 3" in msgs[3]["content"]  # the nearest pool row, right before the text
    # Row 3's own text is in the pool: it is never shown its own answer.
    assert all(rows[3]["text"] not in m["content"] for m in by_text[f"<text>\n{rows[3]['text']}\n</text>"][:-1])
