"""One labeling job's row machinery: a row in, its judges' answers, its output record out.

`RowLabeler` is shared by every way of running rows: files (`run_job`), memory (the Python API's `Labeler`), Ray
actors and the service's items, all through the local executor. A row's result is a `RowResult`
(llmlabel.results); io.records makes it an output record. It is given its response cache: whoever opens the
cache closes it (pipeline.lifecycle.Run for a file run). What belongs to one run (its ledger, budget, cut
texts, the error that stops it, a cache failure) is a `RunState` (pipeline.run_state), passed to every method
that asks or finishes rows: a file run, a Labeler call or a Ray actor uses the labeler's current one
(`run`, made anew by `use`), the server one per request (`new_run`), so concurrent requests never share one.
Other modules change the current run only through its methods (`fail`, `settle`, `count_truncated`, `use`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Iterable
from dataclasses import replace
from typing import Any, Protocol, TypeVar, cast

from llmlabel.config import Config, Judge, Task, samples_error
from llmlabel.ensemble.calibration import average_content_free, calibrate_answer
from llmlabel.ensemble.combine import combine_fits, combine_row, combine_samples
from llmlabel.ensemble.multilabel import SetPolicy, combine_sets
from llmlabel.errors import CacheError, ConfigError, LLMLabelError
from llmlabel.io.output import PERMANENT, fields_json, line, line_with
from llmlabel.io.records import OUTCOME_FIELDS, POSITION, head_record, outcome_record, to_record
from llmlabel.io.rows import row_id
from llmlabel.llm.answers import NO_FIT, JudgeAnswer
from llmlabel.llm.cache import CacheBackend
from llmlabel.llm.demos import DemoPool
from llmlabel.llm.encoding import message_json
from llmlabel.llm.judge import Budget, JudgeClient
from llmlabel.llm.ledger import Ledger
from llmlabel.llm.memo import Memo
from llmlabel.llm.prompts import Prompts, shortlist_kind
from llmlabel.llm.shortlist import Shortlister
from llmlabel.pipeline import taxonomy as taxonomy_rows
from llmlabel.pipeline.options import RunOptions
from llmlabel.pipeline.requests import Request, RequestPlan
from llmlabel.pipeline.run_state import RunState
from llmlabel.results import RowResult
from llmlabel.taxonomy import Taxonomy

OUTPUT_FIELDS = ("id", "label", "confidence", "probs", "candidates", "judges", "error")
OUTCOME = OUTPUT_FIELDS[1:]  # what a row's answers add to its record
# Input columns named like an output field keep their values under NAME_input: multi-label rows add `labels`
# (the set) and taxonomy rows `path`, `depth` and `level_confidence` (io.records reads a record by these names).
RESERVED = OUTCOME_FIELDS | {"id"}
INTERNAL = (POSITION,)  # a part-file record's own fields beside the output's (its input position, always first)


T = TypeVar("T")


async def together(asks: Iterable[Awaitable[T]]) -> list[T]:
    """A row's asks sent at once; their answers, or the first one's error, only once every one has ended. A stop
    fails the asks not yet sent at once: a plain gather would end the row then, and its asks already sent (paid
    for) would be cancelled with the run instead of answered and cached. Cancelling this cancels them all."""
    got = await asyncio.gather(*asks, return_exceptions=True)
    for g in got:
        if isinstance(g, BaseException):
            raise g
    return cast(list[T], got)


def output_names(columns: tuple[str, ...] | list[str], id_column: str) -> list[str]:
    """Each input column's name in the output: one named like an output field (or an internal one) gets the
    suffix `_input`, again until the name is free (`label` -> `label_input`; with a `label_input` column
    too, `label_input_input`). The id column keeps its name: its value becomes the output's `id`."""
    taken = set(columns)
    out = []
    for k in columns:
        name = k
        if k in INTERNAL or (k in RESERVED and k != id_column):
            name = f"{k}_input"
            while name in taken:
                name += "_input"
            taken.add(name)
        out.append(name)
    return out


