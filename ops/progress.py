"""Progress of a long write (`python server.py seed`): a live bar at a terminal, log lines
elsewhere.

A bar redraws itself with carriage returns, which a file or a log collector keeps as one
garbled line; so when the stream is not a terminal (the same test that picks JSON logs) each
table gets one log line once written, with its rows, seconds and rate. The bar is rich's.
"""

from __future__ import annotations

import logging
import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

logger = logging.getLogger("chatql.progress")


class _RateColumn(ProgressColumn):
    """Rows per second: while writing, over the last seconds; once done, over the whole."""

    def render(self, task: Task) -> Text:
        if task.finished and task.finished_time:
            speed: float | None = task.completed / task.finished_time
        else:
            speed = task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "", style="progress.data.speed")


class RowProgress:
    """Reports of (table, rows done, rows in all), shown on `stream`.

    `writing_seconds` runs from the first report, when rows start going in, to `close`: a rate
    over it leaves out what came before (imports, migrations, hashing a password).
    """

    def __init__(self, stream: TextIO) -> None:
        self._live = stream.isatty()
        self._bar = Progress(
            TextColumn("{task.description:<13}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            console=Console(file=stream, force_terminal=self._live),
            disable=not self._live,
        )
        self._tasks: dict[str, TaskID] = {}
        self._table_started: dict[str, float] = {}
        self._started: float | None = None
        self._finished: float | None = None

    def update(self, table: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if self._started is None:
            self._started = now
            self._bar.start()
        if table not in self._tasks:
            self._tasks[table] = self._bar.add_task(table, total=total)
            self._table_started[table] = now
        self._bar.update(self._tasks[table], completed=done)
        if done >= total and not self._live and table in self._table_started:
            seconds = now - self._table_started.pop(table)
            logger.info(
                "%s written",
                table,
                extra={
                    "fields": {
                        "table": table,
                        "rows": done,
                        "seconds": round(seconds, 3),
                        "rows_per_second": round(done / seconds) if seconds else None,
                    }
                },
            )

    def close(self) -> None:
        """Stop the clock and the bar (at most once)."""
        if self._started is not None and self._finished is None:
            self._finished = time.perf_counter()
            self._bar.stop()

    @property
    def writing_seconds(self) -> float:
        if self._started is None:
            return 0.0
        return (self._finished or time.perf_counter()) - self._started
