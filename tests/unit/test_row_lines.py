"""The per-row path's shortcuts write what the typed path writes: a row asked online (`RowLabeler.process`) is
serialised from its answers' combination once (`_shared_line`), and a run reads its cache failure from one
field that its judges' tallies set (RunState.cache_error)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from llmlabel.config import Config
from llmlabel.errors import CacheError
from llmlabel.io.output import line
from llmlabel.io.records import to_record
from llmlabel.llm.cache import open_cache
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.row_labeler import RowLabeler


def _labeler(tmp_path, judges: str = "ab") -> RowLabeler:
    cfg = Config.model_validate(
        {
            "task": {"name": "s", "labels": {"pos": "good", "neg": "bad", "mid": "neither"}},
            "judges": [{"name": n, "model": f"m-{n}", "base_url": "http://127.0.0.1:9/v1"} for n in judges],
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    return RowLabeler(cfg, cfg.judges, RunOptions(progress=False), open_cache(cfg.cache_dir))


class _Lines:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def append(self, rec: dict[str, Any]) -> None:
        self.lines.append(line(rec))

    def append_lines(self, lines: list[bytes]) -> None:
        self.lines += lines


def test_rows_asked_online_write_the_typed_paths_lines(tmp_path):
    labeler = _labeler(tmp_path)
    texts = ["fine", "awful", "fine again", "so-so"]
    replies = {"fine": ("pos", "pos"), "awful": ("neg", "pos"), "fine again": ("pos", "pos"), "so-so": ("mid", "neg")}
    rows = [(i, {"id": f"r{i}", "text": t, "note": i}) for i, t in enumerate(texts)]
    for req in labeler.plan.pending(rows):  # every answer cached: `process` sends nothing
        label = replies[texts[req.row]][0 if req.judge == "a" else 1]
        payload = {"content": json.dumps({"label": label}), "finish_reason": "stop", "usage": {}}
        labeler.cache.set(req.key, payload)
    sink = _Lines()
    run = labeler.new_run()

    async def go() -> None:
        for i, row in rows:
            await labeler.process(labeler.start(i, row), sink, run)

    asyncio.run(go())
    # Rows 0 and 2 share one answer combination (its outcome made once), each with its own inputs and id.
    expected = []
    for i, row in rows:
        res, text, _ = labeler.start(i, row)
        answers = {
            j.name: labeler.clients[j.name].cached_answer(_payload(labeler, j.name, text), "label")
            for j in labeler.judges
        }
        expected.append(line(to_record(labeler.result(res, answers))))
    assert sink.lines == expected
    assert run.ledger.rows_done == 4 and run.ledger.rows_failed == 0
    labeler.cache.close()


def _payload(labeler: RowLabeler, judge: str, text: Any) -> dict[str, Any]:
    req = labeler.plan.encode(labeler.plan.request(next(j for j in labeler.judges if j.name == judge), text, None))
    hit = labeler.cache.get(req.key)
    assert hit is not None
    return hit


def test_a_run_reads_the_first_cache_failure_of_its_judges_calls(tmp_path):
    labeler = _labeler(tmp_path)
    run = labeler.new_run()
    assert run.cache_error is None
    first, later = CacheError("disk full"), CacheError("gone")
    run.tallies["b"].cache_failed(first)
    run.tallies["a"].cache_failed(later)
    assert run.cache_error is first and run.tallies["a"].cache_error is later
    assert labeler.run.cache_error is None  # another run of the same labeler saw none
    bulk = CacheError("bulk pass")
    run.cache_failed(bulk)  # the bulk cache pass's own failure is the run's line
    assert run.cache_error is bulk
    labeler.cache.close()


def test_a_lone_surrogate_from_outside_a_file_is_written_scrubbed(tmp_path):
    # Files are scrubbed as they are read; a Python list or a Label Studio task is not, and a row's line is
    # then written from its text: "\ud800" cannot be UTF-8, so it becomes "?" there instead of failing the row.
    labeler = _labeler(tmp_path, "a")
    rows = [(0, {"id": "r0", "text": "bad \ud800 text"})]
    for req in labeler.plan.pending(rows):
        labeler.cache.set(req.key, {"content": json.dumps({"label": "neg"}), "finish_reason": "stop", "usage": {}})
    sink = _Lines()

    async def go() -> None:
        await labeler.process(labeler.start(0, rows[0][1]), sink, labeler.new_run())

    asyncio.run(go())
    (got,) = [json.loads(b) for b in sink.lines]
    assert got["text"] == "bad ? text" and got["label"] == "neg" and got["error"] is None
    assert json.loads(line({"id": "x", "text": "\udc80"}))["text"] == "?"
    labeler.cache.close()
