"""`llmlabel label --batch`: the requests a run would send, bought through the Batch API at its lower price.

Every request missing from the response cache (the job's RequestPlan.pending; deduplicated: the custom_id is
the cache key) goes into JSONL batch files, per judge and stage, split at the provider's limits. A row's
questions that depend on its earlier answers come in later stages: a shortlist's next round after "none of
these", a taxonomy's next level; each stage is bought once the one before is collected (a taxonomy of depth 3
takes three batch rounds, one after the other). A journal beside the output (OUTPUT.batch.json,
written atomically) records each batch before it is created and again once it exists, and every batch
carries metadata naming this job: a rerun re-attaches to its batches (also to one created just before a kill
that left no journal line, found through the batch list) instead of paying for them again.

Collected answers are validated like online answers and stored in the same cache under the same keys; once no
batch runs, the executor writes the rows from them into the run's part file itself, as a local run writes a
warm cache's rows (the bulk cache pass), inside the same `Run` (one lock, one part file, one finish). What no
batch answered (an invalid answer, a failed line, a line of an expired or cancelled batch) is asked again in a
smaller batch (`fallback="batch"`, at most `MAX_ROUNDS` batches per judge, stage and run) and then online, those
rows only, by the local executor in the same run, where an invalid answer also gets the online re-ask."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlabel.config import Config
from llmlabel.io.ledger_file import LedgerLog, now
from llmlabel.io.paths import ledger_path
from llmlabel.llm.answers import read_completion
from llmlabel.llm.batch_api import TERMINAL, BatchAPI, batch_prices
from llmlabel.llm.judge import JudgeClient
from llmlabel.pipeline import inflight
from llmlabel.pipeline.batch_journal import api_for, apply_status, load_journal, run_tag, save_journal
from llmlabel.pipeline.drive import pending_rows, row_by_row
from llmlabel.pipeline.executors import Executor, LocalExecutor, Rows, RowSource
from llmlabel.pipeline.fingerprint import fingerprint
from llmlabel.pipeline.lifecycle import Run, check_run
from llmlabel.pipeline.options import RunOptions, RunResult
from llmlabel.pipeline.progress import Reporter
from llmlabel.pipeline.requests import CHUNK, Request
from llmlabel.pipeline.row_labeler import RowLabeler, Sink, Started
from llmlabel.pipeline.run import closing_judges, loop_factory

MAX_LINES = 50_000  # the OpenAI Batch API's limits per input file
MAX_BYTES = 200 * 1024 * 1024
MAX_ROUNDS = 3


@dataclass
class BatchOptions:
    wait: bool = True  # False: submit and return (a rerun collects)
    fallback: str = "batch"  # "batch": retry missing lines in new batches; "online": ask them online
    max_lines: int | None = None  # requests per batch file (default: the judge's batch_max_requests)
    max_bytes: int | None = None  # bytes per batch file (default: the judge's batch_max_bytes)
    poll: float = field(default_factory=lambda: float(os.environ.get("LLMLABEL_BATCH_POLL", "5")))
    transport: Any = None  # an httpx transport for the batch endpoints (tests)


@dataclass
class BatchResult:
    submitted: int = 0  # batches created this run
    attached: int = 0  # batches of an earlier run re-attached to
    collected: int = 0  # answers stored in the cache this run
    failed: int = 0  # lines that came back with an error (left for a retry)
    invalid: int = 0  # answers that did not validate (left for the online re-ask)
    pending: int = 0  # batches still running when the run returned (--no-wait)
    run: RunResult | None = None


# -- requests --------------------------------------------------------------------------------
def missing_requests(labeler: RowLabeler, rows: Rows) -> list[Request]:
    """The requests (encoded, one per cache key) a run of the job would pay for next: the calibration prompts
    and each row's first question not answered in the cache (RequestPlan.pending: a shortlist's next round, a
    taxonomy's next level; every judge of a cascade)."""
    wanted: dict[str, Request] = {}
    if labeler.calibrates():
        calibration = [labeler.plan.encode(r) for r in labeler.plan.calibration()]
        hits = labeler.cache.get_many([r.key for r in calibration])
        wanted.update((r.key, r) for r in calibration if r.key not in hits)
    for r in labeler.plan.pending(rows):
        wanted.setdefault(r.key, r)
    return list(wanted.values())


