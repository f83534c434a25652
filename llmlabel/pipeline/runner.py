"""A labeling job end to end: rows -> prompts -> judge calls -> aggregation -> output, resumable."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlabel.config import Config, Judge
from llmlabel.ensemble.combine import combine_row, refit
from llmlabel.errors import BudgetExhausted, InputError, LLMLabelError
from llmlabel.io.output import (
    PERMANENT,
    PartFile,
    fields_json,
    ledger_path,
    line,
    line_with,
    part_path,
    write_jsonl_lines,
    write_output,
)
from llmlabel.io.rows import input_format, iter_rows, row_id, scan
from llmlabel.llm.answers import JudgeAnswer
from llmlabel.llm.cache import ResponseCache
from llmlabel.llm.judge import Budget, JudgeClient
from llmlabel.llm.ledger import Ledger
from llmlabel.llm.prompts import render_messages, row_text
from llmlabel.llm.tokens import truncate

OUTPUT_FIELDS = ("id", "label", "confidence", "probs", "candidates", "judges", "error")
OUTCOME = OUTPUT_FIELDS[1:]  # what a row's answers add to its record
CONTENT_FREE = ["N/A", "", "[MASK]"]


@dataclass(frozen=True)
class Progress:
    """A snapshot of a running job, handed to `RunOptions.on_progress`."""

    done: int  # rows finished, this run and earlier runs of the same output
    total: int  # rows in the input (after --limit)
    ledger: Ledger  # the live ledger of this run (read only)


@dataclass
class RunOptions:
    """progress: a tqdm bar on stderr. on_progress: called with a `Progress` every `progress_every` seconds
    and once at the end, on the run's event-loop thread (keep it quick). cancel: set it from any thread to
    stop the run the way a budget does: requests in flight finish and are kept, nothing new is sent, the run
    returns stopped_by="cancelled" and keeps its part file."""

    limit: int | None = None
    max_cost: float | None = None
    max_requests: int | None = None
    progress: bool = True
    progress_every: float = 10.0
    on_progress: Callable[[Progress], None] | None = None
    cancel: threading.Event | None = None
    kind: str | None = None  # prompt kind; defaults to the config's mode
    given_label_column: str | None = None  # for the verify prompt (audits)
    transport: Any = None  # an httpx transport: tests inject respx / ASGI transports here (SDK path)
    log: Any = None  # where warnings and the summary go (default: stderr)


@dataclass
class RunResult:
    output: Path
    rows: int
    complete: bool
    ledger: Ledger
    quality: dict[str, Any] = field(default_factory=dict)
    stopped_by: str | None = None
    warnings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def judges_for(cfg: Config) -> Iterator[list[Judge]]:
    """The config's judges, else one from OPENAI_* variables, else the embedded local models, whose
    llama.cpp servers are started for the run (or reused from `llmlabel local start`) and stopped after."""
    from llmlabel.config import default_judges

    if cfg.judges:
        yield cfg.judges
        return
    env = default_judges()
    if env:
        yield env
        return
    from llmlabel.local import servers as local

    with local.local_judges() as dicts:
        # The local server needs no key: it is never put in a Judge (keys live only in the environment).
        # llama-cpp-python constrains decoding to a schema given as {"type": "json_object", "schema": ...}.
        # Their ports change from run to run; the cache knows them by model instead.
        # logprobs: llama.cpp returns them, so each answer also carries a label distribution (calibrated on
        # content-free inputs), which counters these tiny models' bias toward one label.
        yield [
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


class Job:
    def __init__(self, cfg: Config, judges: list[Judge], opts: RunOptions) -> None:
        self.cfg, self.judges, self.opts = cfg, judges, opts
        self.labels = cfg.task.label_names
        self.kind = opts.kind or cfg.mode
        self.ledger = Ledger()
        self.cache = ResponseCache(cfg.cache_dir)
        ledgers = tuple(
            self.ledger.add_judge(j.name, j.model, j.price_per_million.input, j.price_per_million.output)
            for j in judges
        )
        self.budget = Budget(opts.max_cost, opts.max_requests, ledgers)
        self.clients = {
            j.name: JudgeClient(
                j, self.cache, self.ledger.judges[j.name], self.budget, self.labels, transport=opts.transport
            )
            for j in judges
        }
        self.weights = {j.name: j.weight for j in judges if j.weight is not None} or None
        self.p_cf: dict[str, dict[str, float]] = {}
        self.prefixes: dict[Any, list[dict[str, str]]] = {}
        self.truncated = 0
        self._row_memo: dict[tuple[int, ...], Any] = {}
        self._columns: dict[tuple[str, ...], list[str]] = {}
        self.fatal: LLMLabelError | None = None

    def messages(self, judge: Judge, text: str, given: str | None) -> list[dict[str, str]]:
        msgs, cut = self._messages(judge, text, given)
        self.truncated += cut
        return msgs

    def _messages(self, judge: Judge, text: str, given: str | None) -> tuple[list[dict[str, str]], bool]:
        """The messages, and whether the text had to be cut to the judge's max_text_tokens."""
        text, cut = truncate(text, judge.max_text_tokens)
        return render_messages(
            self.cfg,
            judge,
            self.kind,
            text,
            given_label=given,
            logprob_codes=self.clients[judge.name].codes is not None,
            prefix_cache=self.prefixes,
        ), cut

    async def calibrate(self) -> None:
        """Contextual calibration: the label bias of each logprob judge, measured on content-free inputs."""
        for j in self.judges:
            if not j.logprobs:
                continue
            dists = []
            for t in CONTENT_FREE:
                ans = await self.clients[j.name].ask(self.messages(j, t, None), self.kind)
                if ans.probs:
                    dists.append([ans.probs[lab] for lab in self.labels])
            if dists:
                from llmlabel.ensemble.calibration import average_content_free

                p = average_content_free([__import__("numpy").asarray(d) for d in dists])
                self.p_cf[j.name] = {lab: float(p[k]) for k, lab in enumerate(self.labels)}

    def _calibrated(self, name: str, ans: JudgeAnswer) -> JudgeAnswer:
        pcf = self.p_cf.get(name)
        if not pcf or not ans.probs:
            return ans
        raw = {lab: ans.probs[lab] / max(pcf[lab], 1e-6) for lab in self.labels}
        z = sum(raw.values()) or 1.0
        probs = {lab: round(v / z, 4) for lab, v in raw.items()}
        return ans.model_copy(update={"probs": probs, "label": max(self.labels, key=lambda lab: probs[lab])})

    async def ask_all(self, text: str, given: str | None) -> dict[str, JudgeAnswer]:
        cascade = self.cfg.cascade
        if len(self.judges) == 1:
            j = self.judges[0]
            return {
                j.name: self._calibrated(
                    j.name, await self.clients[j.name].ask(self.messages(j, text, given), self.kind)
                )
            }
        if not (cascade and cascade.enabled):
            res = await asyncio.gather(
                *(self.clients[j.name].ask(self.messages(j, text, given), self.kind) for j in self.judges)
            )
            return {j.name: self._calibrated(j.name, a) for j, a in zip(self.judges, res)}
        answers: dict[str, JudgeAnswer] = {}
        for n, j in enumerate(self.judges):
            answers[j.name] = self._calibrated(
                j.name, await self.clients[j.name].ask(self.messages(j, text, given), self.kind)
            )
            valid = [a for a in answers.values() if a.label is not None]
            if not valid or n == len(self.judges) - 1:
                continue
            agg = combine_row(answers, self.labels, self.kind, self.weights)
            agree = len({a.label for a in valid}) == 1
            sure = len(valid) >= 2 or valid[0].probs is not None
            if agree and sure and (agg["confidence"] or 0) >= cascade.threshold:
                for rest in self.judges[n + 1 :]:
                    self.ledger.judges[rest.name].calls_saved += 1
                break
        return answers

    def start(self, i: int, row: dict[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
        """A row's output record so far, its text to label (None: nothing to label) and its given label."""
        task = self.cfg.task
        columns = tuple(row)
        names = self._columns.get(columns)  # inputs repeat their columns: renamed once per header
        if names is None:
            if len(self._columns) >= 256:
                self._columns.clear()
            names = self._columns[columns] = [
                f"{k}_input" if k in OUTPUT_FIELDS and k != task.id_column else k for k in columns
            ]
        rec: dict[str, Any] = {"_i": i}
        rec.update(zip(names, row.values()))
        rec["id"] = row_id(row, task.id_column, i)
        text = row_text(row, task, self.cfg.prompts_dir)
        if text is None or not text.strip():
            rec.update(
                label=None,
                confidence=None,
                probs=None,
                candidates=[],
                judges={},
                error=f"{PERMANENT}: nothing to label in '{task.text_column}'",
            )
            return rec, None, None
        given = None
        if self.opts.given_label_column:
            gv = row.get(self.opts.given_label_column)
            given = None if gv is None else str(gv)
        return rec, text, given

    def outcome(self, answers: dict[str, JudgeAnswer]) -> dict[str, Any]:
        """What a row's answers add to its record: the aggregate and each judge's answer."""
        return {
            **combine_row(answers, self.labels, self.kind, self.weights),
            "judges": {n: a.out() for n, a in answers.items()},
        }

    def finish(self, rec: dict[str, Any], answers: dict[str, JudgeAnswer] | None) -> dict[str, Any]:
        """Complete a row's record and count it done (the caller appends it)."""
        if answers is not None:
            rec.update(self.outcome(answers))
        self._count(rec["error"])
        return rec

    def _count(self, error: str | None) -> None:
        self.ledger.rows_done += 1
        if error and not error.startswith(PERMANENT):
            self.ledger.rows_failed += 1

    async def process(self, started: tuple[dict[str, Any], str | None, str | None], part: PartFile) -> None:
        rec, text, given = started
        part.append(self.finish(rec, None if text is None else await self.ask_all(text, given)))

    def from_cache(self, rows: list[tuple[int, dict[str, Any]]], part: PartFile) -> tuple[list[Any], int]:
        """Finish, synchronously, the rows whose every judge answer is already cached: one bulk lookup for
        the chunk, no tasks, no awaits (a warm rerun is all lookups). Returns the other rows, started, and
        how many keys were found."""
        prepared, keys = [], []
        # Judges with the same prompt and text limit send the same messages: rendered once a row.
        groups = [
            (j, self.clients[j.name], (j.prompt, j.max_text_tokens, self.clients[j.name].codes is not None))
            for j in self.judges
        ]
        for i, row in rows:
            rec, text, given = started = self.start(i, row)
            ks, cuts = None, 0
            if text is not None:
                ks = []
                shared: dict[Any, tuple[list[dict[str, str]], bool]] = {}
                for j, client, group in groups:
                    if group not in shared:
                        shared[group] = self._messages(j, text, given)
                    msgs, cut = shared[group]
                    cuts += cut  # per judge, as the per-row path counts them
                    ks.append(client.key_for(msgs, self.kind))
                keys += ks
            prepared.append((started, ks, cuts))
        hits = self.cache.get_many(keys) if keys else {}
        rest, lines, hit_rows = [], [], 0
        names = [j.name for j in self.judges]
        clients = [self.clients[n] for n in names]
        # Without logprobs, equal replies are one shared answer object, so rows repeat a few answer
        # combinations: each is aggregated and serialised once (the memo holds its answers, so ids stay theirs).
        # (line_with needs a record without those fields: an id column named like one of them turns it off)
        plain = not self.p_cf and not any(j.logprobs for j in self.judges) and self.cfg.task.id_column not in OUTCOME
        memo = self._row_memo if plain else None
        for started, ks, cuts in prepared:  # a row handed on counts its cuts when it is asked
            rec, text, given = started
            if ks is None:
                lines.append(line(self.finish(rec, None)))
                continue
            try:
                got = [c.cached_answer(hits[k], self.kind) for c, k in zip(clients, ks)]
            except KeyError:  # not every answer is cached
                rest.append(started)
                continue
            if any(a is None for a in got):
                rest.append(started)
                continue
            hit_rows += 1
            self.truncated += cuts
            if memo is None:
                lines.append(line(self.finish(rec, {n: self._calibrated(n, a) for n, a in zip(names, got)})))  # type: ignore[arg-type]
                continue
            mkey = tuple(map(id, got))
            done = memo.get(mkey)
            if done is None:
                if len(memo) >= 4096:
                    memo.clear()
                out = self.outcome(dict(zip(names, got)))  # type: ignore[arg-type]
                done = memo[mkey] = (got, fields_json(out), out["error"])
            lines.append(line_with(rec, done[1]))
            self._count(done[2])
        part.append_lines(lines)
        for n in names:
            self.ledger.judges[n].cache_hits += hit_rows
        return rest, len(hits)

    def _helpers(
        self, stop: asyncio.Event, stopped_by: list[str], total: int, before: int
    ) -> list[asyncio.Future[None]]:
        """Tasks beside the rows: a watch on opts.cancel, and opts.on_progress on a timer."""
        opts, out = self.opts, []
        cancel, report = opts.cancel, opts.on_progress
        if cancel is not None:

            async def watch() -> None:
                while not cancel.is_set():
                    await asyncio.sleep(0.05)
                stopped_by.append("cancelled")
                self.budget.max_requests = 0  # nothing new is sent; requests in flight finish
                stop.set()

            out.append(asyncio.ensure_future(watch()))
        if report is not None:

            async def tick() -> None:
                while True:
                    await asyncio.sleep(opts.progress_every)
                    report(Progress(before + self.ledger.rows_done, total, self.ledger))

            out.append(asyncio.ensure_future(tick()))
        return out

    async def run(self, input_path: Path, part: PartFile, total: int) -> str | None:
        """Label every row not yet in the part file. Returns why it stopped early, or None."""
        window = asyncio.Semaphore(max(64, 2 * sum(j.concurrency for j in self.judges)))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        stopped_by: list[str] = []

        def on_signal(name: str) -> None:
            stopped_by.append(name)
            stop.set()

        installed = []
        for sig, name in ((signal.SIGINT, "interrupted (Ctrl-C)"), (signal.SIGTERM, "terminated")):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal, name)
                installed.append(sig)
        tasks: set[asyncio.Task[None]] = set()
        helpers = self._helpers(stop, stopped_by, total, len(part.done))
        bar = None
        if self.opts.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=total, initial=len(part.done), unit="row", dynamic_ncols=True, disable=None, file=sys.stderr
            )

        def finished(t: asyncio.Task[None]) -> None:
            tasks.discard(t)
            window.release()
            if t.cancelled():
                return
            exc = t.exception()
            if isinstance(exc, BudgetExhausted) and "cancelled" in stopped_by:
                pass  # the zero budget a cancel sets: the row is redone on the next run
            elif isinstance(exc, LLMLabelError):
                if self.fatal is None:
                    self.fatal = exc
                stop.set()
            elif exc is not None:
                if self.fatal is None:
                    self.fatal = exc  # type: ignore[assignment]
                stop.set()
            elif bar is not None:
                bar.update(1)
                if self.ledger.rows_done % 20 == 0:
                    bar.set_postfix_str(f"${self.ledger.cost:.4f}", refresh=False)

        # Rows are first looked up in the cache in bulk (chunks growing while they hit); the rest are asked.
        # A cold run stops looking ahead after its first chunk misses.
        cascade = self.cfg.cascade is not None and self.cfg.cascade.enabled and len(self.judges) > 1
        chunk: list[tuple[int, dict[str, Any]]] = []
        size = 0 if cascade else 64

        async def launch(rows: list[tuple[int, dict[str, Any]]]) -> bool:
            nonlocal size
            if size:
                started, found = self.from_cache(rows, part)
                if bar is not None and len(started) < len(rows):
                    bar.update(len(rows) - len(started))
                size = 0 if found < len(rows) * len(self.judges) // 2 else min(2 * size, 1024)
            else:
                started = [self.start(i, row) for i, row in rows]
            for st in started:
                await window.acquire()
                if stop.is_set():
                    window.release()
                    return False
                t = asyncio.ensure_future(self.process(st, part))
                tasks.add(t)
                t.add_done_callback(finished)
            return True

        try:
            if self.p_cf == {} and any(j.logprobs for j in self.judges):
                await self.calibrate()
            for i, row in enumerate(iter_rows(input_path)):
                if self.opts.limit is not None and i >= self.opts.limit:
                    break
                if stop.is_set():
                    break
                rid = row_id(row, self.cfg.task.id_column, i)
                if rid in part.done:
                    self.ledger.rows_skipped += 1
                    continue
                chunk.append((i, row))
                if len(chunk) >= max(size, 1):
                    rows, chunk = chunk, []
                    if not await launch(rows):
                        break
            if chunk and not stop.is_set():
                await launch(chunk)
            if tasks:
                waiter = asyncio.ensure_future(stop.wait())
                while tasks and not stop.is_set():
                    await asyncio.wait(set(tasks) | {waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            if stop.is_set() and tasks:
                # Budget stops let paid requests in flight finish; a dead judge or a signal cancels the rest.
                if (isinstance(self.fatal, BudgetExhausted) and not stopped_by) or stopped_by == ["cancelled"]:
                    await asyncio.wait(set(tasks), timeout=max(j.timeout for j in self.judges))
                for t in list(tasks):
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for h in helpers:
                h.cancel()
            if self.opts.on_progress is not None:
                self.opts.on_progress(Progress(len(part.done) + self.ledger.rows_done, total, self.ledger))
            if bar is not None:
                bar.close()
            for sig in installed:
                loop.remove_signal_handler(sig)
            for c in self.clients.values():
                await c.aclose()
        if self.fatal is not None and not isinstance(self.fatal, LLMLabelError):
            raise self.fatal
        if stopped_by:
            return stopped_by[0]
        return None


def _loop_factory() -> Any:
    """uvloop when installed (a faster event loop: less CPU per request at high concurrency), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _load_gold(path: str | None, id_column: str, label_column: str = "label") -> dict[str, str] | None:
    if not path:
        return None
    gold = {}
    for i, row in enumerate(iter_rows(path)):
        if label_column in row and row[label_column] not in (None, ""):
            gold[row_id(row, id_column, i)] = str(row[label_column])
    return gold


def run_job(cfg: Config, input_path: str | Path, output_path: str | Path, opts: RunOptions | None = None) -> RunResult:
    """Label a corpus file into an output file. Safe to rerun: finished rows are skipped, paid answers cached."""
    opts = opts or RunOptions()
    log = opts.log or sys.stderr
    input_path, output_path = Path(input_path), Path(output_path)
    input_format(output_path, "output")
    if output_path.resolve() == input_path.resolve():
        raise InputError(f"the output {output_path} is the input file; choose another -o path")
    task = cfg.task
    total = scan(
        input_path, task.text_column, task.id_column, opts.limit, id_required="id_column" in task.model_fields_set
    )
    if opts.given_label_column:
        first = next(iter_rows(input_path))
        if opts.given_label_column not in first:
            raise InputError(f"{input_path}: no label column '{opts.given_label_column}'; pass --label-column")
    part = PartFile(part_path(output_path))
    part.load()
    with judges_for(cfg) as judges:
        job = Job(cfg, judges, opts)
        try:
            part.open()
            stopped = None
            try:
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    stopped = runner.run(job.run(input_path, part, total))
            finally:
                part.close()
            fatal = job.fatal
            result = RunResult(output_path, 0, False, job.ledger)
            if job.truncated:
                result.warnings.append(f"{job.truncated} long texts were cut to the judges' max_text_tokens")
            if stopped or fatal is not None:
                result.stopped_by = stopped or str(fatal)
                job.ledger.save(ledger_path(output_path))
                if isinstance(fatal, LLMLabelError):
                    fatal.args = (
                        f"{fatal} ({job.ledger.rows_done} rows finished this run are kept in "
                        f"{part.path.name}; rerun the same command to continue)",
                    )
                    fatal.ledger = job.ledger  # type: ignore[attr-defined]
                    raise fatal
                return result
            # Every row is in: final aggregation over the whole job, written atomically.
            names = [j.name for j in judges]
            gold = _load_gold(cfg.gold, task.id_column)
            update, quality = refit(part.ordered, names, job.labels, cfg.aggregate, job.kind, gold)
            if update is None and output_path.suffix.lower() in (".jsonl", ".ndjson"):
                result.rows = write_jsonl_lines(output_path, part.ordered_raw())
            else:
                result.rows = write_output(output_path, part.ordered(update))
            result.complete, result.quality = True, quality
            job.ledger.save(ledger_path(output_path))
            _append_quality(ledger_path(output_path), quality)
            part.path.unlink(missing_ok=True)
            return result
        finally:
            job.cache.close()


def _append_quality(path: Path, quality: dict[str, Any]) -> None:
    if not quality:
        return
    import json

    data = json.loads(path.read_text())
    data["runs"][-1]["quality"] = quality
    path.write_text(json.dumps(data, indent=2))
