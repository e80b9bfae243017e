"""The stuck queue's age histogram, as geometry for an inline SVG (no script, CSP-clean)."""

from .stuck import AGE_BANDS

# Bars of the age histogram, in SVG user units.
BAR, BAR_GAP, GROUP_GAP, PLOT, TOP, BOTTOM, LEFT = 18, 4, 28, 120, 18, 34, 8


def draw_histogram(pools):
    """Where each bar of the per-pool age histogram goes; the template only draws.

    Heights share one scale across pools, so bars compare across pools too.
    """
    bands = AGE_BANDS
    tallest = max((count for pool in pools for count in pool.counts), default=0) or 1
    group = len(bands) * BAR + (len(bands) - 1) * BAR_GAP
    groups = []
    for i, pool in enumerate(pools):
        x0 = LEFT + i * (group + GROUP_GAP)
        bars = []
        for j, (band, count) in enumerate(zip(bands, pool.counts, strict=True)):
            height = round(PLOT * count / tallest) if count else 0
            # Coordinates as text: an int in a template goes through number
            # localisation (settings lookups) for every attribute of every bar.
            bars.append(
                {
                    "band": band,
                    "index": j,
                    "count": count,
                    "x": str(x0 + j * (BAR + BAR_GAP)),
                    "y": str(TOP + PLOT - height),
                    "height": str(height),
                    "label_x": str(x0 + j * (BAR + BAR_GAP) + BAR // 2),
                    "label_y": str(TOP + PLOT - height - 4),
                }
            )
        groups.append(
            {
                "pool": pool,
                "bars": bars,
                "label_x": str(x0 + group // 2),
                "label_y": str(TOP + PLOT + 16),
            }
        )
    return {
        "groups": groups,
        "total": sum(pool.total for pool in pools),
        "width": max(LEFT * 2 + len(pools) * (group + GROUP_GAP) - GROUP_GAP, 1),
        "height": TOP + PLOT + BOTTOM,
        "baseline": TOP + PLOT,
        "bar_width": BAR,
    }
