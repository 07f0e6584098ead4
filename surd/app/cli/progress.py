"""Progress of a long command on stderr: a live line on a terminal, a log line every N seconds
without one (cron, worker logs). Both show done of total, the rate and the ETA (surd.progress)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from rich.console import RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from surd.app.cli.common import OPTIONS, err
from surd.progress import Meter, ProgressLog


class _Line:
    def __init__(self, meter: Meter, steps_unit: str | None) -> None:
        self.meter, self.steps_unit = meter, steps_unit

    def __rich__(self) -> RenderableType:
        text = Text(self.meter.line(self.steps_unit))
        if not self.meter.total:
            return text
        row = Table.grid(padding=(0, 1))
        row.add_row(ProgressBar(total=self.meter.total, completed=self.meter.done, width=30), text)
        return row


def _log(line: str) -> None:
    err.print(f"{datetime.now().strftime('%H:%M:%S')} {line}", highlight=False, soft_wrap=True)


@contextmanager
def progress(
    label: str, total: int | None = None, unit: str = "items", steps_unit: str | None = None
) -> Iterator[Meter]:
    """A meter for the block, shown while it runs."""
    meter = Meter(label, total, unit)
    if err.is_terminal and not err.is_dumb_terminal:
        with Live(_Line(meter, steps_unit), console=err, refresh_per_second=4, transient=True):
            yield meter
        err.print(meter.line(steps_unit), highlight=False, soft_wrap=True)
    else:
        with ProgressLog(meter, _log, OPTIONS.progress_every, steps_unit):
            yield meter
