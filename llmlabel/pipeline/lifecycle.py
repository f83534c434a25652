"""The one run lifecycle: what a labeling job checks, holds, opens and closes, from its first check to its ledger.

Every entry that labels a file goes through here: `llmlabel label` (pipeline.run), `label --batch`
(pipeline.batch), `--engine ray` (distributed.driver), `--shard`, the Python API's `Labeler.label_file`, `audit`
(its judges' run) and the service's batch jobs (both through `run_job`); `llmlabel merge` through `Output`.

- `check_writes`: no file a command writes may be one it reads (the input, the config, its gold: file,
  task.examples_file, a prompt template): one check, one wording. `check_run` adds the input's rows.
- `Output`: the output's lock, its part file and the final write (what `merge` needs: no judges).
- `Run`: an `Output` plus the judges, the response cache (opened here and closed here, on every path out,
  also when making the job fails), the `RowLabeler`, resuming its part file, calibration and `finish` (the
  whole-job aggregation and the ledger). A stopped run's error carries what its caller needs to tell the
  user (errors.KeptRows): the CLI and the service each word their own advice from it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlabel.config import Config, Judge, per_label_refused
from llmlabel.ensemble.calibration import BATCH_MIN_ROWS, BATCH_ROWS_PER_LABEL, batch_min_rows
from llmlabel.ensemble.combine import Batch, PosteriorRevote, refit
from llmlabel.ensemble.multilabel import SetPolicy
from llmlabel.errors import ConfigError, KeptRows, LLMLabelError, MissingColumn, OutputError
from llmlabel.io.files import atomic_write
from llmlabel.io.gold import Gold, read_gold
from llmlabel.io.guard import Read, check_output, config_reads, inputs
from llmlabel.io.lock import output_lock
from llmlabel.io.output import PartFile, load_rows, save_rows, write_jsonl_lines, write_output
from llmlabel.io.paths import errors_path, ledger_path, part_path, shard_path
from llmlabel.io.records import report_record, to_records
from llmlabel.io.rows import iter_rows, scan
from llmlabel.io.values import arrow_schema
from llmlabel.llm.cache import CacheBackend, open_cache
from llmlabel.pipeline.fingerprint import check_resumable
from llmlabel.pipeline.options import RunOptions, RunResult
from llmlabel.pipeline.row_labeler import RowLabeler, output_names, text_of
from llmlabel.pipeline.shard_manifest import save_shard
from llmlabel.results import AggregationReport


# -- judges --------------------------------------------------------------------------------------
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
            cascade = cfg.cascade is not None and cfg.cascade.enabled
            yield local_judges(dicts, len(cfg.task.label_names), per_label_fits(cfg), cascade)
    except local.LocalError as e:
        if entered:
            raise
        raise ConfigError(
            "no judge to ask: the config has no judges: and neither OPENAI_API_KEY nor OPENAI_BASE_URL is set; "
            f"add judges: (or set a key or an endpoint), or set up the embedded local models ({e})"
        ) from None


EMBEDDED = "llmlabel-local/"  # an embedded judge's cache_as prefix


def per_label_fits(cfg: Config) -> bool:
    """Whether a job of `cfg` can ask per-label questions: label questions, on a task config allows them for."""
    return cfg.mode == "label" and per_label_refused(cfg.task) is None


def local_judges(
    dicts: list[dict[str, Any]], n_labels: int = 3, per_label: bool = False, cascade: bool = False
) -> list[Judge]:
    """Judges for the embedded llama.cpp servers, for a task of `n_labels` labels (`per_label`: where the job
    can ask per-label questions, `per_label_fits`; `cascade`: the judges are asked in turn)."""
    from llmlabel.local.models import MODELS

    most = {alias: spec.per_label_max for alias, spec in MODELS.items()}  # (another model: never)

    # The local server needs no key: it is never put in a Judge (keys live only in the environment).
    # llama-cpp-python constrains decoding to a schema given as {"type": "json_object", "schema": ...}.
    # Their ports change from run to run; the cache knows them by model instead.
    # logprobs: llama.cpp returns them, so each answer also carries a label distribution (calibrated on
    # content-free inputs), which counters these tiny models' bias toward one label.
    # batch_calibration: then each distribution is also divided by the mean over the job's rows at its end (Batch
    # Calibration, single-label jobs of 20+ rows and 1+ a label): on 200 rows it lifted the 1.5B from 0.620 to
    # 0.765 on TREC and 0.535 to 0.600 on CLINC150's domains (docs/embedded-quality.md). Only with 3+ labels: on
    # two it never helped the 1.5B (SST-2 0.925 -> 0.920; SMS, 17% spam, 0.780 -> 0.695: it assumes balanced
    # labels). Multi-label, shortlist and taxonomy jobs leave it off (RowLabeler.batch_calibrated).
    # per_label: one Yes/No question per label, for 3 to the model's per_label_max labels where the job allows it
    # (the 1.5B: 5; on 200 rows news under AG News' names went 0.745 -> 0.850 and 0.790 -> 0.895). Not for a
    # cascade's earlier judges: their confidence decides which rows go on, and the per-label reading is far
    # under its accuracy (the 0.5B's: a mean of 0.29 where 0.835 of its labels are right), so every row would.
    last = len(dicts) - 1
    return [
        Judge(
            **{
                "response_format": "json_object_schema",
                "cache_as": f"{EMBEDDED}{d['model']}",
                "logprobs": True,
                "batch_calibration": n_labels >= 3,
                "per_label": per_label and 3 <= n_labels <= most.get(d["model"], 0) and not (cascade and i < last),
                **{k: v for k, v in d.items() if k != "api_key"},
            }
        )
        for i, d in enumerate(dicts)
    ]


# -- checks --------------------------------------------------------------------------------------
def check_writes(cfg: Config | None, output: str | Path, reads: list[Read]) -> Path:
    """The output (and every file written beside it) is none of `reads` nor of the files the config reads."""
    return check_output(output, reads + config_reads(cfg))


def require_column(source: str | Path, row: dict[str, Any], column: str) -> None:
    """The one check that a file of given labels has its label column (`llmlabel label`'s verify prompt,
    `audit`, the service's audit uploads). Raises errors.MissingColumn (each front end says how to name
    another column)."""
    if column not in row:
        raise MissingColumn(str(source), column, [str(c) for c in list(row)[:20]])


@dataclass(frozen=True)
class Checked:
    """A file run's checked paths, its row count (after --limit / --shard) and the config's gold labels."""

    input: Path
    output: Path
    total: int
    gold: Gold | None


def check_run(cfg: Config, input_path: str | Path, output_path: str | Path, opts: RunOptions) -> Checked:
    """Everything a run of a file checks before any paid call."""
    input_path, output_path = Path(input_path), Path(output_path)
    check_writes(cfg, output_path, inputs(input_path))
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
        require_column(input_path, first, opts.given_label_column)
    # The config's gold rows anchor weighted / dawid_skene: read (and checked) before any paid call.
    return Checked(input_path, output_path, total, read_gold(cfg.gold, task.id_column) if cfg.gold else None)


# -- the output ----------------------------------------------------------------------------------
class Output:
    """An output being written: checked against what the command reads, then locked while open."""

    def __init__(self, output: str | Path, reads: list[Read] | None = None) -> None:
        self.path = Path(output)
        if reads is not None:
            check_output(self.path, reads)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Output:
        self._stack.enter_context(output_lock(self.path))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def fresh_part(self, meta: dict[str, Any]) -> PartFile:
        """A new part file (what an interrupted run of this output left is discarded)."""
        part = PartFile(part_path(self.path))
        part.discard()
        part.open(meta)
        return part

    def write(
        self,
        part: PartFile,
        names: list[str],
        labels: list[str],
        method: str,
        kind: str,
        gold: dict[str, str] | None,
        policy: SetPolicy | None = None,
        batch: Batch | None = None,
    ) -> tuple[int, AggregationReport]:
        """The aggregation over every row of `part` (a run's, or the shards' that `llmlabel merge` joins), written
        atomically to the output. Returns the row count and the aggregation's report."""
        # Without gold the fit reads only each row's judges (part.judges_only parses each distinct answer set once).
        rows = part.judges_only if not gold and kind != "multilabel" else lambda: part.results(kind)
        update, quality = refit(rows, names, labels, method, kind, gold, policy, batch or ())
        try:
            if update is None and self.path.suffix.lower() in (".jsonl", ".ndjson"):
                return write_jsonl_lines(self.path, part.ordered_raw()), quality
            if update is None:
                records = part.ordered()
            elif isinstance(update, PosteriorRevote):
                # A weighted / Dawid-Skene refit changes only the outcome fields, so they are put into each stored
                # record in place (its key order kept) instead of a typed round trip a row (from_record ->
                # RowResult -> to_record): ~465 bytecodes a row fewer, a warm 5,000-row rewrite 164 -> 126 ms
                # (weighted), 166 -> 114 ms (Dawid-Skene; benchmarks/results/results_model.md). The stored records
                # are to_record's, so the bytes match.
                records = _revoted(part.ordered(), update)
            else:
                records = to_records(update(pos, r) for pos, r in enumerate(part.results(kind)))
            return write_output(self.path, records, (part.meta() or {}).get("schema")), quality
        except OSError as e:
            raise OutputError(
                f"cannot write {self.path}: {e.strerror or e}; the finished rows are safe in {part.path}: free some "
                "space (or fix the path) and rerun the same command to write it"
            ) from None


