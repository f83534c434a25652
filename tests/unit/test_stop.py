"""Ctrl-C stops a run at once while its asks wait in retry backoffs (the calibration asks included)."""

from __future__ import annotations

import asyncio
import csv
import os
import signal

import httpx
import pytest

from llmlabel.config import parse_config
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.run import run_job


class _Outage:
    """Every ask answered 503; Ctrl-C arrives once the 2nd has been asked, so the run's asks are then waiting in
    retry backoffs (or about to), whatever the machine's speed."""

    def __init__(self) -> None:
        self.asks = 0
        self.after_signal = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asks += 1
        if self.asks == 2:
            os.kill(os.getpid(), signal.SIGINT)
        elif self.asks > 2:
            self.after_signal += 1
        await asyncio.sleep(0.01)
        return httpx.Response(503, json={"error": {"message": "overloaded"}})


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("logprobs", [True, False], ids=["calibrating", "labeling"])
def test_ctrl_c_stops_asks_waiting_in_retries(tmp_path, logprobs):
    inp = tmp_path / "in.csv"
    with open(inp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerows([[f"r{i}", f"text {i}"] for i in range(200)])
    judge = {"name": "a", "model": "m", "base_url": "http://llm.test/v1", "concurrency": 1, "logprobs": logprobs}
    judge["max_attempts"] = 50  # minutes of backoff: only a stop that cancels them ends the run in time
    cfg = parse_config(
        {
            "task": {"name": "t", "instructions": "Classify.", "labels": {"pos": "good", "neg": "bad"}},
            "judges": [judge],
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    outage = _Outage()
    opts = RunOptions(progress=False, transport=httpx.MockTransport(outage))
    result = run_job(cfg, inp, tmp_path / "out.jsonl", opts)
    assert result.stopped_by == "interrupted (Ctrl-C)" and not result.complete
    # The asks waiting in backoffs were cancelled, not retried: with 50 attempts each, a stop that let them run
    # out would ask again and again (and take minutes). One ask may already be on its way when the signal lands.
    assert outage.after_signal <= 1
