#!/usr/bin/env python
"""Two or more bench results side by side (issue 14: "at 10 M within 1.5x of 1 M").

    .venv/bin/python bench/compare.py bench/results/A.json bench/results/B.json

Prints a Markdown table: each operation of the first result, its figure in
every result, and for the timed rows the last result's p50 (or rate) over
the first's. Rows are matched by id and operation text, numbers aside (an operation
may name its size: the import's event count, the stuck trades).
"""

import json
import re
import sys
from pathlib import Path


def _key(row):
    # Sizes in the text ("50,717 new events", "(3,684 stuck)") differ between runs.
    return row["id"], re.sub(r"[\d,.]+", "#", row["operation"])


def _measure(row):
    values = row.get("values") or {}
    for name in ("p50", "rate"):
        if isinstance(values.get(name), (int, float)):
            return name, values[name]
    return None, None


def table(results):
    heads = [f"{r['meta'].get('events', 0) / 1e6:.2f} M events" for r in results]
    lines = [
        "| | Operation | " + " | ".join(heads) + " | Last / first |",
        "|---|---|" + "---|" * len(heads) + "---|",
    ]
    indexed = [{_key(row): row for row in r["rows"]} for r in results]
    for row in results[0]["rows"]:
        key = _key(row)
        found = [rows.get(key) for rows in indexed]
        figures = [f["figure"] if f else "–" for f in found]
        name, first = _measure(row)
        _, last = _measure(found[-1]) if found[-1] else (None, None)
        ratio = f"{last / first:.2f}x {name}" if first and last else ""
        cells = [row["id"], row["operation"], *figures, ratio]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    paths = (argv or sys.argv)[1:]
    if len(paths) < 2:
        sys.exit(__doc__)
    print(table([json.loads(Path(p).read_text()) for p in paths]))


if __name__ == "__main__":
    main()