def blank(text: str) -> bool:
    """Nothing to label: no character but whitespace, NULs, other control or invisible format characters
    (a zero-width space), which a model cannot read either."""
    if not text.strip():
        return True
    if text[0].isalnum():  # the common case, decided without a scan
        return False
    import unicodedata

    return all(unicodedata.category(c)[0] in "CZ" for c in text)


Started = tuple[RowResult, str | None, str | None]  # (the row's result so far, text to label, given label)


def text_of(
    row: dict[str, Any], i: int, task: Task, prompts_dir: str | None, prompts: Prompts | None = None
) -> str | None:
    """The row's text to label (through `prompts` when the caller keeps one); a text_column template that
    fails on it (`{{ 1/0 }}`) is one clear line."""
    try:
        return (prompts or Prompts(task, prompts_dir)).row_text(row)
    except LLMLabelError:
        raise
    except Exception as e:  # the template's own expressions may raise anything
        raise ConfigError(
            f"task.text_column template {task.text_column!r} failed on row {i + 1}: {type(e).__name__}: {e}; "
            "fix the template or the column names"
        ) from None


class Sink(Protocol):
    """Where finished rows go: a part file (io.output.PartFile) or a list in memory (pipeline.labeler)."""

    def append(self, rec: dict[str, Any]) -> None: ...

    def append_lines(self, lines: list[bytes]) -> None:
        """Rows already serialised (io.output.line / line_with), in one write."""


