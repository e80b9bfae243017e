"""The hourly delivery charts, as geometry for an inline SVG (no script, CSP-clean).

Two charts over the same 24 columns (``health.hourly``): attempts per hour,
failed stacked on succeeded; and latency per hour, p95 behind p50. The
template only draws what these return.
"""

from dataclasses import dataclass

from lib.formats import milliseconds, utc_text

from .health import HOUR


@dataclass(frozen=True)
class Size:
    column: int  # bar width, SVG user units
    gap: int
    plot: int  # height of the tallest bar
    top: int = 0  # room above the plot (the scale's label)
    bottom: int = 0  # room below it (hour labels)


SMALL = Size(column=5, gap=2, plot=28)  # a row of the overview
LARGE = Size(column=18, gap=6, plot=110, top=16, bottom=18)  # a partner's page
LABEL_EVERY = 6  # hours between two time labels under the large chart


def _height(value, tallest, plot):
    if not value:
        return 0
    return max(1, round(plot * value / tallest))


def draw(hours, at, size=SMALL):
    """Bars for ``attempts`` and ``latency`` over ``hours`` (oldest first)."""
    most = max((hour.attempts for hour in hours), default=0)
    slowest = max((hour.p95 or 0 for hour in hours), default=0)
    baseline = size.top + size.plot
    columns = []
    for i, hour in enumerate(hours):
        start = at - (hour.ago + 1) * HOUR
        x = i * (size.column + size.gap)
        ok = _height(hour.succeeded, most, size.plot)
        failed = _height(hour.failed, most, size.plot)
        p95 = _height(hour.p95, slowest, size.plot)
        p50 = _height(hour.p50, slowest, size.plot)
        columns.append(
            {
                "hour": hour,
                "x": x,
                "ok_y": baseline - ok,
                "ok_height": ok,
                "failed_y": baseline - ok - failed,
                "failed_height": failed,
                "p95_y": baseline - p95,
                "p95_height": p95,
                "p50_y": baseline - p50,
                "p50_height": p50,
                "title": (
                    f"{start:%H:%M}–{start + HOUR:%H:%M} UTC: {hour.attempts} attempt"
                    f"{'s' if hour.attempts != 1 else ''}, {hour.failed} failed"
                ),
                "latency_title": (
                    f"{start:%H:%M}–{start + HOUR:%H:%M} UTC: p50 {milliseconds(hour.p50)}, "
                    f"p95 {milliseconds(hour.p95)}"
                ),
                "label": f"{start:%H:%M}" if size.bottom and i % LABEL_EVERY == 0 else "",
                "label_x": x,
            }
        )
    width = max(len(hours) * (size.column + size.gap) - size.gap, 1)
    return {
        "columns": columns,
        "width": width,
        "height": baseline + size.bottom,
        "baseline": baseline,
        "column_width": size.column,
        "label_y": baseline + size.bottom - 4,
        "most": most,
        "slowest": milliseconds(slowest) if slowest else "",
        "attempts": sum(hour.attempts for hour in hours),
        "failed": sum(hour.failed for hour in hours),
        "span": f"the 24 hours up to {utc_text(at)}",
    }
