"""Progress of a run: a tqdm bar on a terminal, a log line every few seconds elsewhere, and a callback."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from llmlabel.llm.ledger import Ledger
from llmlabel.pipeline.options import Progress, RunOptions

EVERY_ENV = "LLMLABEL_PROGRESS_EVERY"  # seconds between progress lines (tests and logs set it)


def _every(opts: RunOptions) -> float:
    v = os.environ.get(EVERY_ENV)
    try:
        return max(0.05, float(v)) if v else opts.progress_every
    except ValueError:
        return opts.progress_every


class Reporter:
    """Counts finished rows for the bar, and emits `Progress` snapshots on a timer (lines and callback)."""

    def __init__(self, opts: RunOptions, ledger: Ledger, total: int, done_before: int) -> None:
        self.opts, self.ledger, self.total, self.done_before = opts, ledger, total, done_before
        self.every = _every(opts)
        self.start = time.monotonic()
        self.bar: Any = None
        self.lines = False
        if opts.progress:
            stream = sys.stderr
            if stream is not None and stream.isatty():
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=done_before, unit="row", dynamic_ncols=True, file=stream)
            else:
                self.lines = True  # a log file or a pipe: no bar (it would be one endless line), timed lines
        self.timed = self.lines or opts.on_progress is not None
        self._last = ""  # the last line printed

    def row_done(self) -> None:
        bar = self.bar
        if bar is not None:
            bar.update(1)
            if self.ledger.rows_done % 20 == 0:
                bar.set_postfix_str(f"${self.ledger.cost:.4f}", refresh=False)

    def rows_done(self, n: int) -> None:
        if self.bar is not None and n:
            self.bar.update(n)

    def snapshot(self) -> Progress:
        led = self.ledger
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = led.rows_done / elapsed
        done = self.done_before + led.rows_done
        eta = (self.total - done) / rate if rate > 0 else None
        return Progress(done, self.total, rate, led.cost, max(eta, 0.0) if eta is not None else None, led)

    def emit(self) -> None:
        p = self.snapshot()
        line = p.line()
        if self.lines and line != self._last:  # the end's line may repeat a timer's line just before: once
            self._last = line
            echo = self.opts.echo
            if echo is not None:
                echo(line)
            else:
                print(line, file=sys.stderr, flush=True)
        if self.opts.on_progress is not None:
            self.opts.on_progress(p)

    async def tick(self) -> None:
        """Emit every `every` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.every)
            self.emit()

    def close(self, finished: bool) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.timed and finished:
            self.emit()