def batch_files(reqs: dict[str, bytes], max_lines: int, max_bytes: int) -> list[tuple[list[str], bytes]]:
    """JSONL batch input files (keys, content), each within the line and byte limits."""
    files: list[tuple[list[str], bytes]] = []
    keys: list[str] = []
    lines: list[bytes] = []
    size = 0
    for key, data in reqs.items():
        line = b'{"custom_id":"%s","method":"POST","url":"/v1/chat/completions","body":%s}\n' % (key.encode(), data)
        if keys and (len(keys) >= max_lines or size + len(line) > max_bytes):
            files.append((keys, b"".join(lines)))
            keys, lines, size = [], [], 0
        keys.append(key)
        lines.append(line)
        size += len(line)
    if keys:
        files.append((keys, b"".join(lines)))
    return files


# -- the flow --------------------------------------------------------------------------------
class BatchExecutor(Executor):
    """The Batch API as an executor: the pending requests of the rows (RequestPlan.pending) bought in batch files,
    stage after stage (a shortlist's next round, a taxonomy's next level, once the stage before is collected),
    until none is missing or running. Answers go into the response cache under the keys an online run looks
    up, and from there the rows go into the sink (`write`): no second run."""

    name = "batch"
    labeler: RowLabeler

    def __init__(self, output: Path, tag: str, bopts: BatchOptions, echo: Callable[[str], None]) -> None:
        self.output, self.tag, self.bopts, self.echo = output, tag, bopts, echo
        self.journal = load_journal(output)
        if self.journal.get("job") not in (None, tag):  # another input or other settings: a new job
            self.journal = {"job": tag, "batches": [e for e in self.journal["batches"] if not _done(e)]}
        self.journal["job"] = tag
        self.result = BatchResult()
        self.rounds: dict[tuple[str, int], int] = {}  # (judge, stage) -> batches submitted this run
        self.split: dict[str, int] = {}  # judge -> lines per file after a batch failed as a whole
        self.tokens: dict[str, list[int]] = {}  # judge -> [lines, input tokens, output tokens] this run
        self.log = LedgerLog(ledger_path(output), uuid.uuid4().hex[:12])  # the batch spend, as it is collected
        self.logged = False
        self.warned = False  # said once: requests left to another output's batches

    async def execute(self, labeler: RowLabeler, source: RowSource, sink: Sink) -> str | None:
        """Submit, poll and collect until no batch runs, then write the rows into `sink`. Returns why it stopped
        early: batches still running (no wait; no row written), rows left to other outputs' batches, or the
        local executor's reason for the rows asked online."""
        self.labeler = labeler
        self.reattach()
        delay = self.bopts.poll
        while True:
            running = self.refresh()
            await self.collect()
            if _submit_missing(self, source, running):
                continue  # the new batches' status first
            if not running:
                return await self.write(labeler, source, sink)
            self.progress()
            if not self.bopts.wait:
                self.result.pending = len(running)
                self.echo(f"llmlabel: {len(running)} batches running; rerun the same command to collect them")
                return f"{len(running)} batches running"
            await asyncio.sleep(delay)
            delay = min(60.0, delay * 1.5)

    async def write(self, labeler: RowLabeler, source: RowSource, sink: Sink) -> str | None:
        """The rows into `sink` once no batch runs, from the answers the batches put in the cache: the bulk cache
        pass of a local run (RowLabeler.from_cache, chunk by chunk), and a row whose later stages are cached too
        (a shortlist's round after "none of these"; every row of a cascade) on its own path, also from the cache.
        The rows with an answer still missing (lines no batch answered after the last retry, `fallback="online"`,
        invalid answers) are asked online by the local executor, those rows only, in this same run; the rows other
        outputs' batches hold are left to them (the run ends unfinished, as an online run does)."""
        if labeler.ledger.log_target is None:  # (a run_batch run's ledger is logged from its first row: one
            labeler.ledger.record(ledger_path(self.output))  # that only submits batches adds no run to it)
        await labeler.ensure_calibrated()  # (its content-free answers were bought with the first stage)
        flight = inflight.in_flight(labeler.cfg.cache_dir, self.output)  # other outputs' batches still running
        rows = iter(inflight.leave_to_batches(labeler, source.read(), flight))
        progress = Reporter(labeler.opts, labeler.ledger, source.total, source.done_before)
        online: set[int] = set()  # positions of the rows to ask online
        try:
            while chunk := list(itertools.islice(rows, CHUNK)):
                if row_by_row(labeler):
                    rest = [labeler.start(i, row) for i, row in chunk]
                else:
                    rest, _ = labeler.from_cache(chunk, sink)
                    progress.rows_done(len(chunk) - len(rest))
                if labeler.cache_error is not None:
                    break  # the run stops with the cache's line (settle); its rows so far are kept
                await self._from_cache_by_row(labeler, chunk, rest, sink, progress, online)
        finally:
            progress.close(finished=not online and labeler.cache_error is None)
        if not online or labeler.cache_error is not None:
            labeler.settle(cancelled=False)
            return flight.stop_reason(self.output)
        self.echo(f"llmlabel: {len(online):,} rows have answers no batch gave: asking them online")
        todo = RowSource(lambda: (r for r in source.read() if r[0] in online), source.total, source.done_before)
        stopped = await LocalExecutor().execute(labeler, todo, sink)
        return stopped or flight.stop_reason(self.output)

    async def _from_cache_by_row(
        self,
        labeler: RowLabeler,
        chunk: list[tuple[int, dict[str, Any]]],
        rest: list[Started],
        sink: Sink,
        progress: Reporter,
        online: set[int],
    ) -> None:
        """The rows of `chunk` the bulk pass left (`rest`): those with every stage answered in the cache on the
        per-row path (which then reads only the cache); the others' positions into `online`."""
        if not rest:
            return
        left = {st[0].position for st in rest}
        need = {r.row for r in labeler.plan.pending(item for item in chunk if item[0] in left)}
        for st in rest:
            if st[0].position in need:
                online.add(st[0].position)  # type: ignore[arg-type]
                continue
            await labeler.process(st, sink, labeler.run)  # (every answer it reads is cached: nothing is sent)
            progress.row_done()

    def _api(self, entry: dict[str, Any]) -> BatchAPI:
        return api_for(entry, self.bopts.transport)

    def save(self) -> None:
        save_journal(self.output, self.journal)

    def reattach(self) -> None:
        """Journal entries written before a batch was created: the batch list says whether it exists."""
        lost = [e for e in self.journal["batches"] if not e.get("batch_id")]
        if not lost:
            return
        by_local: dict[str, dict[str, Any]] = {}
        for base in {e["base_url"] for e in lost}:
            api = self._api(next(e for e in lost if e["base_url"] == base))
            try:
                for b in api.list_batches():
                    meta = b.get("metadata") or {}
                    if meta.get("llmlabel_job") == self.tag and meta.get("llmlabel_local"):
                        by_local[meta["llmlabel_local"]] = b
            finally:
                api.close()
        kept = []
        for e in self.journal["batches"]:
            if not e.get("batch_id"):
                found = by_local.get(e["local"])
                if found is None:
                    inflight.forget(self.labeler.cfg.cache_dir, e["local"])
                    continue  # never created: its requests are still missing and go into a new batch
                e["batch_id"] = found["id"]
                apply_status(e, found)
                self.result.attached += 1
            kept.append(e)
        self.journal["batches"] = kept
        self.save()

    def submit(self, judge_name: str, stage: int, reqs: dict[str, Request]) -> None:
        """Batches of one judge's requests of one stage (a round of a shortlist, a level of a taxonomy)."""
        client: JudgeClient = self.labeler.clients[judge_name]
        j = client.judge
        lines = self.bopts.max_lines or j.batch_max_requests
        lines = min(lines, self.split.get(judge_name, lines))
        bodies = {k: r.body for k, r in reqs.items()}
        for keys, content in batch_files(bodies, lines, self.bopts.max_bytes or j.batch_max_bytes):
            local = uuid.uuid4().hex
            entry = {
                "local": local,
                "judge": judge_name,
                "base_url": client.endpoint,
                "key_env": j.api_key_env,
                "keys": keys,
                "batch_id": None,
                "status": "creating",
                "collected": False,
                "stage": stage,
                # the prompt kind of each request not of the job's kind (a shortlist's, a taxonomy level's):
                # its answer is validated against that kind's labels when collected
                "kinds": {k: reqs[k].kind for k in keys if reqs[k].kind != self.labeler.kind},
            }
            inflight.record(self.labeler.cfg.cache_dir, local, self.output, judge_name, keys)  # (for other outputs)
            self.journal["batches"].append(entry)
            self.save()  # before the batch exists: a kill now leaves a line the batch list resolves
            api = self._api(entry)
            try:
                fid = api.upload(f"llmlabel-{local}.jsonl", content)
                meta = {"llmlabel_job": self.tag, "llmlabel_local": local, "llmlabel_output": self.output.name}
                b = api.create(fid, meta)
            finally:
                api.close()
            entry.update(batch_id=b["id"], status=b.get("status", "validating"))
            self.save()
            inflight.created(self.labeler.cfg.cache_dir, local, b["id"])
            self.result.submitted += 1
            self.echo(f"llmlabel: batch {b['id']} submitted for judge '{judge_name}': {len(keys):,} requests")

    def refresh(self) -> list[dict[str, Any]]:
        """Update the running batches' statuses; returns those still running."""
        running = []
        for e in self.journal["batches"]:
            if _done(e):
                continue  # (an uncollected batch is read again even when its recorded status is terminal: that
                # status may have been written without its output file, by another command or version)
            api = self._api(e)
            try:
                b = api.get(e["batch_id"])
            finally:
                api.close()
            apply_status(e, b)
            if e["status"] not in TERMINAL:
                running.append(e)
        self.save()
        return running

    async def collect(self) -> None:
        """Store the answers of every finished batch not yet collected (expired ones keep their finished lines)."""
        for e in self.journal["batches"]:
            if _done(e) or e.get("status") not in TERMINAL:
                continue
            api = self._api(e)
            try:
                out = api.content(e["output_file_id"]) if e.get("output_file_id") else []
                errs = api.content(e["error_file_id"]) if e.get("error_file_id") else []
            finally:
                api.close()
            await self._store(e, out)
            if e["status"] == "failed" and not out and len(e["keys"]) > 1:
                self._split(e)
            self.result.failed += len(errs)
            if e["status"] != "completed":
                self.echo(
                    f"llmlabel: batch {e['batch_id']} {e['status']}: {len(out):,} of {len(e['keys']):,} lines "
                    "answered; the rest are asked again"
                )
            e["collected"] = True
            e.pop("keys", None)
            e.pop("kinds", None)  # answered keys are in the cache; missing ones are found again from the input
            self.save()
            inflight.forget(self.labeler.cfg.cache_dir, e["local"])

    def _split(self, e: dict[str, Any]) -> None:
        """A batch that failed as a whole (too large, over the queued-token limit): its lines go again in
        batches half its size, in a round of their own."""
        half = max(1, len(e["keys"]) // 2)
        self.split[e["judge"]] = min(self.split.get(e["judge"], half), half)
        stage = (e["judge"], int(e.get("stage") or 0))
        self.rounds[stage] = max(0, self.rounds.get(stage, 0) - 1)
        why = "; ".join(e.get("errors") or []) or "no reason given"
        self.echo(f"llmlabel: batch {e['batch_id']} failed ({why}): resubmitting its lines in batches of {half:,}")

    async def _store(self, e: dict[str, Any], lines: list[dict[str, Any]]) -> None:
        client = self.labeler.clients[e["judge"]]
        wanted, kinds = set(e["keys"]), e.get("kinds") or {}
        good: list[tuple[str, dict[str, Any]]] = []
        paid = [0, 0, 0]  # this batch's answered lines and tokens
        for line in lines:
            key, resp = str(line.get("custom_id")), line.get("response") or {}
            if key not in wanted or resp.get("status_code") != 200:
                self.result.failed += key in wanted
                continue
            kind = kinds.get(key, self.labeler.kind)
            payload = read_completion(json.dumps(resp.get("body")).encode(), client.code_mode(kind))
            paid[0] += 1
            paid[1] += payload["usage"].get("prompt_tokens", 0)
            paid[2] += payload["usage"].get("completion_tokens", 0)
            if client.cached_answer(payload, kind) is None:
                self.result.invalid += 1  # asked again online, with the re-ask, by the run that writes the output
                continue
            good.append((key, payload))
        tally = self.tokens.setdefault(e["judge"], [0, 0, 0])
        for i in range(3):
            tally[i] += paid[i]
        self._log_spend(e["judge"], e["batch_id"], paid)
        await _store_all(self.labeler, good)
        self.result.collected += len(good)

    def _log_spend(self, judge: str, batch_id: str, paid: list[int]) -> None:
        """The ledger log's line for a collected batch (before its answers are stored: paid is paid)."""
        if not paid[0]:
            return
        if not self.logged:
            self.log.write({"start": {"started": now(), "kind": "batch"}})
            self.logged = True
        pin, pout = batch_prices(self.labeler.clients[judge].judge)
        lines, tin, tout = paid
        spend = {"lines": lines, "input_tokens": tin, "output_tokens": tout}
        price = {"price_batch_input": pin, "price_batch_output": pout}
        self.log.write({"batch": {judge: {**spend, **price}}, "batch_id": batch_id})

    def end(self) -> None:
        if self.logged:
            self.log.write({"end": "finished"})
        self.log.close()

    def progress(self) -> None:
        bs = self.journal["batches"]
        done = sum(int((e.get("counts") or {}).get("completed", 0)) for e in bs if not _done(e))
        failed = sum(int((e.get("counts") or {}).get("failed", 0)) for e in bs if not _done(e))
        total = sum(int((e.get("counts") or {}).get("total", 0)) for e in bs if not _done(e))
        running = sum(1 for e in bs if not _done(e) and e.get("status") not in TERMINAL)
        self.echo(
            f"llmlabel: batch: {running} running, {done:,}/{total:,} lines done, {failed:,} failed, "
            f"${self.cost():.4f} collected so far"
        )

    def cost(self) -> float:
        total = 0.0
        for name, (_, tin, tout) in self.tokens.items():
            pin, pout = batch_prices(self.labeler.clients[name].judge)
            total += (tin * pin + tout * pout) / 1e6
        return total


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _done(e: dict[str, Any]) -> bool:
    return bool(e.get("collected"))


async def _store_all(labeler: RowLabeler, items: list[tuple[str, dict[str, Any]]]) -> None:
    # One writer thread commits what has queued up in one transaction (not one commit per answer).
    await asyncio.gather(*(labeler.cache.aset(k, v) for k, v in items))


def run_batch(
    cfg: Config,
    input_path: str | Path,
    output_path: str | Path,
    opts: RunOptions | None = None,
    bopts: BatchOptions | None = None,
) -> BatchResult:
    """Buy the job's missing answers in batches and (once none is running) write the output from them, in one
    run: one lock, one part file, one finish. With `bopts.wait=False` it returns after submitting (a rerun
    collects); the part file then waits, with no row and no ledger run of its own, for that rerun."""
    opts, bopts = opts or RunOptions(), bopts or BatchOptions()
    echo = opts.echo or (_stderr if opts.progress else lambda s: None)
    checked = check_run(cfg, input_path, output_path, opts)
    with Run(cfg, checked, opts) as run:
        labeler = run.labeler
        fp = fingerprint(labeler, checked.input)
        part = run.open_part(run.typed(fp, checked.input), checked.input, record=False)  # (recorded by `write`)
        flow = BatchExecutor(checked.output, run_tag(fp, checked.output), bopts, echo)
        reads = itertools.count()
        # The rows not in the part file yet; those that are count as skipped once (the source is read once per
        # stage, and once more to write the rows).
        source = RowSource(
            lambda: pending_rows(labeler, checked.input, part.done, count=next(reads) == 0),
            checked.total,
            len(part.done),
            checked.input,
        )
        try:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                stopped = runner.run(closing_judges(run, flow.execute(labeler, source, part)))
        finally:
            part.close()
            flow.end()  # (the batch spend's ledger run ends before the run that wrote the rows is saved)
        if flow.result.pending:
            return flow.result
        flow.result.run = run.finish(part, stopped)
    return flow.result


def _submit_missing(flow: BatchExecutor, source: RowSource, running: list[dict[str, Any]]) -> bool:
    """New batches for what is neither cached nor in a running batch (a retry only with fallback "batch",
    at most MAX_ROUNDS batches per judge, stage and run). Whether any was submitted."""
    with inflight.registry_lock(flow.labeler.cfg.cache_dir):  # until what is submitted here is recorded
        return _submit_unheld(flow, source, running)


def _submit_unheld(flow: BatchExecutor, source: RowSource, running: list[dict[str, Any]]) -> bool:
    busy = {k for e in running for k in e.get("keys", ())}
    # Batches of other outputs (other jobs) in flight with the same requests: left to them, said once.
    mine = {e.get("local") for e in flow.journal["batches"]}
    others = inflight.in_flight(flow.labeler.cfg.cache_dir, flow.output, skip=mine)
    sent = False
    stages: dict[tuple[str, int], dict[str, Request]] = {}
    for r in missing_requests(flow.labeler, source.read()):
        stages.setdefault((r.judge, r.stage), {})[r.key] = r
    for (name, stage), reqs in stages.items():
        held = [others.keys[k] for k in reqs if k in others.keys]
        if held and not flow.warned:
            flow.warned = True
            flow.echo(
                f"llmlabel: warning: {len(held):,} requests are already in a Batch API batch in flight "
                f"({held[0].output}'s batch {held[0].batch_id or '(being created)'}): left to it, not bought again"
            )
        reqs = {k: v for k, v in reqs.items() if k not in busy and k not in others.keys}
        # A stage's requests are bought in up to MAX_ROUNDS batches (its retries); a row's next stage (its
        # next shortlist, its taxonomy's next level) is asked once the stage before is collected.
        n = flow.rounds.get((name, stage), 0)
        if reqs and (n == 0 or (flow.bopts.fallback == "batch" and n < MAX_ROUNDS)):
            flow.rounds[(name, stage)] = n + 1
            flow.submit(name, stage, reqs)
            sent = True
    return sent
