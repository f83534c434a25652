"""`llmlabel label --engine ray`: a job on a Ray cluster (RAY_ADDRESS, else a local one started for the run).

Ray Data reads the input (files, a folder, a glob or an object-store URI); a pool of async actors
(distributed.worker.LabelWorker) runs the same labeling core as a local run, against the same response cache;
their rows stream back here, into the same part file a local run writes; then the same `finalize` aggregates
over every row. So a Ray run and a local run of one file resume each other, and their outputs are identical.

RowLabeler-wide limits: each judge's `concurrency` is split among the actors, its rate limits are one gate's (an
actor), a 429 rests every actor. A --max-cost / --max-requests budget is split evenly among the actors (each
stops at its share: the job never spends more). Rows come back in input order (Ray Data's preserve_order), so
the driver numbers them. An actor that dies is restarted by Ray Data and its batch redone: answers it was
paid for are in the cache (the ledger cannot count what a killed actor had not reported)."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmlabel import errors
from llmlabel.config import Config, Judge
from llmlabel.errors import ConfigError, InputError
from llmlabel.io.gold import read_gold
from llmlabel.io.guard import inputs
from llmlabel.io.output import PartFile, line, renumbered
from llmlabel.io.rows import FORMATS, input_format, iter_rows, scan
from llmlabel.llm.cache import REMOTE
from llmlabel.pipeline.executors import Executor, RowSource
from llmlabel.pipeline.fingerprint import fingerprint
from llmlabel.pipeline.inflight import first_held, in_flight
from llmlabel.pipeline.lifecycle import Checked, Run, check_writes
from llmlabel.pipeline.options import RunOptions, RunResult
from llmlabel.pipeline.progress import Reporter
from llmlabel.pipeline.row_labeler import RowLabeler, Sink
from llmlabel.redaction import one_line

from .worker import NOT_RUN, POSITIONAL, SKIPPED, Gate, LabelWorker, add_note, unpack_error

BATCH = 128  # rows an actor labels at a time (each batch runs concurrently inside the actor)
ACTOR_CPUS = 0.25  # actors wait on the network: a fraction of a CPU each leaves the CPUs to Ray Data's reads


def sources(spec: str) -> tuple[list[Path] | str, str]:
    """The input files (sorted, so that rows have one order) or an object-store URI, and their format."""
    if "://" in spec:
        return spec, _remote_format(spec)
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in FORMATS)
    elif any(c in spec for c in "*?["):
        files = sorted(Path(f) for f in glob.glob(spec) if Path(f).is_file())
    elif p.is_file():
        files = [p]
    else:
        raise InputError(f"input {spec} not found; give a file, a folder, a glob or an object-store URI")
    if not files:
        raise InputError(f"input {spec}: no .csv, .jsonl or .parquet files there")
    kinds = {input_format(f) for f in files}
    if len(kinds) > 1:
        raise InputError(f"input {spec} mixes formats ({', '.join(sorted(kinds))}); give files of one format")
    return files, kinds.pop()


def _remote_format(uri: str) -> str:
    """The format of an object-store file, or of the files in an object-store folder."""
    import pyarrow.fs as pafs

    try:
        fs, where = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(where)
        if info.type == pafs.FileType.Directory:
            names = [f.path for f in fs.get_file_info(pafs.FileSelector(where)) if f.type == pafs.FileType.File]
        elif info.type == pafs.FileType.File:
            names = [where]
        else:
            raise InputError(f"input {uri} not found; check the URI")
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {uri}: {str(e).splitlines()[0]}; check the URI and its credentials") from None
    kinds = {Path(n).suffix.lower().replace(".ndjson", ".jsonl") for n in names} & set(FORMATS)
    if len(kinds) != 1:
        raise InputError(f"input {uri}: give a file or a folder of .csv, .jsonl or .parquet files of one format")
    return kinds.pop()


def _read(ray: Any, src: list[Path] | str, fmt: str) -> Any:
    """The input as a Ray Dataset, with the values a local run reads (a CSV's cells as strings)."""
    paths = src if isinstance(src, str) else [str(p) for p in src]
    if fmt == ".csv":
        import pyarrow as pa
        import pyarrow.csv as pacsv

        names = _csv_columns(paths if isinstance(paths, str) else paths[0])
        conv = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False)
        return ray.data.read_csv(paths, convert_options=conv)
    if fmt == ".jsonl":
        return ray.data.read_json(paths, lines=True)
    return ray.data.read_parquet(paths)