def _revoted(records: Iterator[dict[str, Any]], update: PosteriorRevote) -> Iterator[dict[str, Any]]:
    """to_record(update(pos, from_record(rec))) of each stored record, without the typed results (Output.write)."""
    for pos, rec in enumerate(records):
        if rec.get("label") is not None:
            fields = update.fields(pos)
            if fields is not None:
                rec.update(fields)
                rec["candidates"] = list(fields["candidates"])
        yield rec


class Run(Output):
    """One labeling job's life (a context manager): the output's lock, the judges (local model servers started
    and stopped), the response cache (opened and closed here), the `RowLabeler`; then `open_part`, the rows (the
    caller's engine drives them), and `finish`. A `job` given is its owner's (a Labeler's: its judges and cache
    live across calls) and is left open."""

    def __init__(self, cfg: Config, checked: Checked, opts: RunOptions, labeler: RowLabeler | None = None) -> None:
        super().__init__(checked.output)
        self.cfg, self.checked, self.opts = cfg, checked, opts
        self._given = labeler
        self._labeler: RowLabeler | None = labeler

    @property
    def labeler(self) -> RowLabeler:
        assert self._labeler is not None, "a Run's job exists inside its `with` block"
        return self._labeler

    def __enter__(self) -> Run:
        super().__enter__()
        if self._given is not None:
            return self
        try:
            judges = self._stack.enter_context(judges_for(self.cfg, self.opts.judges))
            cache = open_cache(self.cfg.cache_dir)
            self._stack.callback(cache.close)
            self._labeler = RowLabeler(self.cfg, judges, self.opts, cache)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._labeler is not None:
                # A no-op once finish saved the run; else its log shows it as interrupted.
                self._labeler.ledger.close_log()
        finally:
            super().__exit__(*exc)

    async def calibrate(self) -> None:
        """Contextual calibration, once for the job, before its rows (every engine starts it here)."""
        await self.labeler.ensure_calibrated()

    # -- the part file ---------------------------------------------------------------------------
    def typed(self, fp: dict[str, Any], input_path: Path) -> dict[str, Any]:
        """A part file's meta: the fingerprint and, for a Parquet input, its column types as the output names
        them (a Parquet output keeps them: dates stay dates, an integer id stays an integer)."""
        schema = arrow_schema(input_path, lambda cols: output_names(cols, self.cfg.task.id_column))
        return {**fp, "schema": schema} if schema else fp

    def open_part(self, fp: dict[str, Any], input_name: Path | str, record: bool = True) -> PartFile:
        """The output's part file, opened for appending: an unfinished run's rows kept (if it belongs to the same
        input and settings `fp`), or a fresh one; and the job's ledger, logged as it goes (`record=False`: from
        when the engine starts writing rows, as the Batch API does once no batch runs). Its `done` ids are the
        rows not to label again."""
        labeler = self.labeler
        part = PartFile(part_path(self.path), labeler.opts.limit)
        if labeler.opts.restart:
            part.discard()
        elif part.exists():
            check_resumable(part.meta(), fp, input_name, part.path)
        kept = self._keep_errors(part, fp, labeler.opts.retry_errors)
        part.load()
        kept &= part.errored  # the failed rows of the last finished run on file: asked again only with retry_errors
        part.done |= kept  # (still in errored: a later line of the row, if any, is the one output)
        part.open(fp)
        if record:
            labeler.ledger.record(ledger_path(self.path))
        return part

    def _keep_errors(self, part: PartFile, fp: dict[str, Any], retry: bool) -> set[str]:
        """A rerun of a finished job starts from the rows that failed in it (same input and settings), so that
        they are not paid for again on every plain rerun (nor when that rerun is itself interrupted and
        continued: its part file then holds them already). Returns their ids."""
        recorded, lines = load_rows(errors_path(self.path))
        same = recorded is not None and {**recorded, "schema": None} == {**fp, "schema": None}  # (either engine)
        if retry or not lines or not same:
            return set()
        return part.ids(lines) if part.exists() else part.seed(fp, lines)

    # -- the end ---------------------------------------------------------------------------------
    def finish(self, part: PartFile, stopped: str | None) -> RunResult:
        """After the rows: a stopped run keeps its part file (raising a budget or judge error with the ledger and
        where the rows are attached); a finished one gets the whole-job aggregation, written atomically, and
        its ledger."""
        labeler, output_path, gold = self.labeler, self.path, self.checked.gold
        fatal = labeler.fatal
        result = RunResult(output_path, 0, False, labeler.ledger)
        if labeler.truncated:
            result.warnings.append(f"{labeler.truncated} long texts were cut to the judges' max_text_tokens")
        odd = {n: j.odd_usage for n, j in labeler.ledger.judges.items() if j.odd_usage}
        if odd:
            result.warnings.append(
                "the server sent token counts that are not numbers, negative or impossibly large ("
                + ", ".join(f"{n}: {k}" for n, k in odd.items())
                + "); each was counted as the request's worst case (its bytes in, max_tokens out) in the ledger "
                "and the budget: check the endpoint's usage reports"
            )
        if stopped or fatal is not None:
            result.stopped_by = stopped or str(fatal)
            try:
                labeler.ledger.save(ledger_path(output_path), "stopped")
            except OSError:
                if fatal is None:
                    raise
                # The same full disk that stopped the run: its own line (where the rows are) matters more (the
                # spend is in the ledger's log, written as the run went).
            if isinstance(fatal, LLMLabelError):
                fatal.ledger = labeler.ledger
                if not isinstance(fatal, OutputError):  # whose line already says where the finished rows are
                    fatal.kept = KeptRows(part.path, labeler.ledger.rows_done)
                raise fatal
            return result
        # Every row is in: final aggregation over the whole job, written atomically.
        names = [j.name for j in labeler.judges]
        batch = labeler.batch_calibrated()
        result.rows, quality = self.write(
            part, names, labeler.labels, labeler.cfg.aggregate, labeler.kind, gold, labeler.set_policy, batch
        )
        result.complete, result.quality = True, report_record(quality)
        if quality.rows_only_left_out:
            result.warnings.append(
                f"{quality.rows_only_left_out} rows were answered only by judges left out as uninformative "
                f"({', '.join(quality.left_out)}): the cascade stopped on them. Put a stronger judge first or "
                "set cascade: {enabled: false}, then rerun (answers already paid for are cached)"
            )
        if one := quality.one_label:
            result.warnings.append(
                f"the judge {one.judge} answered {one.label!r} on {one.share:.0%} of rows "
                f"({round(one.share * one.rows)} of {one.rows}, {len(labeler.labels)} labels): a small model "
                "stuck on one label looks like this, and its confidences are then not to be trusted. Check a few "
                "rows; describe each label, give 10+ gold rows, or use a stronger judge"
            )
        # The embedded judges calibrate by default: a small job of theirs (the README's 12 reviews) is no news.
        asked = {j.name for j in labeler.judges if not (j.cache_as or "").startswith(EMBEDDED)}
        if too_few := {n: k for n, k in (quality.batch_too_few or {}).items() if n in asked}:
            result.warnings.append(_batch_too_few(too_few, len(labeler.labels)))
        labeler.ledger.save(ledger_path(output_path))
        _append_quality(ledger_path(output_path), result.quality)
        if labeler.opts.shard is not None:
            save_shard(
                output_path,
                part,
                labeler.opts.shard,
                labeler.opts.limit,
                names,
                labeler.labels,
                labeler.kind,
                labeler.cfg,
                batch,
            )
        else:
            shard_path(output_path).unlink(missing_ok=True)  # the output is no longer a shard's
        failed = part.error_lines() if labeler.ledger.rows_failed or labeler.ledger.rows_skipped else []
        save_rows(errors_path(output_path), part.meta() or {}, failed)
        if failed:
            result.warnings.append(
                f"{len(failed)} rows have errors (see their error field); "
                "rerun with --retry-errors to ask the judges again for them"
            )
        part.finished()
        return result


