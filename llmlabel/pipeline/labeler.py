"""The Python API: a `Labeler` holds a config's judges, their connections, the response cache and the
calibration, and labels texts in memory (`label`, `alabel`) or files (`label_file`, the CLI's resumable run).

Its work runs on one private event loop in a background thread, so the same clients serve every call, and
`label()` works both in plain scripts and inside a running event loop (Jupyter), where `await alabel()` is
the non-blocking form. Calls on one Labeler run one at a time; rows within a call run concurrently."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from llmlabel.config import Config, Judge, load_config, parse_config
from llmlabel.errors import InputError, LLMLabelError
from llmlabel.io.frames import Table, as_table
from llmlabel.io.records import from_record, to_record
from llmlabel.pipeline.options import Progress, RunOptions, RunResult
from llmlabel.pipeline.row_labeler import OUTPUT_FIELDS, RowLabeler

if TYPE_CHECKING:  # optional extras and heavy modules: for the type checker only
    import datasets
    import httpx
    import pandas

    from llmlabel.llm.ledger import Ledger
    from llmlabel.pipeline.lifecycle import RowLabelers

T = TypeVar("T")
Row = str | Mapping[str, Any]
GIVEN = "\x00given_label"  # the column that carries given labels to the verify prompt (never written)


@dataclass(frozen=True)
class LabelResult:
    """One labeled row: the ensemble's answer, each judge's answer and the input columns."""

    id: str
    label: str | None
    confidence: float | None
    probs: dict[str, float] | None
    candidates: list[str]
    judges: dict[str, dict[str, Any]]  # judge name -> its answer (label, candidates, probs, error...)
    error: str | None  # why the row has no label (None when it has one)
    row: dict[str, Any] = field(default_factory=dict)  # the input's other columns, as the output file has them
    labels: list[str] | None = None  # a multi-label task's set (`label` is then the set joined by "|")

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> LabelResult:
        rest = {k: v for k, v in rec.items() if k not in OUTPUT_FIELDS and k not in ("_i", GIVEN, "labels")}
        return cls(**{k: rec.get(k) for k in OUTPUT_FIELDS}, row=rest, labels=rec.get("labels"))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The row as `llmlabel label` writes it (input columns, then the output fields)."""
        out = {**self.row, **{k: getattr(self, k) for k in OUTPUT_FIELDS}}
        if self.labels is not None:
            out["labels"] = self.labels
        return out


def as_config(config: Config | Mapping[str, Any] | str | Path) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return parse_config(dict(config))
    return load_config(config)


