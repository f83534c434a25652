"""The ledger shows every paid request, also of runs that never wrote their summary (issue 25, item 4): each run
appends its spend to OUTPUT.ledger.jsonl as it goes; `read_ledger` and the next run's summary count it, the
killed run as "interrupted". Checked against the fake server's own request count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import disk_full, label_main, read_jsonl, run_cli, write_config, write_corpus
from fakeserver import FakeLLM

from llmlabel.io.ledger_file import read_ledger
from llmlabel.io.paths import ledger_log_path, ledger_path

pytestmark = pytest.mark.usefixtures("quiet_fake_server")


@pytest.mark.slow
def test_a_failed_final_write_keeps_the_runs_spend(tmp_path, fake, capsys, monkeypatch):
    """A full disk at the final write: the run's summary is never written, its log says what it paid; the next
    run's ledger lists it as interrupted, and the total is what the server was paid."""
    from llmlabel.pipeline import lifecycle

    inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    write_corpus(inp, 30)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)

    monkeypatch.setattr(lifecycle, "write_jsonl_lines", disk_full)
    rc, _ = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc != 0 and fake.requests == 30
    seen = read_ledger(ledger_path(out))
    assert seen is not None and seen["total"]["requests"] == 30
    assert [r["state"] for r in seen["runs"]] == ["interrupted"] and seen["runs"][0]["judges"]["a"]["responses"] == 30
    monkeypatch.undo()
    rc, err = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    data = json.loads(ledger_path(out).read_text())
    assert [r["state"] for r in data["runs"]] == ["interrupted", "finished"]
    assert data["total"]["requests"] == fake.requests == 30 and data["total"]["cost"] > 0
    assert data["runs"][0]["cost"] == data["total"]["cost"]  # the paid run carries the cost
    assert not ledger_log_path(ledger_path(out)).exists()


def test_a_stopped_run_is_counted_once(tmp_path, fake, capsys):
    inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    write_corpus(inp, 30)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    rc, _ = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out), "--max-requests", "10")
    assert rc == 3
    rc, _ = label_main(capsys, str(inp), "-c", str(cfg), "-o", str(out))
    assert rc == 0
    data = json.loads(ledger_path(out).read_text())
    assert [r["state"] for r in data["runs"]] == ["stopped", "finished"]
    assert [r["requests"] for r in data["runs"]] == [10, 20] and data["total"]["requests"] == fake.requests == 30


@pytest.mark.slow
def test_kill_9_runs_are_in_the_ledger(tmp_path):
    """Three runs killed with SIGKILL mid-flight, then one that finishes: the ledger lists four runs (three
    interrupted) and counts at least every request the server received (and at most the few sent at the kill)."""
    fake = FakeLLM(latency=0.02).start()
    try:
        inp, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
        write_corpus(inp, 400)
        cfg = write_config(tmp_path / "c.yaml", fake.base_url)
        args = [sys.executable, "-m", "llmlabel", "label", str(inp), "-c", str(cfg), "-o", str(out), "-q"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        for n in range(3):
            start = fake.requests
            proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while fake.requests < start + 30 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            seen = read_ledger(ledger_path(out))
            assert seen is not None and len(seen["runs"]) == n + 1
            assert fake.requests <= seen["total"]["requests"] <= fake.requests + 8  # (8: the judge's concurrency)
        r = run_cli("label", str(inp), "-c", str(cfg), "-o", str(out), "-q")
        assert r.returncode == 0, r.stderr
        assert len(read_jsonl(out)) == 400
        data = json.loads(ledger_path(out).read_text())
        assert [r["state"] for r in data["runs"]] == ["interrupted"] * 3 + ["finished"]
        assert fake.requests <= data["total"]["requests"] <= fake.requests + 3 * 8
    finally:
        fake.stop()
