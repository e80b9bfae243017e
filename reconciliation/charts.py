"""The day's totals as geometry for an inline SVG (no script, CSP-clean): one
bar per pool, its trades stacked by status, on one scale across pools."""

from records.states import STATUSES

LABEL, BAR_WIDTH, ROW, BAR, TOP = 92, 300, 24, 16, 4


def draw_totals(totals):
    """Where each segment goes; the template only draws."""
    per_pool = {}
    for row in totals:
        counts = per_pool.setdefault(row["poolId"], dict.fromkeys(STATUSES, 0))
        counts[row["status"]] += row["trades"]
    most = max((sum(c.values()) for c in per_pool.values()), default=0) or 1
    rows = []
    for n, (pool, counts) in enumerate(sorted(per_pool.items())):
        y = TOP + n * ROW
        x, segments = LABEL, []
        for status in STATUSES:
            count = counts[status]
            if not count:
                continue
            width = max(1, round(BAR_WIDTH * count / most))
            segments.append({"status": status, "count": count, "x": x, "width": width})
            x += width
        total = sum(counts.values())
        rows.append(
            {
                "pool": pool,
                "total": total,
                "segments": segments,
                "y": y,
                "text_y": y + BAR - 3,
                "total_x": x + 6,
            }
        )
    return {
        "rows": rows,
        "width": LABEL + BAR_WIDTH + 60,
        "height": TOP * 2 + len(rows) * ROW,
        "bar": BAR,
        "statuses": STATUSES,
        "trades": sum(r["total"] for r in rows),
    }
