"""`llmlabel label --batch` against an in-test fake of the Files and Batches endpoints (tests/fakebatch.py)."""

import json

import pytest
from conftest import read_jsonl, run_cli, write_config, write_corpus
from fakebatch import FakeBatch

from llmlabel.config import load_config
from llmlabel.pipeline.batch import BatchOptions, run_batch
from llmlabel.pipeline.batch_journal import journal_path, load_journal
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.run import run_job


@pytest.fixture
def fb():
    server = FakeBatch().start()
    yield server
    server.stop()


def _setup(tmp_path, fb, n=40, **cfg):
    rows = write_corpus(tmp_path / "in.csv", n)
    # duplicate texts: answered once in batch lines
    rows += [dict(r, id=f"dup{i}") for i, r in enumerate(rows[:5])]
    import csv

    with open(tmp_path / "in.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text"])
        w.writeheader()
        w.writerows(rows)
    return rows, load_config(write_config(tmp_path / "c.yaml", fb.base_url, **cfg))


def _batch(cfg, tmp_path, out, **kw):
    opts = RunOptions(progress=False)
    return run_batch(cfg, tmp_path / "in.csv", out, opts, BatchOptions(poll=0.01, **kw))


@pytest.mark.slow
def test_batch_run_makes_no_online_request_and_matches_online(tmp_path, fb):
    rows, cfg = _setup(tmp_path, fb)
    out = tmp_path / "out.jsonl"
    res = _batch(cfg, tmp_path, out)
    assert res.submitted == 1 and res.collected == 40 and res.run is not None and res.run.complete
    assert fb.online == 0
    assert len(fb.line_keys) == len(set(fb.line_keys)) == 40  # each unique text once
    got = read_jsonl(out)
    assert len(got) == 45 and all(g["error"] is None for g in got)
    # the same labels as an online run (fresh cache)
    cfg2 = cfg.model_copy(update={"cache_dir": str(tmp_path / "cache2")})
    run_job(cfg2, tmp_path / "in.csv", tmp_path / "online.jsonl", RunOptions(progress=False))
    assert fb.online >= 40  # (online, concurrent duplicates may each be asked)
    assert [g["label"] for g in read_jsonl(tmp_path / "online.jsonl")] == [g["label"] for g in got]
    # an online rerun after the batch run makes no request
    before = fb.online
    run_job(cfg, tmp_path / "in.csv", tmp_path / "again.jsonl", RunOptions(progress=False))
    assert fb.online == before
    ledger = json.loads((tmp_path / "out.jsonl.ledger.json").read_text())
    bought, online = ledger["runs"]  # the batch run's purchase, then the run that wrote the output from the cache
    tier = bought["batch"]
    assert bought["kind"] == "batch" and bought["state"] == "finished" and bought["requests"] == 0
    assert tier["judges"]["a"]["lines"] == 40 and tier["judges"]["a"]["price_batch_input"] == pytest.approx(0.5)
    assert tier["cost"] > 0 and bought["cost"] == tier["cost"] and online["cost"] == 0
    # the total counts the batch cost (issue 25, item 14) and the lines bought
    assert ledger["total"]["cost"] == pytest.approx(tier["cost"]) and ledger["total"]["batch_lines"] == 40
    assert not (tmp_path / "out.jsonl.ledger.jsonl").exists()  # folded into the ledger once the run ended


def test_no_wait_then_rerun_collects_without_resubmitting(tmp_path, fb):
    _, cfg = _setup(tmp_path, fb)
    out = tmp_path / "out.jsonl"
    res = _batch(cfg, tmp_path, out, wait=False)
    assert res.submitted == 1 and res.pending == 1 and res.run is None and not out.exists()
    assert load_journal(out)["batches"][0]["batch_id"] == "batch_0"
    res = _batch(cfg, tmp_path, out)
    assert res.submitted == 0 and res.collected == 40 and len(fb.batches) == 1
    assert fb.online == 0 and len(read_jsonl(out)) == 45


@pytest.mark.slow
def test_lost_journal_entry_is_found_through_the_batch_list(tmp_path, fb):
    _, cfg = _setup(tmp_path, fb)
    out = tmp_path / "out.jsonl"
    _batch(cfg, tmp_path, out, wait=False)
    # a kill right after the batch was created: the journal says "creating", with no batch id
    j = load_journal(out)
    j["batches"][0].update(batch_id=None, status="creating")
    journal_path(out).write_text(json.dumps(j))
    res = _batch(cfg, tmp_path, out)
    assert res.attached == 1 and res.submitted == 0 and len(fb.batches) == 1
    assert fb.online == 0 and len(read_jsonl(out)) == 45


