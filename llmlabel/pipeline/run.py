"""A labeling run over files, end to end: checks, judges, rows into a part file, then the final output.

`run_job` is the one run lifecycle: the CLI, the Python API (`Labeler.label_file`) and the service's batch jobs
call it (or `run_file` on a job they keep open). Safe to rerun: finished rows are skipped, paid answers cached."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

from llmlabel.config import Config, Judge
from llmlabel.ensemble.combine import refit
from llmlabel.ensemble.multilabel import SetPolicy
from llmlabel.errors import ConfigError, InputError, LLMLabelError, OutputError
from llmlabel.io.files import atomic_write
from llmlabel.io.gold import read_gold
from llmlabel.io.guard import check_output, config_reads, inputs
from llmlabel.io.lock import output_lock
from llmlabel.io.output import PartFile, load_rows, save_rows, write_jsonl_lines, write_output
from llmlabel.io.paths import errors_path, ledger_path, part_path, shard_path
from llmlabel.io.records import report_record, to_records
from llmlabel.io.rows import iter_rows, scan
from llmlabel.io.values import arrow_schema
from llmlabel.pipeline.drive import drive, pending_rows
from llmlabel.pipeline.fingerprint import check_resumable, fingerprint
from llmlabel.pipeline.inflight import in_flight, leave_to_batches
from llmlabel.pipeline.job import Job, output_names, text_of
from llmlabel.pipeline.options import RunOptions, RunResult
from llmlabel.pipeline.shard_manifest import save_shard
from llmlabel.results import AggregationReport


@contextlib.contextmanager
def judges_for(cfg: Config, given: list[Judge] | None = None) -> Iterator[list[Judge]]:
    """`given`, else the config's judges, else one from OPENAI_* variables, else the embedded local models,
    whose llama.cpp servers are started for the run (or reused from `llmlabel local start`) and stopped after."""
    from llmlabel.config import default_judges

    if given or cfg.judges:
        yield list(given or cfg.judges)
        return
    env = default_judges()
    if env:
        yield env
        return
    from llmlabel.local import servers as local

    entered = False
    try:
        with local.local_judges() as dicts:
            entered = True
            yield _local_judges(dicts)
    except local.LocalError as e:
        if entered:
            raise
        raise ConfigError(
            "no judge to ask: the config has no judges: and neither OPENAI_API_KEY nor OPENAI_BASE_URL is set; "
            f"add judges: (or set a key or an endpoint), or set up the embedded local models ({e})"
        ) from None


def _local_judges(dicts: list[dict[str, Any]]) -> list[Judge]:
    """Judges for the embedded llama.cpp servers."""
    # The local server needs no key: it is never put in a Judge (keys live only in the environment).
    # llama-cpp-python constrains decoding to a schema given as {"type": "json_object", "schema": ...}.
    # Their ports change from run to run; the cache knows them by model instead.
    # logprobs: llama.cpp returns them, so each answer also carries a label distribution (calibrated on
    # content-free inputs), which counters these tiny models' bias toward one label.
    return [
        Judge(
            **{
                "response_format": "json_object_schema",
                "cache_as": f"llmlabel-local/{d['model']}",
                "logprobs": True,
                **{k: v for k, v in d.items() if k != "api_key"},
            }
        )
        for d in dicts
    ]


def loop_factory() -> Any:
    """uvloop when installed (a faster event loop: less CPU per request at high concurrency), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def check_run(
    cfg: Config, input_path: str | Path, output_path: str | Path, opts: RunOptions
) -> tuple[Path, Path, int, dict[str, str] | None]:
    """Everything a run checks before any paid call. Returns the paths, the row count and the gold labels."""
    input_path, output_path = Path(input_path), Path(output_path)
    check_output(output_path, inputs(input_path) + config_reads(cfg))
    task = cfg.task
    total = scan(
        input_path,
        task.text_column,
        task.id_column,
        opts.limit,
        id_required="id_column" in task.model_fields_set,
        in_shard=opts.shard.has if opts.shard is not None else None,
    )
    first = next(iter_rows(input_path))
    text_of(first, 0, task, cfg.prompts_dir)  # a broken text_column template fails here, before any call
    if opts.given_label_column:
        if opts.given_label_column not in first:
            raise InputError(f"{input_path}: no label column '{opts.given_label_column}'; pass --label-column")
    # The config's gold rows anchor weighted / dawid_skene: read (and checked) before any paid call.
    return input_path, output_path, total, read_gold(cfg.gold, task.id_column) if cfg.gold else None