class RowLabeler:
    def __init__(self, cfg: Config, judges: list[Judge], opts: RunOptions, cache: CacheBackend) -> None:
        self.cfg, self.judges, self.opts = cfg, judges, opts
        self.labels = cfg.task.label_names
        self.kind = opts.kind or cfg.kind
        self.set_policy = SetPolicy(cfg.task.label_threshold, cfg.task.allow_empty)
        try:
            samples_error(judges, self.kind)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.cache = cache
        self.run = self.new_run()
        self.clients = {
            j.name: JudgeClient(
                j,
                self.cache,
                self.run.tallies[j.name].ledger,
                self.budget,
                self.labels,
                transport=opts.transport,
                multi_label=self.kind == "multilabel",
            )
            for j in judges
        }
        for name, client in self.clients.items():  # a client asked without a tally counts in the current run
            client.tally = self.run.tallies[name]
        self.weights = {j.name: j.weight for j in judges if j.weight is not None} or None
        self.p_cf: dict[str, dict[str, float]] = {}
        self.prompts = Prompts(cfg.task, cfg.prompts_dir)
        self.plan = RequestPlan(self)  # rows become requests there (every executor reads it)
        self._row_memo: Memo[tuple[int, ...], Any] = Memo(4096)
        # Without logprobs, equal replies are one shared answer object (JudgeClient._parse), so a row's line is
        # made from its answers' combination (`_shared_line`). (line_with needs a record without the outcome's
        # fields: an id column named like one of them turns it off.)
        self._shared_answers = not any(j.logprobs for j in judges) and cfg.task.id_column not in OUTCOME
        self._columns: Memo[tuple[str, ...], list[str]] = Memo(256)
        self.demos = DemoPool(cfg.task) if cfg.task.examples_file else None
        # A taxonomy job asks level by level (pipeline/taxonomy.py): its rows' own paths down the tree.
        self.taxonomy = Taxonomy.parse(cfg.task.taxonomy) if self.kind == "taxonomy" and cfg.task.taxonomy else None
        k = cfg.task.shortlist
        self.shortlister = None
        if k is not None and k < len(self.labels) and self.kind == "label":
            pool = list(zip(self.demos.texts, self.demos.labels)) if self.demos is not None else None
            self.shortlister = Shortlister(cfg.task, pool)
        # A cascade's first rows ask every judge (the probe); then judges found uninformative on them (one
        # label to everything, guessing) no longer end a row, for the job's life (a Labeler's later calls
        # too). A sure, stuck first judge would otherwise settle most rows alone (real_quality_modes:
        # SmolLM2 first, accuracy 0.025 on SMS and TREC).
        cascade = self.cfg.cascade
        probe = cascade is not None and cascade.enabled and cascade.probe_rows > 0
        self._probe: list[dict[str, JudgeAnswer]] | None = [] if probe else None
        self.distrusted: frozenset[str] = frozenset()
        self._calibration_done = False
        self._calibrating: asyncio.Lock | None = None
        # Per-label judges ask a row one question per label (combine_fits makes their answer), in a job of label
        # questions over the whole label set; elsewhere (candidate sets, verdicts) they are asked as usual.
        plain = self.kind == "label" and self.shortlister is None and self.taxonomy is None
        self.per_label = frozenset(j.name for j in judges if j.per_label and plain)
        # A row is one request to each judge, all at once (no samples, per-label questions, shortlist, taxonomy
        # or cascade): `process` sends them itself.
        self._flat = (
            all(j.samples == 1 for j in judges)
            and not self.per_label
            and self.shortlister is None
            and self.taxonomy is None
            and (len(judges) == 1 or not (cascade and cascade.enabled))
        )

    # -- runs --------------------------------------------------------------------------------
    def new_run(self, opts: RunOptions | None = None) -> RunState:
        """A run's own state (a fresh ledger, and a budget from `opts`' max_cost / max_requests, the labeler's
        options by default), not made the current run: the server gives each request one."""
        return RunState(self.judges, opts or self.opts)

    def use(self, opts: RunOptions) -> Ledger:
        """Start a new current run of this (long-lived: a Labeler's) labeler with other options: its kind and
        judges stay."""
        self.opts = opts
        self.run = self.new_run()
        for name, client in self.clients.items():  # a client asked without a tally counts in the current run
            client.tally = self.run.tallies[name]
        return self.run.ledger

    # The current run's state, read here by the engines that run one at a time (a file run, a Labeler, Ray).
    @property
    def ledger(self) -> Ledger:
        return self.run.ledger

    @property
    def budget(self) -> Budget:
        return self.run.budget

    @property
    def fatal(self) -> LLMLabelError | BaseException | None:
        """The error that stops the current run (a dead judge, the budget, a full disk), or None."""
        return self.run.fatal

    def fail(self, exc: BaseException) -> bool:
        """Stop the current run with `exc`, unless an earlier error already stops it. Whether `exc` is the one."""
        return self.run.fail(exc)

    def settle(self, cancelled: bool) -> None:
        """The current run's error once its rows stopped (RunState.settle)."""
        self.run.settle(cancelled)

    @property
    def truncated(self) -> int:
        """Texts cut to a judge's max_text_tokens in the current run."""
        return self.run.truncated

    def count_truncated(self, n: int) -> None:
        """Texts cut elsewhere for the current run (a Ray actor's)."""
        self.run.count_truncated(n)

    @property
    def cache_error(self) -> CacheError | None:
        """Why the response cache failed in the current run, or None."""
        return self.run.cache_error

    async def aclose(self) -> None:
        """Close the judges' connections (they reopen on the next request)."""
        for c in self.clients.values():
            await c.aclose()

    # -- prompts and answers -----------------------------------------------------------------
    def ask(self, req: Request, run: RunState | None = None) -> Coroutine[Any, Any, JudgeAnswer]:
        """Send one planned request (the local executor's one way out), counted in `run` (the current run by
        default): its judge's answer, uncalibrated. (The client's coroutine itself, not one more around it:
        this is once per request.)"""
        run = run or self.run
        run.truncated += req.cut
        return self.clients[req.judge].ask(req.messages, req.kind, req.sample, run.tallies[req.judge])

    def ask_many(self, reqs: Iterable[Request], run: RunState) -> Coroutine[Any, Any, list[JudgeAnswer]]:
        """A row's requests asked together (`together`): their answers, in order."""
        return together(self.ask(r, run) for r in reqs)

    async def _ask_shortlisted(self, j: Judge, text: str, given: str | None, run: RunState) -> JudgeAnswer:
        """One label among the text's nearest labels; on "none of these", among the next ones."""
        assert self.shortlister is not None
        ranked = self.shortlister.ranked(text)
        ans = JudgeAnswer(error=NO_FIT)
        for r in range(self.cfg.task.shortlist_rounds):
            choices = self.shortlister.shortlist(ranked, r)
            if not choices:
                break
            ans = await self.ask(self.plan.request(j, text, given, shortlist_kind(choices), stage=r), run)
            if ans.error != NO_FIT:
                return ans
        return ans

    async def calibrate(self, run: RunState | None = None) -> None:
        """Contextual calibration: the label bias of each logprob judge, measured on content-free inputs (its
        calls counted in `run`, the current run by default)."""
        for j in self.judges:
            if not j.logprobs:
                continue
            dists = []
            for req in self.plan.calibration(j):
                ans = await self.ask(req, run)
                if ans.probs:
                    dists.append(ans.probs)
            if dists:
                self.p_cf[j.name] = average_content_free(dists, self.labels)

    async def ensure_calibrated(self, run: RunState | None = None) -> None:
        """Calibrate once per job (the content-free answers are cached, so later jobs pay nothing): every way
        of running rows starts calibration here (the local executor, the Ray executor before its actors, the
        service's items; concurrent callers wait for one calibration)."""
        if self._calibration_done or not self.calibrates():
            return
        if self._calibrating is None:
            self._calibrating = asyncio.Lock()
        async with self._calibrating:
            if not self._calibration_done:
                await self.calibrate(run)
                self._calibration_done = True

    def calibrates(self) -> bool:
        """Whether the job is calibrated: a logprob judge on a fixed label set (a multi-label answer, a
        shortlist's or a taxonomy level's has no fixed label set to measure a bias over)."""
        return (
            any(j.logprobs for j in self.judges)
            and self.kind != "multilabel"
            and not self.shortlister
            and not self.taxonomy
        )

    def batch_calibrated(self) -> dict[str, dict[str, float] | None]:
        """The judges the whole-job refit batch-calibrates (ensemble.combine.BatchFit), each with its content-free
        distribution (None: it has none): those with batch_calibration, in a calibrated job of one label a text
        (config refuses the option elsewhere; an embedded judge's default is left off there)."""
        if self.kind != "label" or not self.calibrates():
            return {}
        return {j.name: self.p_cf.get(j.name) for j in self.judges if j.batch_calibration and j.logprobs}

    def _calibrated(self, name: str, ans: JudgeAnswer) -> JudgeAnswer:
        return calibrate_answer(ans, self.p_cf.get(name))

    async def _ask(self, j: Judge, text: str, given: str | None, run: RunState) -> JudgeAnswer:
        """The judge's (calibrated) answer; with `samples` > 1, its samples asked together and combined."""
        if self.shortlister is not None:
            return await self._ask_shortlisted(j, text, given, run)
        if j.name in self.per_label:
            reqs = self.plan.fits(j, text, given)
            run.truncated += reqs[0].cut  # (once a judge, as for samples)
            got = await self.ask_many((replace(r, cut=False) for r in reqs), run)
            return combine_fits(got, self.labels)
        req = self.plan.request(j, text, given)
        if j.samples == 1:
            return self._calibrated(j.name, await self.ask(req, run))
        run.truncated += req.cut  # (once a judge, as the cache pass counts it)
        reqs = [replace(req, sample=s, cut=False) for s in range(j.samples)]
        return self._voted(j, await self.ask_many(reqs, run))

    def _voted(self, j: Judge, samples: list[JudgeAnswer]) -> JudgeAnswer:
        return combine_samples([self._calibrated(j.name, a) for a in samples], self.labels)

    def _answers(self, got: list[JudgeAnswer]) -> dict[str, JudgeAnswer]:
        """Each judge's (calibrated) answer from its cached answers (`got`: judge after judge, each judge's
        samples in order; one each without self-consistency)."""
        out, at = {}, 0
        for j in self.judges:
            part, at = got[at : at + j.samples], at + j.samples
            out[j.name] = self._calibrated(j.name, part[0]) if j.samples == 1 else self._voted(j, part)
        return out

    async def ask_all(self, text: str, given: str | None, run: RunState | None = None) -> dict[str, JudgeAnswer]:
        """Every judge's (calibrated) answer for one text: together, or in turn for a cascade (counted in `run`,
        the current run by default)."""
        run = run or self.run
        if self.taxonomy is not None:
            return await taxonomy_rows.ask(self, self.taxonomy, text, given, run)
        if len(self.judges) == 1:
            j = self.judges[0]
            return {j.name: await self._ask(j, text, given, run)}
        cascade = self.cfg.cascade
        if not (cascade and cascade.enabled):
            res = await together(self._ask(j, text, given, run) for j in self.judges)
            return {j.name: a for j, a in zip(self.judges, res)}
        return await self._ask_cascade(text, given, cascade.threshold, run)

    async def _ask_cascade(
        self, text: str, given: str | None, threshold: float, run: RunState
    ) -> dict[str, JudgeAnswer]:
        """Judges in order, stopping once the trusted answers so far agree confidently enough (every judge
        while the probe runs)."""
        answers: dict[str, JudgeAnswer] = {}
        probing = self._probe is not None
        for n, j in enumerate(self.judges):
            answers[j.name] = await self._ask(j, text, given, run)
            if probing or n == len(self.judges) - 1:
                continue
            trusted = {k: a for k, a in answers.items() if k not in self.distrusted}
            valid = [a for a in trusted.values() if a.label is not None]
            if not valid:
                continue
            agg = combine_row(trusted, self.labels, self.kind, self.weights)
            agree = len({a.label for a in valid}) == 1
            sure = len(valid) >= 2 or valid[0].probs is not None
            if agree and sure and (agg.confidence or 0) >= threshold:
                for rest in self.judges[n + 1 :]:
                    run.ledger.judges[rest.name].calls_saved += 1
                break
        if probing:
            self._probed(answers)
        return answers

    def _probed(self, answers: dict[str, JudgeAnswer]) -> None:
        """One more row that every judge answered; at `cascade.probe_rows`, the judges left out of ending rows."""
        cascade = self.cfg.cascade
        if self._probe is None or cascade is None:
            return  # rows that started during the probe and finished after it
        self._probe.append(answers)
        if len(self._probe) < cascade.probe_rows:
            return
        from llmlabel.ensemble.judges import uninformative
        from llmlabel.ensemble.votes import VoteMatrix

        names = [j.name for j in self.judges]
        votes = VoteMatrix.from_results((RowResult("", judges=row) for row in self._probe), names, self.labels)
        out = uninformative(votes.codes, len(self.labels))
        self.distrusted = frozenset(j.name for j, bad in zip(self.judges, out) if bad)
        self._probe = None

    # -- rows --------------------------------------------------------------------------------
    def start(self, i: int, row: dict[str, Any]) -> Started:
        """A row's result so far (its input columns and id), its text to label (None: nothing to label, the
        result says why) and its given label."""
        task = self.cfg.task
        columns = tuple(row)
        names = self._columns.get(columns)  # inputs repeat their columns: renamed once per header
        if names is None:
            names = self._columns.put(columns, output_names(columns, task.id_column))
        res = RowResult.make(
            row_id(row, task.id_column, i), kind=self.kind, position=i, inputs=dict(zip(names, row.values()))
        )
        text = text_of(row, i, task, self.cfg.prompts_dir, self.prompts)
        if text is None or blank(text):
            error = f"{PERMANENT}: nothing to label in '{task.text_column}'"
            return res.evolve(asked=False, error=error), None, None
        given = None
        if self.opts.given_label_column:
            gv = row.get(self.opts.given_label_column)
            given = None if gv is None else str(gv)
        return res, text, given

    def result(self, start: RowResult, answers: dict[str, JudgeAnswer]) -> RowResult:
        """The row's result from its judges' answers: the ensemble's decision, with the answers."""
        if self.taxonomy is not None:
            return taxonomy_rows.result(self, self.taxonomy, start, answers)
        if self.kind == "multilabel":
            return start.decided(combine_sets(answers, self.labels, self.set_policy, self.weights), answers)
        return start.decided(combine_row(answers, self.labels, self.kind, self.weights), answers)

    def finish(
        self, start: RowResult, answers: dict[str, JudgeAnswer] | None, run: RunState | None = None
    ) -> RowResult:
        """Complete a row's result and count it done in `run` (the current run by default; the caller appends it)."""
        res = start if answers is None else self.result(start, answers)
        self._count(res.error, run or self.run)
        return res

    @staticmethod
    def _count(error: str | None, run: RunState) -> None:
        run.ledger.rows_done += 1
        if error and not error.startswith(PERMANENT):
            run.ledger.rows_failed += 1

    async def process(self, started: Started, sink: Sink, run: RunState) -> None:
        res, text, given = started
        if text is None:
            answers = None
        elif self._flat:
            # Each judge's one request, its client's coroutine awaited here: one coroutine a row instead of
            # process -> ask_all -> _ask around every request (-47 bytecodes a request, results_model.md).
            judges = self.judges
            if len(judges) == 1:
                got = [await self.ask(self.plan.request(judges[0], text, given), run)]
            else:
                got = await self.ask_many((self.plan.request(j, text, given) for j in judges), run)
            if self._shared_answers:
                sink.append_lines([self._shared_line(res, got, run)])
                return
            answers = self._answers(got)
        else:
            answers = await self.ask_all(text, given, run)
        sink.append(to_record(self.finish(res, answers, run)))

    # -- the bulk cache pass -----------------------------------------------------------------
    def from_cache(
        self, rows: list[tuple[int, dict[str, Any]]], sink: Sink, run: RunState | None = None
    ) -> tuple[list[Started], int]:
        """Finish, synchronously, the rows whose every judge answer is already cached: one bulk lookup for
        the chunk, no tasks, no awaits (a warm rerun is all lookups), counted in `run` (the current run by
        default). Returns the other rows, started, and how many keys were found."""
        run = run or self.run
        if self.taxonomy is not None:
            return taxonomy_rows.from_cache(self, self.taxonomy, rows, sink, run)
        if self.per_label:  # K questions a row: its rows are asked one by one, their cached answers found there
            return [self.start(i, row) for i, row in rows], 0
        prepared, keys = self._cache_keys(rows)
        try:
            hits = self.cache.get_many(keys) if keys else {}
        except CacheError as e:  # handed back unasked (a file run's drive starts no row once the cache failed)
            run.cache_failed(e)
            return [p[0] for p in prepared], 0
        rest, lines, hit_rows = self._finish_cached(prepared, hits, run)
        sink.append_lines(lines)
        for j in self.judges:
            run.ledger.judges[j.name].cache_hits += hit_rows * j.samples
        return rest, len(hits)

    def _cache_keys(self, rows: list[tuple[int, dict[str, Any]]]) -> tuple[list[Any], list[str]]:
        """Each row started, with its judges' cache keys (None: nothing to ask) and its cut count. A judge
        with `samples` > 1 has a key per sample: a row is finished here only when every sample is cached."""
        started = [self.start(i, row) for i, row in rows]
        asked = [s for s in started if s[1] is not None]
        # Judges with the same prompt and text limit send the same messages: rendered once a row, and each
        # judge's keys computed for the whole chunk (RequestEncoder.keys_for).
        groups: dict[Any, list[Judge]] = {}
        for j in self.judges:
            groups.setdefault((j.prompt, j.max_text_tokens, self.clients[j.name].codes is not None), []).append(j)
        by_judge: dict[str, list[list[str]]] = {}
        cuts = [0] * len(asked)
        # A shortlisted task asks each row its own first shortlist: keys one by one (no shared frame to reuse).
        kinds = [self.plan.first_kind(text) for _, text, _ in asked] if self.shortlister else None  # type: ignore[arg-type]
        for judges in groups.values():
            rendered = [
                self.plan.messages(judges[0], text, given, kinds[n] if kinds else None)  # type: ignore[arg-type]
                for n, (_, text, given) in enumerate(asked)
            ]
            batch = [msgs for msgs, _ in rendered]
            tails = [message_json(msgs[-1]) for msgs in batch]
            for n, (_, cut) in enumerate(rendered):
                cuts[n] += cut * len(judges)  # per judge, as the per-row path counts them
            for j in judges:
                c = self.clients[j.name]
                if kinds is None:
                    by_judge[j.name] = [c.keys_for(batch, self.kind, tails, s) for s in range(j.samples)]
                else:
                    by_judge[j.name] = [[c.key_for(m, kd, s) for m, kd in zip(batch, kinds)] for s in range(j.samples)]
        per_row = iter(
            zip(*(ks for j in self.judges for ks in by_judge[j.name]), cuts, kinds or [self.kind] * len(asked))
        )
        prepared: list[Any] = []
        keys: list[str] = []
        for st in started:
            if st[1] is None:
                prepared.append((st, None, 0, self.kind))
                continue
            *ks, cut, kind = next(per_row)
            keys += ks
            prepared.append((st, ks, cut, kind))
        return prepared, keys

    def _finish_cached(
        self, prepared: list[Any], hits: dict[str, Any], run: RunState
    ) -> tuple[list[Started], list[bytes], int]:
        """Lines of the rows answered by `hits`, the rows that are not, and how many rows hit."""
        rest, lines, hit_rows = [], [], 0
        clients = [self.clients[j.name] for j in self.judges for _ in range(j.samples)]  # one per answer asked
        plain = self._shared_answers
        for started, ks, cuts, kind in prepared:  # a row handed on counts its cuts when it is asked
            res = started[0]
            if ks is None:
                lines.append(line(to_record(self.finish(res, None, run))))
                continue
            try:
                got = [c.cached_answer(hits[k], kind) for c, k in zip(clients, ks)]
            except KeyError:  # not every answer is cached
                rest.append(started)
                continue
            # (a shortlist answered "none of these": the row's next shortlist is asked on the per-row path)
            if any(a is None or a.error == NO_FIT for a in got):
                rest.append(started)
                continue
            hit_rows += 1
            run.truncated += cuts
            if plain:
                lines.append(self._shared_line(res, got, run))  # type: ignore[arg-type]
            else:
                lines.append(line(to_record(self.finish(res, self._answers(got), run))))  # type: ignore[arg-type]
        return rest, lines, hit_rows

    def _shared_line(self, res: RowResult, got: list[JudgeAnswer], run: RunState) -> bytes:
        """The row's line from its judges' answers (`got`, as in `_answers`) when they are shared objects
        (`_shared_answers`), counted done in `run`. Rows repeat a few answer combinations: each is aggregated and
        serialised once (the memo holds its answers, so their ids stay theirs), in the bulk cache pass and for the
        rows `process` asks (there: 9,426 -> 8,732 bytecodes a request at zero latency, results_model.md)."""
        mkey = tuple(map(id, got))  # a judge's samples: their shared answers, so rows still repeat
        done = self._row_memo.get(mkey)
        if done is None:
            out = self.result(res, self._answers(got))
            done = self._row_memo.put(mkey, (got, fields_json(outcome_record(out)), out.error))
        self._count(done[2], run)
        return line_with(head_record(res), done[1])