@pytest.mark.parametrize("fallback", ["batch", "online"])
@pytest.mark.slow
def test_expired_batch_keeps_finished_lines_and_retries_the_rest(tmp_path, fb, fallback):
    _, cfg = _setup(tmp_path, fb)
    fb.expire_fraction = 0.3
    out = tmp_path / "out.jsonl"
    if fallback == "batch":
        res = _batch(cfg, tmp_path, out, fallback="batch")
        # 28 kept from the first batch, then each retry batch expires 30% again (3 rounds), the rest online
        assert res.submitted == 3 and res.collected == 28 + 8 + 2
        assert fb.online == 2
    else:
        res = _batch(cfg, tmp_path, out, fallback="online")
        assert res.submitted == 1 and res.collected == 28 and fb.online == 12
    got = read_jsonl(out)
    assert len(got) == 45 and all(g["error"] is None for g in got)
    assert len(fb.answered) == len(set(fb.answered))  # no line was paid for twice


@pytest.mark.slow
def test_failed_lines_go_into_a_smaller_batch(tmp_path, fb):
    _, cfg = _setup(tmp_path, fb)
    fb.fail_every = 4
    out = tmp_path / "out.jsonl"
    res = _batch(cfg, tmp_path, out)
    assert res.failed >= 10 and res.submitted >= 2 and fb.online == 0
    assert len(read_jsonl(out)) == 45


@pytest.mark.slow
def test_split_at_max_lines(tmp_path, fb):
    _, cfg = _setup(tmp_path, fb)
    res = _batch(cfg, tmp_path, tmp_path / "out.jsonl", max_lines=15)
    assert res.submitted == 3 and res.collected == 40 and fb.online == 0


@pytest.mark.slow
def test_invalid_answers_get_the_online_reask(tmp_path, fb):
    _, cfg = _setup(tmp_path, fb)
    real = fb.llm.handle

    def bad(req, headers):  # batch lines answer with a label that is not one
        status, payload, h = real(req, headers)
        if not headers and payload:
            payload["choices"][0]["message"]["content"] = '{"label": "maybe"}'
        return status, payload, h

    fb.llm.handle = bad
    res = _batch(cfg, tmp_path, tmp_path / "out.jsonl", fallback="online")
    assert res.invalid == 40 and res.collected == 0 and fb.online >= 40
    assert all(g["label"] in ("positive", "negative") for g in read_jsonl(tmp_path / "out.jsonl"))


