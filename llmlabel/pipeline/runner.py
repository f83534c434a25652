"""Where the run lifecycle used to live: the names other modules import, kept while they move.

The code is in pipeline/job.py (Job, the row machinery), pipeline/drive.py (running rows concurrently),
pipeline/run.py (run_job, finalize) and pipeline/options.py (RunOptions, RunResult, Progress)."""

from __future__ import annotations

from llmlabel.pipeline.job import CONTENT_FREE, OUTCOME, OUTPUT_FIELDS, Job
from llmlabel.pipeline.options import Progress, RunOptions, RunResult
from llmlabel.pipeline.run import _append_quality, finalize, judges_for, run_file, run_job
from llmlabel.pipeline.run import loop_factory as _loop_factory


def _load_gold(path: str | None, id_column: str, label_column: str = "label") -> dict[str, str] | None:
    from llmlabel.io.gold import read_gold

    return read_gold(path, id_column, label_column) if path else None


__all__ = [
    "CONTENT_FREE",
    "OUTCOME",
    "OUTPUT_FIELDS",
    "Job",
    "Progress",
    "RunOptions",
    "RunResult",
    "_append_quality",
    "_load_gold",
    "_loop_factory",
    "finalize",
    "judges_for",
    "run_file",
    "run_job",
]