class _Memory:
    """A Sink that keeps finished rows in memory (the bulk cache pass hands over serialised lines)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)

    def append_lines(self, lines: list[bytes]) -> None:
        self.records.extend(json.loads(b) for b in lines)

    def ordered(self) -> list[dict[str, Any]]:
        return sorted(self.records, key=lambda r: r["_i"])


class Labeler:
    """Label texts with a config's judges: in memory (`label`, `alabel`) or files (`label_file`).

    config: a Config, a dict shaped like the YAML config, or a YAML path (see `from_config`).
    judges: the judges to ask instead of the config's (Judge objects or dicts).
    max_cost, max_requests: stop a call once it has spent this much (as `llmlabel label --max-cost`): each
        call (label, alabel, label_file) has its own ledger and budget.
    cache_dir: where paid answers are cached (default: the config's cache_dir).
    progress: show progress on stderr (a bar on a terminal, else a line every few seconds).
    transport: an httpx transport for the judges' requests (tests).
    """

    def __init__(
        self,
        config: Config | Mapping[str, Any] | str | Path,
        *,
        judges: Iterable[Judge | Mapping[str, Any]] | None = None,
        max_cost: float | None = None,
        max_requests: int | None = None,
        cache_dir: str | Path | None = None,
        progress: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        cfg = as_config(config)
        if cache_dir is not None:
            cfg = cfg.model_copy(update={"cache_dir": str(cache_dir)})
        self.config = cfg
        given = [j if isinstance(j, Judge) else Judge.model_validate(dict(j)) for j in judges or []]
        self._given_judges = given or None
        self._opts = RunOptions(max_cost=max_cost, max_requests=max_requests, progress=progress, transport=transport)
        self._stack = contextlib.ExitStack()
        self._state = threading.Lock()  # guards the lazy start below and close()
        self._judges: list[Judge] | None = None
        self._row_labelers: RowLabelers | None = (
            None  # one RowLabeler per prompt kind, over one cache (pipeline.lifecycle.RowLabelers)
        )
        self._gold: dict[str, str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._serial: asyncio.Lock | None = None
        self._last: RowLabeler | None = None
        self._closed = False

    @classmethod
    def from_config(cls, path: str | Path, **options: Any) -> Labeler:
        """A Labeler for a YAML config file; options as for `Labeler(...)`."""
        return cls(load_config(path), **options)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Labeler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Labeler:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Close the judges' connections, the cache and any local model servers this Labeler started."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
            row_labelers = self._row_labelers
            if loop is not None and thread is not None:
                if row_labelers is not None:
                    with contextlib.suppress(Exception):
                        asyncio.run_coroutine_threadsafe(row_labelers.aclose(), loop).result(timeout=30)
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=30)
                loop.close()
            if row_labelers is not None:
                row_labelers.close()
            self._stack.close()

    def __del__(self) -> None:
        # A Labeler dropped without close(): stop its loop thread (never from that thread itself). At interpreter
        # exit this module's globals (contextlib, asyncio, threading) may already be None: then close() fails,
        # and a finalizer must neither raise nor print; the process's end closes the sockets and files, and
        # local model servers stop through their own atexit hook.
        try:
            if not self._closed and self._loop is not None and threading.current_thread() is not self._thread:
                self.close()
        except Exception:  # noqa: S110 - nothing to tell, no one to tell it to
            pass

    def _start(self) -> None:
        """Judges (local model servers start here when the config has none), cache and the event loop."""
        with self._state:
            if self._closed:
                raise LLMLabelError("this Labeler is closed; create a new one")
            if self._loop is not None:
                return
            from llmlabel.io.gold import read_gold
            from llmlabel.pipeline.lifecycle import RowLabelers, judges_for
            from llmlabel.pipeline.run import loop_factory

            cfg = self.config
            self._gold = read_gold(cfg.gold, cfg.task.id_column) if cfg.gold else None
            self._judges = self._stack.enter_context(judges_for(cfg, self._given_judges))
            self._row_labelers = RowLabelers(cfg.cache_dir)
            factory = loop_factory()
            loop = factory() if factory else asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="llmlabel-labeler", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread

    def _row_labeler(self, kind: str) -> RowLabeler:
        assert self._row_labelers is not None and self._judges is not None
        return self._row_labelers.get(kind, self.config, self._judges, dataclasses.replace(self._opts, kind=kind))

    async def _one_at_a_time(self, row_labeler: RowLabeler, opts: RunOptions, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` as the only call on this Labeler, with `opts` and a fresh ledger for `job`."""
        if self._serial is None:
            self._serial = asyncio.Lock()
        async with self._serial:
            row_labeler.use(opts)
            self._last = row_labeler
            return await coro

    def _submit(
        self, row_labeler: RowLabeler, opts: RunOptions, coro: Coroutine[Any, Any, T]
    ) -> concurrent.futures.Future[T]:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._one_at_a_time(row_labeler, opts, coro), self._loop)

    @staticmethod
    def _wait(fut: concurrent.futures.Future[T], cancel: threading.Event | None = None) -> T:
        try:
            return fut.result()
        except KeyboardInterrupt:
            if cancel is None:
                fut.cancel()
            else:  # stop as a budget does (requests in flight are kept), then let Ctrl-C through
                cancel.set()
                with contextlib.suppress(Exception):
                    fut.result()
            raise

    @property
    def judges(self) -> list[Judge]:
        self._start()
        assert self._judges is not None
        return list(self._judges)

    @property
    def ledger(self) -> Ledger | None:
        """The cost ledger (llm.ledger.Ledger) of the latest call: requests, cache hits, tokens, cost."""
        return None if self._last is None else self._last.ledger

    # -- in memory ---------------------------------------------------------------------------
    def _prepare(
        self,
        rows: Iterable[Row] | Table,
        prompt: str | None,
        given_labels: Iterable[Any] | None,
        text_column: str | None = None,
        id_column: str | None = None,
    ) -> tuple[RowLabeler, RunOptions, list[tuple[int, dict[str, Any]]]]:
        self._start()
        col = self.config.task.text_column
        items: list[tuple[int, dict[str, Any]]] = []
        if isinstance(rows, Table):  # already under the config's column names
            rows, text_column, id_column = table_rows(rows, self.config, text_column, id_column), None, None
        for i, r in enumerate(rows):
            if isinstance(r, str):
                if "{{" in col:
                    raise InputError(f"task.text_column is a template ({col}); pass rows as dicts with its columns")
                items.append((i, {col: r}))
            else:
                items.append((i, _renamed(r, self.config, text_column, id_column)))
        kind = prompt or self.config.kind
        opts = dataclasses.replace(self._opts, kind=kind)
        if given_labels is not None:
            given = list(given_labels)
            if len(given) != len(items):
                raise InputError(f"{len(given)} given labels for {len(items)} rows; give one per row")
            for (_, row), g in zip(items, given):
                row[GIVEN] = g
            opts.given_label_column = GIVEN
        return self._row_labeler(kind), opts, items

    async def _label(self, row_labeler: RowLabeler, items: list[tuple[int, dict[str, Any]]]) -> list[LabelResult]:
        from llmlabel.ensemble.combine import refit
        from llmlabel.pipeline.executors import LocalExecutor, RowSource

        sink = _Memory()
        stopped = await LocalExecutor().execute(row_labeler, RowSource(lambda: items, len(items)), sink)
        if row_labeler.fatal is not None:
            raise row_labeler.fatal
        if stopped:
            raise LLMLabelError(f"stopped: {stopped}")
        records = sink.ordered()
        names = [j.name for j in row_labeler.judges]
        results = [from_record(r, row_labeler.kind) for r in records]
        update, _ = refit(
            lambda: iter(results),
            names,
            row_labeler.labels,
            self.config.aggregate,
            row_labeler.kind,
            self._gold,
            row_labeler.set_policy,
            row_labeler.batch_calibrated(),
        )
        if update is None:
            return [LabelResult.from_record(r) for r in records]
        return [LabelResult.from_record(to_record(update(pos, r))) for pos, r in enumerate(results)]

    @overload
    def label(
        self,
        rows: pandas.DataFrame,
        *,
        text_column: str | None = None,
        id_column: str | None = None,
        prompt: str | None = None,
        given_labels: Iterable[Any] | None = None,
    ) -> pandas.DataFrame: ...

    @overload
    def label(  # type: ignore[overload-cannot-match]  # pandas, datasets: Any without their stubs
        self,
        rows: datasets.Dataset,
        *,
        text_column: str | None = None,
        id_column: str | None = None,
        prompt: str | None = None,
        given_labels: Iterable[Any] | None = None,
    ) -> datasets.Dataset: ...

    @overload
    def label(  # type: ignore[overload-cannot-match]
        self,
        rows: Iterable[Row],
        *,
        text_column: str | None = None,
        id_column: str | None = None,
        prompt: str | None = None,
        given_labels: Iterable[Any] | None = None,
    ) -> list[LabelResult]: ...

    def label(
        self,
        rows: Any,
        *,
        text_column: str | None = None,
        id_column: str | None = None,
        prompt: str | None = None,
        given_labels: Iterable[Any] | None = None,
    ) -> Any:
        """Label, in memory and in order: texts (strings) or rows (dicts with the task's text column, and an id
        column if you like) give a list of LabelResult; a pandas DataFrame or a Hugging Face `datasets.Dataset`
        gives a copy of it with the result columns added (`table_fields`: label, confidence, one prob_LABEL
        column per label, candidates, judges, error; a DataFrame keeps its index). The same cache and answers
        as `llmlabel label` on the same rows.

        text_column, id_column: the columns holding the texts and row ids (default: the config's task.text_column
        and task.id_column; without an id column rows are numbered). prompt: "label", "candidates" or "verify"
        (default: the config's mode); given_labels: one per row, shown by the verify prompt. Works inside a
        running event loop too (it blocks that loop's thread until done: prefer `await alabel(...)` there)."""
        table = as_table(rows)
        row_labeler, opts, items = self._prepare(table or rows, prompt, given_labels, text_column, id_column)
        results = self._wait(self._submit(row_labeler, opts, self._label(row_labeler, items)))
        return results if table is None else table.with_columns(table_fields(results, row_labeler.labels))

    @overload
    async def alabel(
        self,
        rows: pandas.DataFrame,
        *,
        text_column: str | None = None,
        id_column: str | None = None,
        prompt: str | None = None,
        given_labels: Iterable[Any] | None = None,
    ) -> pandas.DataFrame: ...

    @overload
    async def alabel(  # type: ignore[overload-cannot-match]
        self,
        rows: datasets.Dataset,
        *,
        text_column: str | None = None,
        id_column: str | None = None,
        prompt: str | None = None,
        given_labels: Iterable[Any] | None = None,
    ) -> datasets.Dataset: ...

    @overload
    async def alabel(  # type: ignore[overload-cannot-match]
        self,
        rows: Iterable[Row],
        *,
        text_column: str | None = None,
        id_column: str | None = None,
        prompt: str | None = None,
        given_labels: Iterable[Any] | None = None,
    ) -> list[LabelResult]: ...

    async def alabel(
        self,
        rows: Any,
        *,
        text_column: str | None = None,
        id_column: str | None = None,
        prompt: str | None = None,
        given_labels: Iterable[Any] | None = None,
    ) -> Any:
        """`label`, awaitable: the caller's event loop stays free while the rows are labeled."""
        table = as_table(rows)
        row_labeler, opts, items = await asyncio.to_thread(
            self._prepare, table or rows, prompt, given_labels, text_column, id_column
        )
        results = await asyncio.wrap_future(self._submit(row_labeler, opts, self._label(row_labeler, items)))
        return results if table is None else table.with_columns(table_fields(results, row_labeler.labels))

    # -- files -------------------------------------------------------------------------------
    def label_file(
        self,
        input_path: str | Path,
        output_path: str | Path,
        *,
        limit: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        restart: bool = False,
        retry_errors: bool = False,
    ) -> RunResult:
        """`llmlabel label INPUT -c CONFIG -o OUTPUT`: resumable (rerun to continue after a stop), the output
        written atomically, OUTPUT.ledger.json beside it. on_progress(Progress) is called every few seconds;
        setting `cancel` stops the run cleanly (the part file is kept). `restart` and `retry_errors` are the
        CLI's --restart and --retry-errors (see RunOptions)."""
        from llmlabel.pipeline.lifecycle import Run, check_run
        from llmlabel.pipeline.run import run_file

        opts = dataclasses.replace(
            self._opts,
            kind=self.config.kind,
            limit=limit,
            on_progress=on_progress,
            cancel=cancel or threading.Event(),
            restart=restart,
            retry_errors=retry_errors,
        )
        checked = check_run(self.config, input_path, output_path, opts)
        self._start()
        # this Labeler's: its judges and cache serve its later calls too
        row_labeler = self._row_labeler(self.config.kind)
        with Run(self.config, checked, opts, labeler=row_labeler) as run:
            return self._wait(self._submit(row_labeler, opts, run_file(run)), opts.cancel)


