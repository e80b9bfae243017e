"""A rich progress bar on stderr, or nothing (tests, pipes)."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import (
    Progress as RichProgress,
)


class Progress:
    def __init__(self, show):
        self.bar = None
        if show:
            self.bar = RichProgress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def task(self, description, total):
        return self.bar.add_task(description, total=total) if self.bar else None

    def advance(self, task, n):
        if self.bar:
            self.bar.advance(task, n)

    def finish(self, task, total):
        if self.bar:
            self.bar.update(task, total=total, completed=total)