def _csv_columns(path: str) -> list[str]:
    """A CSV's column names, from its header line (a local path or an object-store URI)."""
    import csv
    import io

    import pyarrow.fs as pafs

    fs, where = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
    if fs.get_file_info(where).type == pafs.FileType.Directory:
        where = sorted(f.path for f in fs.get_file_info(pafs.FileSelector(where)) if f.path.endswith(".csv"))[0]
    with fs.open_input_stream(where) as fh:
        head = fh.read(1 << 16).decode("utf-8-sig", "replace")
    return next(csv.reader(io.StringIO(head)), [])


@contextlib.contextmanager
def _quiet_ray() -> Iterator[None]:
    """Ray's own notices (start-up, auth, each execution, actor arguments) stay out of llmlabel's log: Ray reads
    these variables when it starts and runs. Set for the job only and given back after (a user's own win)."""
    quiet = {"RAY_DATA_LOG_LEVEL": "CRITICAL", "RAY_BACKEND_LOG_LEVEL": "error"}
    added = [k for k in quiet if k not in os.environ]
    os.environ.update({k: quiet[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def connected() -> Iterator[Any]:
    with _quiet_ray():
        with _connected() as ray:
            yield ray


@contextlib.contextmanager
def _connected() -> Iterator[Any]:
    """Ray, connected: to RAY_ADDRESS's cluster, else a local one started here and stopped after (already
    connected, as in a notebook or a test: that connection, left open)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'llmlabel[ray]'") from None
    logging.getLogger("ray").setLevel(logging.ERROR)
    ours = not ray.is_initialized()
    if ours:
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or None,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows come back in input order: the driver numbers them
    ctx.enable_progress_bars = False  # llmlabel's own progress covers the job
    ctx.print_on_execution_start = False
    try:
        yield ray
    finally:
        if ours:
            ray.shutdown()


def _for_actors(cfg: Config, judges: list[Judge], opts: RunOptions, n: int) -> tuple[Config, list[Judge], RunOptions]:
    """Each actor's config, judges and options: absolute paths (actors have their own working directory),
    each judge's concurrency and the budget split n ways."""
    if not cfg.cache_dir.startswith(REMOTE):
        cfg = cfg.model_copy(update={"cache_dir": str(Path(cfg.cache_dir).resolve())})
    judges = [j.model_copy(update={"concurrency": max(1, j.concurrency // n)}) for j in judges]
    share = RunOptions(
        progress=False,
        kind=opts.kind,
        given_label_column=opts.given_label_column,
        max_cost=None if opts.max_cost is None else opts.max_cost / n,
        max_requests=None if opts.max_requests is None else opts.max_requests // n,
    )
    return cfg, judges, share


def run_job_ray(
    cfg: Config, input_spec: str | Path, output_path: str | Path, opts: RunOptions | None = None, actors: int = 2
) -> RunResult:
    """Label a corpus on Ray into one output file (what `run_job` does on one process). Safe to rerun."""
    opts = opts or RunOptions()
    if opts.shard is not None:
        raise ConfigError("--engine ray labels the whole input: drop --shard (Ray spreads the rows over its actors)")
    if actors < 1:
        raise ConfigError(f"--actors {actors}: give at least 1")
    if opts.max_requests is not None:
        actors = max(1, min(actors, opts.max_requests))  # each actor's share of the budget is a whole request
    src, fmt = sources(str(input_spec))
    checked = _check(cfg, src, input_spec, output_path, opts)
    with Run(cfg, checked, opts) as run, connected() as ray:
        labeler = run.labeler
        _check_in_flight(labeler, src, checked.output)
        fp = fingerprint(labeler, src)
        if isinstance(src, list) and len(src) == 1:
            fp = run.typed(fp, src[0])  # a Parquet input's column types, for a Parquet output
        part = run.open_part(fp, str(input_spec))  # (the actors' reports logged in its ledger as they arrive)
        source = RowSource(lambda: _local_rows(src, labeler.opts.limit), checked.total, len(part.done), (src, fmt))
        try:
            stopped = asyncio.run(RayExecutor(ray, actors).execute(labeler, source, part))
        finally:
            part.close()
        return run.finish(part, stopped)


def _check(cfg: Config, src: list[Path] | str, spec: str | Path, output: str | Path, opts: RunOptions) -> Checked:
    """A local run's checks (pipeline.lifecycle) over every input file; an object store's are not read here."""
    output = check_writes(cfg, output, inputs(*(src if isinstance(src, list) else [])))
    total = 0
    if isinstance(src, list):  # local files are checked whole before any paid call, as a local run does
        task = cfg.task
        id_required = "id_column" in task.model_fields_set
        total = sum(scan(f, task.text_column, task.id_column, opts.limit, id_required) for f in src)
        total = min(total, opts.limit) if opts.limit is not None else total
    gold = read_gold(cfg.gold, cfg.task.id_column) if cfg.gold else None
    return Checked(Path(spec) if isinstance(src, list) else Path(str(spec)), output, total, gold)


def _check_in_flight(labeler: RowLabeler, src: list[Path] | str, output_path: Path) -> None:
    """Requests of this job bought in a Batch API batch not yet collected: the actors cannot leave their rows
    out (a local run does), so the run is refused before any paid call rather than paying twice."""
    flight = in_flight(labeler.cfg.cache_dir, output_path)
    if not flight:
        return
    if isinstance(src, list):
        held = first_held(labeler, _local_rows(src, labeler.opts.limit), flight)
    else:  # an object store's files are not read here: any batch of this output's own counts
        held = next((h for h in flight.keys.values() if h.output == str(output_path.resolve())), None)
    if held is not None:
        raise InputError(
            f"requests of this job are in {held.output}'s Batch API batch {held.batch_id or '(being created)'}, "
            f"still in flight ({held.record}); collect it first (rerun `llmlabel label --batch` on that output), or "
            "run with --engine local, which labels the other rows and leaves these to the batch"
        )


def _local_rows(src: list[Path] | str, limit: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """The rows of local input files, read here (an object store's are read by Ray Data only: none here)."""
    if not isinstance(src, list):
        return iter(())
    rows = ((i, r) for f in src for i, r in enumerate(iter_rows(f)))
    return itertools.islice(rows, limit)


class RayExecutor(Executor):
    """The rows spread over a pool of Ray actors (LabelWorker: the local executor in each), read by Ray Data from
    the source's `spec` (files, a folder, a glob, an object-store URI); their finished rows stream back in input
    order into the sink (the part file)."""

    name = "ray"

    def __init__(self, ray: Any, actors: int) -> None:
        self.ray, self.actors = ray, actors

    async def execute(self, labeler: RowLabeler, source: RowSource, sink: Sink) -> str | None:
        assert isinstance(sink, PartFile)  # (the actors skip the ids it holds)
        stop = _Stop(labeler.opts.cancel)
        # Content-free calibration once, here: the actors then find its answers in the cache.
        try:
            await _calibrate(labeler)
        except errors.BudgetExhausted:
            if not stop.check():
                raise
            return stop.why  # cancelled meanwhile (a request saw the flag before it was sent)
        progress = Reporter(labeler.opts, labeler.ledger, source.total, source.done_before)
        try:
            with stop.on_signals():
                labeled = _labeled(self.ray, labeler, _read(self.ray, *source.spec), sink, self.actors)
                _stream(labeler, labeled, sink, progress, stop)  # (blocking: this loop runs nothing else meanwhile)
        except errors.LLMLabelError:
            raise
        except Exception as e:  # noqa: BLE001 - Ray's errors (a read that fails, a cluster lost) end in one line
            labeler.fail(InputError(f"the Ray job failed: {_cause(e)}; fix the input or the cluster"))
        finally:
            progress.close(finished=labeler.fatal is None and not stop.why)
        return stop.why


def _labeled(ray: Any, labeler: RowLabeler, ds: Any, part: PartFile, actors: int) -> Any:
    """The dataset of labeled rows: the input through a pool of LabelWorker actors and one Gate."""
    if labeler.opts.limit is not None:
        ds = ds.limit(labeler.opts.limit)
    gate = (
        ray.remote(Gate)
        .options(num_cpus=0)
        .remote({j.name: (j.requests_per_minute, j.tokens_per_minute) for j in labeler.judges})
    )
    cfg, judges, share = _for_actors(labeler.cfg, labeler.judges, labeler.opts, actors)
    return ds.map_batches(
        LabelWorker,
        fn_constructor_kwargs={
            "cfg": cfg,
            "judges": judges,
            "opts": share,
            "done": frozenset(part.done),
            "gate": gate,
            "ledger_log": labeler.ledger.log_target,  # (a path on this machine: actors elsewhere report instead)
        },
        batch_size=BATCH,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=ACTOR_CPUS,
    )


def _cause(e: BaseException) -> str:
    """The innermost cause of a Ray error (which wraps the task's own error), on one line."""
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "cause", None) or e.__cause__
        if not isinstance(inner, BaseException):
            break
        e = inner
    text = str(e).strip().splitlines()
    return one_line(f"{type(e).__name__}: {text[-1] if text else ''}", 300)


async def _calibrate(labeler: RowLabeler) -> None:
    """The job's content-free calibration (RowLabeler.ensure_calibrated), its clients closed after: they belong to this
    event loop, which ends before the actors run."""
    try:
        await labeler.ensure_calibrated()
    finally:
        await labeler.aclose()


class _Stop:
    """Why the driver stopped reading rows: Ctrl-C, SIGTERM or the caller's cancel flag."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.cancel = cancel
        self.why: str | None = None

    def check(self) -> bool:
        if self.cancel is not None and self.cancel.is_set() and not self.why:
            self.why = "cancelled"
        return self.why is not None

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[None]:
        """SIGTERM stops the run as Ctrl-C does (only on the main thread: elsewhere the caller owns them). Ctrl-C
        raises KeyboardInterrupt here too: the stream blocks its event loop, whose own SIGINT handler (asyncio's
        Runner: cancel the main task) would wait for an await that never comes."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def term(*_: Any) -> None:
            raise KeyboardInterrupt

        old = {sig: signal.signal(sig, term) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        except KeyboardInterrupt:
            self.why = "interrupted"
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def _stream(labeler: RowLabeler, labeled: Any, part: PartFile, progress: Reporter, stop: _Stop) -> None:
    gi, last = 0, time.monotonic()  # gi: the next row's position in the input
    for batch in labeled.iter_batches(batch_size=None, batch_format="pyarrow"):
        out = []
        for raw, state, note in zip(*(batch.column(c).to_pylist() for c in ("line", "state", "note"))):
            if note:
                _noted(labeler, json.loads(note))
            if state == SKIPPED:
                labeler.ledger.rows_skipped += 1
            elif state == POSITIONAL:
                rec = json.loads(raw)
                rec["_i"], rec["id"] = gi, str(gi)
                if rec["id"] in part.done:
                    labeler.ledger.rows_skipped += 1
                else:
                    out.append(line(rec))
            elif state != NOT_RUN:
                out.append(renumbered(raw, gi))
            gi += 1
        part.append_lines(out)
        progress.rows_done(len(out))
        if progress.timed and time.monotonic() - last >= progress.every:
            progress.emit()
            last = time.monotonic()
        if labeler.fatal is not None or stop.check():
            return


def _noted(labeler: RowLabeler, note: dict[str, Any]) -> None:
    labeler.count_truncated(add_note(labeler.ledger, note))
    packed = note.get("fatal")
    if packed and labeler.fatal is None:
        fatal = unpack_error(packed)  # the actor's error, its type and fields as raised there
        if isinstance(fatal, errors.BudgetExhausted):  # an actor's share: say what the user set
            o = labeler.opts
            msg = (
                f"--max-cost ${o.max_cost:g} reached"
                if o.max_cost is not None
                else f"--max-requests {o.max_requests} reached"
            )
            fatal = errors.BudgetExhausted(msg + " (split evenly among the Ray actors: one actor spent its share)")
        labeler.fail(fatal)
