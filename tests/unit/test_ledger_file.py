"""OUTPUT.ledger.json and its log (io.ledger_file): summaries of runs that never ended, counted once."""

import json

from llmlabel.io.ledger_file import read_ledger, save_run
from llmlabel.io.paths import ledger_log_path
from llmlabel.llm.ledger import Ledger


def _log(path, *recs):
    with open(ledger_log_path(path), "a") as fh:
        for r in recs:
            fh.write(json.dumps(r) + "\n")


def test_a_batch_collected_twice_after_a_kill_is_counted_once(tmp_path):
    led = tmp_path / "o.jsonl.ledger.json"
    line = {
        "a": {
            "lines": 10,
            "input_tokens": 1000,
            "output_tokens": 100,
            "price_batch_input": 1.0,
            "price_batch_output": 2.0,
        }
    }
    _log(led, {"run": "r1", "start": {"kind": "batch"}}, {"run": "r1", "batch": line, "batch_id": "b0"})
    _log(led, {"run": "r2", "start": {"kind": "batch"}}, {"run": "r2", "batch": line, "batch_id": "b0"})
    data = read_ledger(led)
    assert data["total"]["batch_lines"] == 10 and data["total"]["cost"] == 0.0012


def test_a_cut_last_line_and_a_run_in_both_files_are_counted_once(tmp_path):
    led = tmp_path / "o.jsonl.ledger.json"
    j = Ledger()
    j.add_judge("a", "m", 1.0, 2.0)
    j.record(led)
    j.judges["a"].requests += 3
    j.judges["a"].input_tokens += 300
    with open(ledger_log_path(led), "a") as fh:
        fh.write('{"run": "x", "c": {"a": {"requ')  # a kill in the middle of a line
    seen = read_ledger(led)
    assert seen["total"]["requests"] == 3 and seen["runs"][0]["state"] == "interrupted"
    # the summary written, then a kill before the log was removed: the run is in both files
    log = ledger_log_path(led).read_bytes()
    j.save(led)
    ledger_log_path(led).write_bytes(log)
    data = read_ledger(led)
    assert [r["state"] for r in data["runs"]] == ["finished"] and data["total"]["requests"] == 3
    save_run(led, {"run": "later", "state": "finished", "requests": 1, "cost": 0})
    data = json.loads(led.read_text())
    assert data["total"]["requests"] == 4 and not ledger_log_path(led).exists()


def test_a_runs_summary_takes_the_counts_its_log_has_beyond_it(tmp_path):
    """A Ray actor stopped before its report reached the driver had logged its requests itself: the driver's
    summary of the run is raised to them, not dropped for them."""
    led = tmp_path / "o.jsonl.ledger.json"
    j = Ledger()
    j.add_judge("a", "m", 1.0, 2.0)
    j.record(led)
    j.judges["a"].requests += 10  # reported to the driver
    _log(led, {"run": j.run_id, "c": {"a": {"requests": 4, "input_tokens": 1000}}})  # an actor's own, unreported
    j.save(led)
    data = json.loads(led.read_text())
    assert data["total"]["requests"] == 14 and data["runs"][0]["judges"]["a"]["input_tokens"] == 1000
    assert data["runs"][0]["cost"] == 0.001
