"""A taxonomy job's rows (task.taxonomy): asked level by level, online and from the cache.

Each level is one question to every judge (a taxonomy prompt kind: the node reached and its children), so
its answers are cached like any other. The bulk cache pass walks every row of a chunk down the tree a level
at a time, one cache lookup per level for the whole chunk: a rerun asks nothing and pays nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmlabel.ensemble.taxonomy import Descent, replay
from llmlabel.errors import CacheError
from llmlabel.io.output import line
from llmlabel.io.records import to_record
from llmlabel.results import JudgeAnswer, RowResult
from llmlabel.taxonomy import Taxonomy

if TYPE_CHECKING:
    from llmlabel.pipeline.row_labeler import RowLabeler, Sink, Started
    from llmlabel.pipeline.run_state import RunState


def _descent(labeler: RowLabeler, tax: Taxonomy) -> Descent:
    return Descent(tax, labeler.cfg.task.taxonomy_threshold, labeler.weights)


async def ask(
    labeler: RowLabeler, tax: Taxonomy, text: str, given: str | None, run: RunState
) -> dict[str, JudgeAnswer]:
    """Every judge's answers for one text, level by level down the tree."""
    d = _descent(labeler, tax)
    level = 0
    while (kind := d.kind) is not None:
        reqs = [labeler.plan.request(j, text, given, kind, stage=level) for j in labeler.judges]
        got = await labeler.ask_many(reqs, run)
        d.take({j.name: a for j, a in zip(labeler.judges, got)})
        level += 1
    return d.answers()


def result(labeler: RowLabeler, tax: Taxonomy, start: RowResult, answers: dict[str, JudgeAnswer]) -> RowResult:
    """The row's result: the walk its answers (each judge's, level by level: Descent.answers) make."""
    levels = {n: a.levels if a.levels is not None else [a] for n, a in answers.items()}
    d = replay(tax, labeler.cfg.task.taxonomy_threshold, labeler.weights, levels)
    return start.decided(d.verdict(), d.answers())


def from_cache(
    labeler: RowLabeler, tax: Taxonomy, rows: list[tuple[int, dict[str, Any]]], sink: Sink, run: RunState
) -> tuple[list[Started], int]:
    """RowLabeler.from_cache for a taxonomy: every row of the chunk walked down the tree while its answers are all
    cached (one bulk lookup a level); the rows it could not finish are returned, started, to be asked."""
    started = [labeler.start(i, row) for i, row in rows]
    walks = {n: _descent(labeler, tax) for n, s in enumerate(started) if s[1] is not None}
    cuts = dict.fromkeys(walks, 0)
    missed: set[int] = set()
    found = 0
    while True:
        keyed = []
        for n, d in walks.items():
            kind = d.kind
            if kind is None or n in missed:
                continue
            _, text, given = started[n]
            ks = []
            for j in labeler.judges:
                msgs, cut = labeler.plan.messages(j, text, given, kind)  # type: ignore[arg-type]
                cuts[n] += cut
                ks.append(labeler.clients[j.name].key_for(msgs, kind))
            keyed.append((n, d, kind, ks))
        if not keyed:
            break
        try:
            hits = labeler.cache.get_many([k for *_, ks in keyed for k in ks])
        except CacheError as e:  # the rows not finished yet are handed back, as RowLabeler.from_cache does
            run.cache_failed(e)
            missed.update(n for n, *_ in keyed)
            break
        found += len(hits)
        for n, d, kind, ks in keyed:
            got = [
                labeler.clients[j.name].cached_answer(hits[k], kind) if k in hits else None
                for j, k in zip(labeler.judges, ks)
            ]
            if any(a is None for a in got):
                missed.add(n)  # asked on the per-row path (its cached levels are found there again, free)
                continue
            d.take({j.name: a for j, a in zip(labeler.judges, got) if a is not None})
    rest, lines = [], []
    for n, st in enumerate(started):
        res, text, _ = st
        if text is None:
            lines.append(line(to_record(labeler.finish(res, None, run))))
        elif n in missed:
            rest.append(st)
        else:
            d = walks[n]
            run.count_truncated(cuts[n])
            for name, levels in d.judges.items():
                run.ledger.judges[name].cache_hits += len(levels)
            lines.append(line(to_record(labeler.finish(res, d.answers(), run))))
    sink.append_lines(lines)
    return rest, found