def _renamed(row: Mapping[str, Any], cfg: Config, text_column: str | None, id_column: str | None) -> dict[str, Any]:
    """A row dict whose text (and id) sit under other names than the config's: copied to the config's names."""
    out = dict(row)
    task = cfg.task
    for given, name in ((text_column, task.text_column), (id_column, task.id_column)):
        if given is not None and given != name:
            if given not in out:
                raise InputError(f"a row has no column '{given}' (columns: {', '.join(map(str, out))})")
            out[name] = out.pop(given)
    return out


def table_rows(table: Table, cfg: Config, text_column: str | None, id_column: str | None) -> list[dict[str, Any]]:
    """A DataFrame's or Dataset's rows as the pipeline reads them: the text under the config's text column and
    the id under its id column (only those two columns are read, unless task.text_column is a template)."""
    task = cfg.task
    if text_column is not None and "{{" in text_column:
        raise InputError("text_column= names one column; for a template over several, set task.text_column")
    if text_column is None and "{{" in task.text_column:
        rows = table.rows()
    else:
        texts = table.column(text_column or task.text_column, "text_column")
        rows = [{task.text_column: t} for t in texts]
    id_col = id_column or (task.id_column if task.id_column in table.columns else None)
    if id_col is not None:
        for row, rid in zip(rows, table.column(id_col, "id_column")):
            row[task.id_column] = rid
    return rows


TABLE_FIELDS = ("label", "confidence", "candidates", "judges", "error")  # and prob_LABEL after confidence


def table_fields(results: list[LabelResult], labels: list[str]) -> dict[str, list[Any]]:
    """The columns a labeled DataFrame or Dataset gains: label (and labels, the set, in a multi-label task),
    confidence, prob_LABEL (one per task label: the ensemble's probability, None where the row has none),
    candidates, judges (each judge's answer) and error."""
    cols: dict[str, list[Any]] = {"label": [r.label for r in results]}
    if any(r.labels is not None for r in results):  # a multi-label task: the set too (`label` joins it by "|")
        cols["labels"] = [r.labels for r in results]
    cols["confidence"] = [r.confidence for r in results]
    for lab in labels:
        cols[f"prob_{lab}"] = [None if r.probs is None else r.probs.get(lab, 0.0) for r in results]
    cols["candidates"] = [r.candidates for r in results]
    cols["judges"] = [r.judges for r in results]
    cols["error"] = [r.error for r in results]
    return cols


__all__ = ["Labeler", "LabelResult", "Progress", "RunResult", "TABLE_FIELDS", "as_config", "table_fields"]
