"""The stuck queue's age histogram, as geometry for an inline SVG (no script, CSP-clean)."""

from django.template.loader import render_to_string
from django.utils.safestring import mark_safe

from lib.drawn import Drawn

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


# Drawn figures, by what they show (``figure``): the histogram and the SLA
# table were a tenth of the queue's page, drawn afresh on every load while
# the counts they show change a few times a minute.
_FIGURES = Drawn(256)


def figure(ages, pools, *, can_set_sla, filtered):
    """The age histogram per pool and the pools' SLA table
    (``templates/jinja2/queues/figure.html``), as markup.

    ``ages``: ``stuck.kept_histogram``'s counts; ``pools``: every pool, with
    its stuck count. The markup follows from these and the two flags alone,
    so it is kept by their values (``lib.drawn``) and drawn again only when
    one of them changes.
    """
    shown = tuple((pool.pool_id, pool.sla_minutes, stuck) for pool, stuck in pools)
    key = (tuple(ages), shown, bool(can_set_sla), bool(filtered))

    def draw():
        context = {
            "histogram": draw_histogram(ages),
            "bands": AGE_BANDS,
            "pools": pools,
            "can_set_sla": can_set_sla,
            "filtered": filtered,
        }
        # The template escapes what it draws (the jinja2 engine autoescapes).
        return mark_safe(render_to_string("queues/figure.html", context, using="jinja2"))  # noqa: S308

    return _FIGURES.get(key, draw)