@pytest.mark.slow
def test_cli_no_wait_status_cancel_and_rerun(tmp_path, fb):
    write_corpus(tmp_path / "in.csv", 20)
    cfg = write_config(tmp_path / "c.yaml", fb.base_url)
    out = tmp_path / "out.jsonl"
    env = {"LLMLABEL_BATCH_POLL": "0.01"}
    args = ("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out), "--batch")
    r = run_cli(*args, "--no-wait", env=env)
    assert r.returncode == 0, r.stderr
    assert "1 submitted" in r.stderr and not out.exists()
    r = run_cli("batch", "status", str(out), env=env)
    assert r.returncode == 0 and "batch_0" in r.stdout and "not collected" in r.stdout, r.stderr
    r = run_cli(*args, env=env)
    assert r.returncode == 0, r.stderr
    assert "0 submitted" in r.stderr and "20 answers collected" in r.stderr and len(read_jsonl(out)) == 20
    assert fb.online == 0 and len(fb.batches) == 1


@pytest.mark.slow
def test_cancel_then_rerun_resubmits_the_cancelled_lines(tmp_path, fb, capsys):
    from conftest import run_main

    _, cfg = _setup(tmp_path, fb)
    out = tmp_path / "out.jsonl"
    _batch(cfg, tmp_path, out, wait=False)
    rc, stdout, _ = run_main(capsys, "batch", "cancel", str(out))
    assert rc == 0 and "batch_0 cancelling" in stdout
    rc, stdout, _ = run_main(capsys, "batch", "status", str(out))
    assert "batch_0 cancelled" in stdout
    res = _batch(cfg, tmp_path, out)
    assert res.submitted == 1 and res.collected == 40 and fb.online == 0 and len(fb.batches) == 2
    assert len(read_jsonl(out)) == 45


@pytest.mark.slow
def test_batch_failed_as_a_whole_is_split_and_resubmitted(tmp_path, fb):
    _, cfg = _setup(tmp_path, fb)
    fb.max_requests = 12
    lines = []
    opts = RunOptions(progress=True, echo=lines.append)
    res = run_batch(cfg, tmp_path / "in.csv", tmp_path / "out.jsonl", opts, BatchOptions(poll=0.01))
    # 40 fail as one batch, then 2 x 20 fail, then 4 x 10 succeed
    assert res.submitted == 1 + 2 + 4 and res.collected == 40 and fb.online == 0
    assert sum("failed (Enqueued token limit reached): resubmitting" in x for x in lines) == 3
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 45


@pytest.mark.slow
def test_judge_batch_limits_and_batch_price_from_config(tmp_path, fb):
    judges = [
        {
            "name": "a",
            "model": "fake-a",
            "base_url": fb.base_url,
            "batch_max_requests": 10,
            "price_per_million": {"input": 1.0, "output": 2.0, "batch_input": 0.2, "batch_output": 0.4},
        }
    ]
    _, cfg = _setup(tmp_path, fb, judges=judges)
    res = _batch(cfg, tmp_path, tmp_path / "out.jsonl")
    assert res.submitted == 4 and fb.online == 0
    tier = json.loads((tmp_path / "out.jsonl.ledger.json").read_text())["runs"][0]["batch"]["judges"]["a"]
    assert tier["price_batch_input"] == 0.2 and tier["price_batch_output"] == 0.4
    assert tier["cost"] == pytest.approx((tier["input_tokens"] * 0.2 + tier["output_tokens"] * 0.4) / 1e6)


@pytest.mark.slow
def test_plan_batch_estimates_at_half_price(tmp_path, fb, capsys):
    from conftest import run_main

    _, cfg = _setup(tmp_path, fb)
    rc, online, _ = run_main(capsys, "plan", str(tmp_path / "in.csv"), "-c", str(tmp_path / "c.yaml"))
    rc2, batch, _ = run_main(capsys, "plan", str(tmp_path / "in.csv"), "-c", str(tmp_path / "c.yaml"), "--batch")
    assert rc == rc2 == 0 and "at batch prices" in batch

    def total(text):
        return float(text.split("total:")[1].split("$")[1].split()[0].rstrip(";"))

    assert total(batch) == pytest.approx(total(online) / 2, rel=0.01) and total(online) > 0
    assert fb.online == 0 and not fb.batches


@pytest.mark.slow
def test_kill_9_right_after_the_batch_is_created_pays_nothing_twice(tmp_path, fb):
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    write_corpus(tmp_path / "in.csv", 30)
    cfg = write_config(tmp_path / "c.yaml", fb.base_url)
    out = tmp_path / "out.jsonl"
    args = ("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out), "--batch")
    fb.hold_create = threading.Event()
    env = {**os.environ, "LLMLABEL_BATCH_POLL": "0.01"}
    proc = subprocess.Popen([sys.executable, "-m", "llmlabel", *args], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not fb.batches and time.time() < deadline:
        time.sleep(0.05)
    assert fb.batches, "no batch was created"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fb.hold_create.set()
    assert load_journal(out)["batches"][0]["batch_id"] is None  # the kill came before the journal heard
    r = run_cli(*args, env={"LLMLABEL_BATCH_POLL": "0.01"})
    assert r.returncode == 0, r.stderr
    assert "0 submitted, 1 re-attached, 30 answers collected" in r.stderr
    assert len(fb.batches) == 1 and fb.online == 0 and len(fb.answered) == 30
    assert len(read_jsonl(out)) == 30


@pytest.mark.slow
def test_status_after_completion_does_not_make_the_rerun_buy_again(tmp_path, fb, capsys):
    """`batch status` of a finished batch, then the rerun: the batch's answers are collected, nothing is bought
    again (the fake's own counts: one batch, each distinct text answered once)."""
    from conftest import run_main

    _, cfg = _setup(tmp_path, fb)
    out = tmp_path / "out.jsonl"
    _batch(cfg, tmp_path, out, wait=False)
    for _ in range(3):  # each GET moves the fake batch on: it is completed by the last status
        rc, stdout, _ = run_main(capsys, "batch", "status", str(out))
        assert rc == 0
    assert "batch_0 completed" in stdout
    res = _batch(cfg, tmp_path, out)
    assert res.submitted == 0 and res.collected == 40
    assert len(fb.batches) == 1 and fb.lines == 40 and fb.online == 0
    assert len(read_jsonl(out)) == 45


@pytest.mark.slow
def test_cancel_then_status_then_rerun_buys_only_the_cancelled_lines(tmp_path, fb, capsys):
    from conftest import run_main

    _, cfg = _setup(tmp_path, fb)
    fb.cancel_fraction = 0.25  # 10 of the 40 lines were answered (and paid) before the cancel
    out = tmp_path / "out.jsonl"
    _batch(cfg, tmp_path, out, wait=False)
    run_main(capsys, "batch", "cancel", str(out))
    rc, stdout, _ = run_main(capsys, "batch", "status", str(out))
    assert "batch_0 cancelled" in stdout
    res = _batch(cfg, tmp_path, out)
    assert res.submitted == 1 and res.collected == 40 and len(fb.batches) == 2 and fb.online == 0
    assert fb.lines == 40 and len(fb.answered) == len(set(fb.answered))  # the 10 answered ones not bought again


def test_a_terminal_status_without_its_files_is_asked_again(tmp_path, fb):
    """A journal that says "completed" but names no output file (written by an older `batch status`): the
    batch is read again before it counts as collected, so its answers are not bought twice."""
    _, cfg = _setup(tmp_path, fb)
    out = tmp_path / "out.jsonl"
    _batch(cfg, tmp_path, out, wait=False)
    for _ in range(3):
        fb._advance("batch_0")
    j = load_journal(out)
    j["batches"][0]["status"] = "completed"
    journal_path(out).write_text(json.dumps(j))
    res = _batch(cfg, tmp_path, out)
    assert res.submitted == 0 and res.collected == 40 and len(fb.batches) == 1 and fb.lines == 40


def test_status_leaves_the_journal_to_the_label_run(tmp_path, fb, capsys):
    """`batch status` and `batch cancel` read the journal and never write it: the `label --batch` run owns it
    (a copy saved by status dropped what the run had recorded since, or a status without its files)."""
    from conftest import run_main

    _, cfg = _setup(tmp_path, fb)
    out = tmp_path / "out.jsonl"
    _batch(cfg, tmp_path, out, wait=False)
    before = journal_path(out).read_bytes()
    for action in ("status", "status", "status", "cancel"):
        rc, _, _ = run_main(capsys, "batch", action, str(out))
        assert rc == 0
    assert journal_path(out).read_bytes() == before


def test_online_run_of_the_same_output_leaves_the_rows_to_the_batch(tmp_path, fb, capsys):
    """An online run while the output's batch is in flight pays for none of its rows: it says so, ends
    unfinished, and the batch rerun collects them (issue 25, item 2). Paid once, by the fake's counts."""
    _, cfg = _setup(tmp_path, fb)
    out = tmp_path / "out.jsonl"
    _batch(cfg, tmp_path, out, wait=False)
    said = []
    res = run_job(cfg, tmp_path / "in.csv", out, RunOptions(progress=False, echo=said.append))
    assert fb.online == 0 and not res.complete and not out.exists()
    assert (
        "45 rows were left to Batch API batches in flight" in res.stopped_by
        and "this output's batch batch_0" in res.stopped_by
    )
    assert any("in flight" in s and "not paid twice" in s for s in said)
    res = _batch(cfg, tmp_path, out)
    assert res.submitted == 0 and res.collected == 40 and res.run is not None and res.run.complete
    assert fb.online == 0 and fb.lines == 40 and len(read_jsonl(out)) == 45


def test_another_output_with_the_same_requests_waits_for_the_batch(tmp_path, fb, capsys):
    """Another output of the same requests, online or in batch, while a batch holds them: nothing is bought
    twice; the run names the batch and the output it belongs to, and after the collection gets them free."""
    _, cfg = _setup(tmp_path, fb)
    out, other = tmp_path / "out.jsonl", tmp_path / "other.jsonl"
    _batch(cfg, tmp_path, out, wait=False)
    res = run_job(cfg, tmp_path / "in.csv", other, RunOptions(progress=False))
    assert fb.online == 0 and not res.complete
    assert f"{out}'s batch batch_0" in res.stopped_by
    said = []
    opts = RunOptions(progress=True, echo=said.append)
    res = run_batch(cfg, tmp_path / "in.csv", tmp_path / "third.jsonl", opts, BatchOptions(poll=0.01, wait=False))
    assert res.submitted == 0 and len(fb.batches) == 1 and any("already in a Batch API batch" in s for s in said)
    _batch(cfg, tmp_path, out)  # collects: the requests are in the cache
    res = run_job(cfg, tmp_path / "in.csv", other, RunOptions(progress=False))
    assert res.complete and len(read_jsonl(other)) == 45
    assert fb.online == 0 and fb.lines == 40 and len(fb.batches) == 1
    assert not list((tmp_path / "cache" / "inflight").glob("*.json"))


@pytest.mark.slow
def test_rows_a_batch_holds_but_the_cache_has_are_not_left_out(tmp_path, fb):
    """A batch in flight whose requests another run has answered since (in the shared cache): its rows are free
    and the online run writes them, asking nothing."""
    _, cfg = _setup(tmp_path, fb)
    out = tmp_path / "out.jsonl"
    _batch(cfg, tmp_path, out, wait=False)
    inflight = list((tmp_path / "cache" / "inflight").glob("*.json"))
    saved = {p: p.read_bytes() for p in inflight}
    _batch(cfg, tmp_path, out)  # collected: in the cache
    for p, data in saved.items():  # a record left behind (a kill before it was removed)
        p.write_bytes(data)
    res = run_job(cfg, tmp_path / "in.csv", tmp_path / "other.jsonl", RunOptions(progress=False))
    assert res.complete and fb.online == 0 and len(read_jsonl(tmp_path / "other.jsonl")) == 45


def test_cancel_reads_the_live_status_first(tmp_path, fb, capsys):
    """The journal's status may be older than the batch's (`batch status` does not write it): cancelling a batch
    that has completed since is no error, and leaves it to be collected."""
    from conftest import run_main

    _, cfg = _setup(tmp_path, fb)
    out = tmp_path / "out.jsonl"
    _batch(cfg, tmp_path, out, wait=False)
    for _ in range(3):
        fb._advance("batch_0")
    rc, stdout, err = run_main(capsys, "batch", "cancel", str(out))
    assert rc == 0 and "batch_0 completed" in stdout, err
    res = _batch(cfg, tmp_path, out)
    assert res.collected == 40 and fb.lines == 40 and len(fb.batches) == 1


@pytest.mark.slow
def test_two_outputs_submitting_the_same_requests_at_once_buy_them_once(tmp_path, fb, monkeypatch):
    """Two batch runs of different outputs with the same requests, the second starting while the first reads
    its input: the second waits until the first has recorded its batch, then leaves the requests to it."""
    import threading

    from llmlabel.pipeline import batch

    _, cfg = _setup(tmp_path, fb)
    real = batch.missing_requests
    first_reading, second_reading = threading.Event(), threading.Event()

    def reading(labeler, input_path):
        if not first_reading.is_set():
            first_reading.set()
            second_reading.wait(2)  # the second run reaches this only once the first has recorded (with the lock)
        else:
            second_reading.set()
        return real(labeler, input_path)

    monkeypatch.setattr(batch, "missing_requests", reading)
    results = {}

    def go(name):
        results[name] = _batch(cfg, tmp_path, tmp_path / f"{name}.jsonl", wait=False)

    first = threading.Thread(target=go, args=("one",))
    first.start()
    assert first_reading.wait(30)
    second = threading.Thread(target=go, args=("two",))
    second.start()
    first.join(60)
    second.join(60)
    assert results["one"].submitted == 1 and results["two"].submitted == 0
    assert len(fb.batches) == 1


def test_odd_request_counts_from_the_server_do_not_break_a_paid_batch(tmp_path, fb):
    """request_counts and errors are the server's: null, words, negatives or a list are no traceback after the
    batch was bought, and its lines are bought once."""
    fb.odd_counts = {"total": None, "completed": "many", "failed": -3}
    _, cfg = _setup(tmp_path, fb)
    out = tmp_path / "out.jsonl"
    res = _batch(cfg, tmp_path, out)
    assert res.collected == 40 and res.run is not None and res.run.complete
    assert len(fb.line_keys) == 40 and fb.online == 0
    assert load_journal(out)["batches"][0]["counts"] == {"total": 0, "completed": 0, "failed": 0}
