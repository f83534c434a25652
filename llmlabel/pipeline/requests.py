"""Rows become requests here, and only here: a job's `RequestPlan` renders a row's messages for a judge (its
text cut to the judge's max_text_tokens, the nearest demonstrations), chooses the prompt kind of each question
(the job's, a shortlist's round, a taxonomy's level) and encodes the request (body and cache key).

Every executor reads this plan: the local asyncio driver (`RowLabeler.process`, `RowLabeler.from_cache`, through
pipeline.drive), the Batch API (pipeline.batch buys `pending` requests round after round), the Ray actors
(which run the local driver) and the check for requests bought in batches still in flight (pipeline.inflight).

A row's questions come in stages: one for a plain row (every judge, every sample); one per "none of these"
for a shortlist (task.shortlist: round r lists the r-th k nearest labels); one per level for a taxonomy (the
node reached, then its children). `pending` walks each row through the stages answered in the cache and
returns the requests of the first stage that is not: what a run would pay for next."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from llmlabel.ensemble.calibration import CONTENT_FREE
from llmlabel.ensemble.taxonomy import Descent
from llmlabel.llm.answers import NO_FIT, JudgeAnswer
from llmlabel.llm.encoding import Messages
from llmlabel.llm.prompts import fits_kind, shortlist_kind
from llmlabel.llm.tokens import truncate

if TYPE_CHECKING:
    from llmlabel.config import Judge
    from llmlabel.pipeline.row_labeler import RowLabeler, Started

CHUNK = 1024  # rows walked through the cache at a time by `pending` (one bulk lookup per stage and chunk)


# Not frozen: a frozen dataclass's __init__ costs ~6 us more, once per request on the hot path. Treated as
# immutable all the same (`encode` and `replace` make new ones); eq=False: hashed by identity.
@dataclass(slots=True, eq=False)
class Request:
    """One question to one judge. `key` and `body` are set by `RequestPlan.encode` (the online path lets the
    judge's client encode it as it sends, with its current response format and any re-ask)."""

    judge: str
    kind: str  # the prompt kind: the job's, a shortlist round's or a taxonomy level's
    messages: Messages
    sample: int = 0  # self-consistency: each sample is its own request (seed + sample)
    row: int = -1  # the row's input position (-1: not a row's, e.g. a calibration prompt)
    row_id: str | None = None
    stage: int = 0  # the row's question round: a shortlist's round, a taxonomy's level (0: the first)
    cut: bool = False  # the text was cut to the judge's max_text_tokens
    key: str = ""
    body: bytes = b""


class RequestPlan:
    """The requests of one job (`RowLabeler.plan`)."""

    def __init__(self, labeler: RowLabeler) -> None:
        self.labeler = labeler

    # -- one request -------------------------------------------------------------------------
    def messages(self, judge: Judge, text: str, given: str | None, kind: str | None = None) -> tuple[Messages, bool]:
        """The messages (of `kind`, else the job's), and whether the text had to be cut to max_text_tokens."""
        labeler = self.labeler
        text, cut = truncate(text, judge.max_text_tokens)
        demos = labeler.demos.nearest(text) if labeler.demos is not None else None
        codes = labeler.clients[judge.name].codes is not None
        return labeler.prompts.messages(judge, kind or labeler.kind, text, given, codes, demos), cut

    def request(
        self,
        judge: Judge,
        text: str,
        given: str | None,
        kind: str | None = None,
        sample: int = 0,
        row: int = -1,
        row_id: str | None = None,
        stage: int = 0,
    ) -> Request:
        msgs, cut = self.messages(judge, text, given, kind)
        return Request(judge.name, kind or self.labeler.kind, msgs, sample, row, row_id, stage, cut)

    def encode(self, req: Request) -> Request:
        """The request with its body (canonical JSON, as sent) and its cache key."""
        _, body, key = self.labeler.clients[req.judge].encode(req.messages, req.kind, req.sample)
        return replace(req, key=key, body=body)

    def first_kind(self, text: str) -> str:
        """The kind a row is asked first: the job's, its first shortlist (task.shortlist) or a taxonomy's top level."""
        labeler = self.labeler
        if labeler.taxonomy is not None:
            kind = Descent(labeler.taxonomy, 1.0).kind
            return kind if kind is not None else labeler.kind
        if labeler.shortlister is None:
            return labeler.kind
        return shortlist_kind(labeler.shortlister.shortlist(labeler.shortlister.ranked(text), 0))

    def fits(
        self, judge: Judge, text: str, given: str | None, row: int = -1, row_id: str | None = None
    ) -> list[Request]:
        """A per-label judge's questions for a row: one per label, in the task's order (combine_fits)."""
        return [self.request(judge, text, given, fits_kind(lab), 0, row, row_id) for lab in self.labeler.labels]

    def calibration(self, judge: Judge | None = None) -> Iterator[Request]:
        """The content-free calibration prompts of logprob judges (`judge`'s only, when given; not per-label
        judges: Yes/No answers have no label set to bias): RowLabeler.calibrate asks them."""
        for j in self.labeler.judges if judge is None else [judge]:
            if j.logprobs and j.name not in self.labeler.per_label:
                for t in CONTENT_FREE:
                    yield self.request(j, t, None)

    # -- what a run pays for next --------------------------------------------------------------
    def pending(self, rows: Iterable[tuple[int, dict[str, Any]]], everyone: bool = True) -> Iterator[Request]:
        """The encoded requests the rows need next, given the cache: for each row, its first stage not answered
        there (a shortlist's next round after "none of these", a taxonomy's next level). `everyone`: a cascade's
        later judges too (a batch buys them all: no answers yet to stop on)."""
        chunk: list[tuple[int, dict[str, Any]]] = []
        for item in rows:
            chunk.append(item)
            if len(chunk) >= CHUNK:
                yield from self._pending(chunk)
                chunk = []
        if chunk:
            yield from self._pending(chunk)

    def _pending(self, rows: list[tuple[int, dict[str, Any]]]) -> list[Request]:
        labeler = self.labeler
        started = [(i, labeler.start(i, row)) for i, row in rows]
        asked = [(i, st) for i, st in started if st[1] is not None]
        if labeler.taxonomy is not None:
            return self._walk(asked, self._taxonomy_stage)
        if labeler.shortlister is not None:
            return self._walk(asked, self._shortlist_stage)
        return self._walk(asked, self._plain_stage)

    def _walk(self, asked: list[tuple[int, Started]], stage: Any) -> list[Request]:
        """Walk every row stage by stage while its answers are cached (one bulk lookup a stage); returns the
        requests of each row's first stage with an answer missing. `stage(state, got)` gives a row's next
        requests (None: the row is done) from its walk state and the answers of the stage before."""
        labeler = self.labeler
        out: list[Request] = []
        states: dict[int, Any] = {n: None for n in range(len(asked))}
        got: dict[int, dict[Request, JudgeAnswer]] = {n: {} for n in states}
        while states:
            wanted: dict[int, list[Request]] = {}
            for n in list(states):
                reqs, states[n] = stage(asked[n], states[n], got[n])
                if not reqs:
                    del states[n]
                    continue
                wanted[n] = [self.encode(r) for r in reqs]
            hits = labeler.cache.get_many([r.key for reqs in wanted.values() for r in reqs]) if wanted else {}
            for n, reqs in wanted.items():
                got[n] = {}
                for r in reqs:
                    payload = hits.get(r.key)
                    ans = None if payload is None else labeler.clients[r.judge].cached_answer(payload, r.kind)
                    if ans is not None:
                        got[n][r] = ans
                missing = [r for r in reqs if r not in got[n]]
                if missing:
                    out += missing
                    del states[n]  # the next stage depends on these answers
        return out

    def _plain_stage(self, st: tuple[int, Started], state: Any, got: dict[Request, JudgeAnswer]) -> tuple[Any, Any]:
        """Every judge's every sample, once (a cascade's later judges too)."""
        if state is not None:
            return None, state
        i, (rec, text, given) = st
        reqs = []
        for j in self.labeler.judges:
            if j.name in self.labeler.per_label:
                reqs += self.fits(j, text, given, i, rec.id)  # type: ignore[arg-type]
                continue
            msgs, cut = self.messages(j, text, given)  # type: ignore[arg-type]
            reqs += [Request(j.name, self.labeler.kind, msgs, s, i, rec.id, 0, cut) for s in range(j.samples)]
        return reqs, True

    def _shortlist_stage(self, st: tuple[int, Started], state: Any, got: dict[Request, JudgeAnswer]) -> tuple[Any, Any]:
        """Each judge's shortlist rounds, the next one for a judge whose last answer was "none of these"."""
        labeler = self.labeler
        assert labeler.shortlister is not None
        i, (rec, text, given) = st
        if state is None:
            state = (labeler.shortlister.ranked(text), dict.fromkeys((j.name for j in labeler.judges), 0))  # type: ignore[arg-type]
        else:
            for r, a in got.items():
                state[1][r.judge] = r.stage + 1 if a.error == NO_FIT else None  # None: answered
        ranked, rounds = state
        reqs = []
        for j in labeler.judges:
            r = rounds[j.name]
            choices = (
                labeler.shortlister.shortlist(ranked, r)
                if r is not None and r < labeler.cfg.task.shortlist_rounds
                else []
            )
            if choices:
                reqs.append(self.request(j, text, given, shortlist_kind(choices), 0, i, rec.id, r))  # type: ignore[arg-type]
        return reqs, state

    def _taxonomy_stage(self, st: tuple[int, Started], state: Any, got: dict[Request, JudgeAnswer]) -> tuple[Any, Any]:
        """The level the row's walk down the tree has reached, every judge."""
        labeler = self.labeler
        assert labeler.taxonomy is not None
        i, (rec, text, given) = st
        if state is None:
            state = Descent(labeler.taxonomy, labeler.cfg.task.taxonomy_threshold, labeler.weights)
        elif got:
            state.take({r.judge: a for r, a in got.items()})
        kind = state.kind
        if kind is None:
            return None, state
        level = len(next(iter(state.judges.values()), []))
        return [self.request(j, text, given, kind, 0, i, rec.id, level) for j in labeler.judges], state  # type: ignore[arg-type]
