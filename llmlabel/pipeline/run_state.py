"""One run's own state, apart from the row machinery it runs on.

A `RowLabeler` (pipeline.row_labeler) is long-lived and shared: a Labeler's calls, a Ray actor's batches and the
server's concurrent /v1/label requests all run rows on one. What belongs to a single run lives here instead:
its ledger and budget (and each judge's share of them, `llm.judge.Tally`, which the judge client counts into),
the texts it cut, the error that stops it, a cache failure it met and why its drive stopped. Every way of
running rows uses this one object: a file run, the Labeler and a Ray actor through their labeler's current run
(`RowLabeler.run`, made anew by `RowLabeler.use`), the service with one of its own per request
(`RowLabeler.new_run`), so two requests never see each other's failure."""

from __future__ import annotations

from llmlabel.config import Judge
from llmlabel.errors import BudgetExhausted, CacheError, LLMLabelError
from llmlabel.llm.judge import Budget, Tally
from llmlabel.llm.ledger import Ledger
from llmlabel.pipeline.options import RunOptions


class RunState:
    def __init__(self, judges: list[Judge], opts: RunOptions) -> None:
        self.ledger = Ledger()
        ledgers = tuple(
            self.ledger.add_judge(j.name, j.model, j.price_per_million.input, j.price_per_million.output)
            for j in judges
        )
        self.budget = Budget(opts.max_cost, opts.max_requests, ledgers, opts.cancel)
        self.tallies = {
            j.name: Tally(self.ledger.judges[j.name], self.budget, on_cache_error=self._tally_failed) for j in judges
        }
        self.truncated = 0  # texts cut to a judge's max_text_tokens this run
        self.stopped_by: str | None = None  # why the drive stopped early (a signal, a cancel), once it has
        self._fatal: LLMLabelError | BaseException | None = None
        self._cache_error: CacheError | None = None  # the bulk cache pass's
        self._tally_error: CacheError | None = None  # the first of its judges' calls' (Tally.cache_failed)

    @property
    def fatal(self) -> LLMLabelError | BaseException | None:
        """The error that stops this run (a dead judge, the budget, a full disk), or None."""
        return self._fatal

    def fail(self, exc: BaseException) -> bool:
        """Stop the run with `exc`, unless an earlier error already stops it. Whether `exc` is the one."""
        if self._fatal is not None:
            return False
        self._fatal = exc
        return True

    def settle(self, cancelled: bool, cache_stops: bool = True) -> None:
        """The run's error once its rows stopped: a cancel's own zero budget is none (the user set no budget);
        a cache that failed is one when `cache_stops` (a file run: the rows in flight are in, the run stops with
        the cache's line; the service instead answers and warns)."""
        if cancelled and isinstance(self._fatal, BudgetExhausted):
            self._fatal = None
        if cache_stops and self._fatal is None and self.cache_error is not None:
            self._fatal = self.cache_error

    def count_truncated(self, n: int) -> None:
        """Texts cut elsewhere for this run (a Ray actor's, a taxonomy level's)."""
        self.truncated += n

    def cache_failed(self, e: CacheError) -> None:
        """The bulk cache pass could not read the cache (the first failure is kept)."""
        self._cache_error = self._cache_error or e

    @property
    def cache_error(self) -> CacheError | None:
        """Why the response cache failed this run (its answers stay in their rows), or None."""
        return self._cache_error or self._tally_error

    def _tally_failed(self, e: CacheError) -> None:
        self._tally_error = self._tally_error or e