def run_job(cfg: Config, input_path: str | Path, output_path: str | Path, opts: RunOptions | None = None) -> RunResult:
    """Label a corpus file into an output file. Safe to rerun: finished rows are skipped, paid answers cached."""
    opts = opts or RunOptions()
    input_path, output_path, total, gold = check_run(cfg, input_path, output_path, opts)
    with output_lock(output_path), judges_for(cfg, opts.judges) as judges:
        job = Job(cfg, judges, opts)
        try:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                return runner.run(_closing(job, run_file(job, input_path, output_path, total, gold)))
        finally:
            job.cache.close()


async def _closing(job: Job, coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return await coro
    finally:
        await job.aclose()


async def run_file(job: Job, input_path: Path, output_path: Path, total: int, gold: dict[str, str] | None) -> RunResult:
    """The run on a job its caller keeps open (checked by `check_run`), on the job's event loop: the rows not
    yet in the part file, then the final output (`finalize`)."""
    part = open_part(job, output_path, typed(fingerprint(job, input_path), job, input_path), input_path)
    job.ledger.record(ledger_path(output_path))
    try:
        flight = in_flight(job.cfg.cache_dir, output_path)  # rows whose requests a batch holds are left to it
        rows = leave_to_batches(job, pending_rows(job, input_path, part.done), flight)
        try:
            stopped = await drive(job, rows, part, total, len(part.done))
        finally:
            part.close()
        return finalize(job, part, output_path, stopped or flight.stop_reason(output_path), gold)
    finally:
        job.ledger.close_log()  # (a no-op once finalize saved the run; else its log shows it as interrupted)


def typed(fp: dict[str, Any], job: Job, input_path: Path) -> dict[str, Any]:
    """A part file's meta: the fingerprint and, for a Parquet input, its column types as the output names them
    (a Parquet output keeps them: dates stay dates, an integer id stays an integer)."""
    schema = arrow_schema(input_path, lambda cols: output_names(cols, job.cfg.task.id_column))
    return {**fp, "schema": schema} if schema else fp


def open_part(job: Job, output_path: Path, fp: dict[str, Any], input_name: Path | str) -> PartFile:
    """The output's part file, opened for appending: an unfinished run's rows kept (if it belongs to the same
    input and settings `fp`), or a fresh one. Its `done` ids are the rows not to label again."""
    part = PartFile(part_path(output_path), job.opts.limit)
    if job.opts.restart:
        part.discard()
    elif part.exists():
        check_resumable(part.meta(), fp, input_name, part.path)
    kept = _keep_errors(part, fp, output_path, job.opts.retry_errors)
    part.load()
    kept &= part.errored  # the failed rows of the last finished run on file: asked again only with retry_errors
    part.done |= kept  # (still in errored: a later line of the row, if any, is the one output)
    part.open(fp)
    return part


def _keep_errors(part: PartFile, fp: dict[str, Any], output_path: Path, retry: bool) -> set[str]:
    """A rerun of a finished job starts from the rows that failed in it (same input and settings), so that
    they are not paid for again on every plain rerun (nor when that rerun is itself interrupted and
    continued: its part file then holds them already). Returns their ids."""
    recorded, lines = load_rows(errors_path(output_path))
    same = recorded is not None and {**recorded, "schema": None} == {**fp, "schema": None}  # (types: either engine)
    if retry or not lines or not same:
        return set()
    return part.ids(lines) if part.exists() else part.seed(fp, lines)


def finalize(
    job: Job, part: PartFile, output_path: Path, stopped: str | None, gold: dict[str, str] | None
) -> RunResult:
    """After the rows: a stopped run keeps its part file (raising a budget or judge error with the ledger
    attached); a finished one gets the whole-job aggregation, written atomically, and its ledger."""
    fatal = job.fatal
    result = RunResult(output_path, 0, False, job.ledger)
    if job.truncated:
        result.warnings.append(f"{job.truncated} long texts were cut to the judges' max_text_tokens")
    odd = {n: j.odd_usage for n, j in job.ledger.judges.items() if j.odd_usage}
    if odd:
        result.warnings.append(
            "the server sent token counts that are not numbers, negative or impossibly large ("
            + ", ".join(f"{n}: {k}" for n, k in odd.items())
            + "); each was counted as the request's worst case (its bytes in, max_tokens out) in the ledger and "
            "the budget: check the endpoint's usage reports"
        )
    if stopped or fatal is not None:
        result.stopped_by = stopped or str(fatal)
        try:
            job.ledger.save(ledger_path(output_path), "stopped")
        except OSError:
            if fatal is None:
                raise
            # The same full disk that stopped the run: its own line (where the rows are) matters more (the spend
            # is in the ledger's log, written as the run went).
        if isinstance(fatal, LLMLabelError):
            if not isinstance(fatal, OutputError):  # whose line already says where the finished rows are
                fatal.args = (
                    f"{fatal} ({job.ledger.rows_done} rows finished this run are kept in "
                    f"{part.path.name}; rerun the same command to continue)",
                )
            fatal.ledger = job.ledger  # type: ignore[attr-defined]
            raise fatal
        return result
    # Every row is in: final aggregation over the whole job, written atomically.
    names = [j.name for j in job.judges]
    result.rows, quality = write_final(
        part, output_path, names, job.labels, job.cfg.aggregate, job.kind, gold, job.set_policy
    )
    result.complete, result.quality = True, report_record(quality)
    if quality.rows_only_left_out:
        result.warnings.append(
            f"{quality.rows_only_left_out} rows were answered only by judges left out as uninformative "
            f"({', '.join(quality.left_out)}): the cascade stopped on them. Put a stronger judge first or set "
            "cascade: {enabled: false}, then rerun (answers already paid for are cached)"
        )
    if one := quality.one_label:
        result.warnings.append(
            f"the judge {one.judge} answered {one.label!r} on {one.share:.0%} of rows "
            f"({round(one.share * one.rows)} of {one.rows}, {len(job.labels)} labels): a small model stuck "
            "on one label looks like this, and its confidences are then not to be trusted. Check a few rows; "
            "describe each label, give 10+ gold rows, or use a stronger judge"
        )
    job.ledger.save(ledger_path(output_path))
    _append_quality(ledger_path(output_path), result.quality)
    if job.opts.shard is not None:
        save_shard(output_path, part, job.opts.shard, job.opts.limit, names, job.labels, job.kind, job.cfg)
    else:
        shard_path(output_path).unlink(missing_ok=True)  # the output is no longer a shard's
    failed = part.error_lines() if job.ledger.rows_failed or job.ledger.rows_skipped else []
    save_rows(errors_path(output_path), part.meta() or {}, failed)
    if failed:
        result.warnings.append(
            f"{len(failed)} rows have errors (see their error field); "
            "rerun with --retry-errors to ask the judges again for them"
        )
    part.finished()
    return result


def write_final(
    part: PartFile,
    output_path: Path,
    names: list[str],
    labels: list[str],
    method: str,
    kind: str,
    gold: dict[str, str] | None,
    policy: SetPolicy | None = None,
) -> tuple[int, AggregationReport]:
    """The aggregation over every row of `part` (a run's, or the shards' that `llmlabel merge` joins), written
    atomically to the output. Returns the row count and the aggregation's report."""
    # Without gold the fit reads only each row's judges (part.judges_only parses each distinct answer set once).
    rows = part.judges_only if not gold and kind != "multilabel" else lambda: part.results(kind)
    update, quality = refit(rows, names, labels, method, kind, gold, policy)
    try:
        if update is None and output_path.suffix.lower() in (".jsonl", ".ndjson"):
            return write_jsonl_lines(output_path, part.ordered_raw()), quality
        if update is None:
            records = part.ordered()
        else:
            records = to_records(update(pos, r) for pos, r in enumerate(part.results(kind)))
        return write_output(output_path, records, (part.meta() or {}).get("schema")), quality
    except OSError as e:
        raise OutputError(
            f"cannot write {output_path}: {e.strerror or e}; the finished rows are safe in {part.path}: free some "
            "space (or fix the path) and rerun the same command to write it"
        ) from None


def _append_quality(path: Path, quality: dict[str, Any]) -> None:
    if not quality:
        return
    import json

    data = json.loads(path.read_text())
    data["runs"][-1]["quality"] = quality
    atomic_write(path, json.dumps(data, indent=2))