class RowLabelers:
    """Long-lived jobs that write no file (a Labeler's in-memory calls, the server's `/v1/label` items): one `RowLabeler`
    per key (a prompt kind, a label subset), all over one response cache, opened with the first job and closed
    by `close` (after `aclose`, on their event loop, closed their connections)."""

    def __init__(self, cache_dir: str) -> None:
        self._cache_dir = cache_dir
        self._cache: CacheBackend | None = None
        self._labelers: dict[str, RowLabeler] = {}

    def get(self, key: str, cfg: Config, judges: list[Judge], opts: RunOptions) -> RowLabeler:
        """The job of `key`, made on first use (later calls get it as it is: its calibration, its probe)."""
        labeler = self._labelers.get(key)
        if labeler is None:
            if self._cache is None:
                self._cache = open_cache(self._cache_dir)
            labeler = self._labelers[key] = RowLabeler(cfg, judges, opts, self._cache)
        return labeler

    def __getitem__(self, key: str) -> RowLabeler:
        return self._labelers[key]

    def values(self) -> list[RowLabeler]:
        return list(self._labelers.values())

    async def aclose(self) -> None:
        """Close the jobs' connections to their judges (on the loop they ran on)."""
        for labeler in self._labelers.values():
            await labeler.aclose()

    def close(self) -> None:
        """Close the cache; the jobs are gone (a later `get` makes new ones over a new cache)."""
        self._labelers.clear()
        if self._cache is not None:
            self._cache.close()
            self._cache = None


def _batch_too_few(too_few: Mapping[str, int], n_labels: int) -> str:
    some = ", ".join(f"{name} ({n} rows with a distribution)" for name, n in too_few.items())
    return (
        f"batch calibration was not applied to {some}: it needs {batch_min_rows(n_labels)} rows with a "
        f"distribution from the judge ({BATCH_MIN_ROWS}, and {BATCH_ROWS_PER_LABEL} a label), so their answers "
        "stand as asked"
    )


def _append_quality(path: Path, quality: dict[str, Any]) -> None:
    if not quality:
        return
    data = json.loads(path.read_text())
    data["runs"][-1]["quality"] = quality
    atomic_write(path, json.dumps(data, indent=2))


__all__ = ["Checked", "RowLabelers", "Output", "Run", "check_run", "check_writes", "judges_for"]
