"""One table of the run: each operation, its figure, the same run's baseline,
the ratio, and the issue's target with met or missed; the same as JSON."""

import json
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def percentiles(samples):
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@dataclass
class Row:
    id: str  # S1..S6, or the operation's name
    operation: str
    figure: str  # "p50 1.2 ms / p99 3.4 ms", "812 req/s"
    baseline: str = ""  # what, and its figure
    ratio: str = ""
    target: str = ""
    met: bool | None = None  # None: no target
    values: dict = field(default_factory=dict)  # the numbers, for the JSON

    @property
    def verdict(self):
        return {True: "met", False: "MISSED", None: ""}[self.met]


def ms(seconds):
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def latency(samples):
    p50, p99 = percentiles(samples)
    return p50, p99, f"p50 {ms(p50)} / p99 {ms(p99)}"


class Report:
    def __init__(self, meta):
        self.meta = meta
        self.rows = []
        self.plans = []
        self.notes = []

    def add(self, row):
        self.rows.append(row)
        return row

    def print(self, out=None):
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(
            title=f"bench: {self.meta.get('dataset', '')}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        widths = (7, 34, 36, 38, 24, 30, 6)
        for name, width in zip(
            ("", "operation", "figure", "baseline (same run)", "ratio", "target", ""),
            widths,
            strict=True,
        ):
            table.add_column(name, overflow="fold", max_width=width)
        for row in self.rows:
            table.add_row(
                row.id, row.operation, row.figure, row.baseline, row.ratio, row.target, row.verdict
            )
        console = Console(file=out, width=200, no_color=True, highlight=False)
        console.print(table)
        for note in self.notes:
            console.print(note)

    def as_dict(self):
        return {
            "meta": self.meta,
            "rows": [asdict(row) | {"verdict": row.verdict} for row in self.rows],
            "plans": self.plans,
            "notes": self.notes,
        }

    def write(self, path=None):
        RESULTS.mkdir(exist_ok=True)
        if path is None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            path = RESULTS / f"{stamp}-{self.meta.get('orders', 0)}.json"
        Path(path).write_text(json.dumps(self.as_dict(), indent=1, default=str) + "\n")
        return Path(path)


def git_commit():
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=RESULTS.parent,
            check=False,
        ).stdout.strip()
    except OSError:
        return ""
