"""``{% load formats %}``: ``lib.formats`` in templates."""

from django import template
from django.utils.safestring import mark_safe

from lib import formats

register = template.Library()


@register.filter
def utc(moment):
    """A UTC time to the second, with "3 min ago" on hover.

    Drawn in every row of every list (two or three times a row), so written
    without ``format_html`` and ``naturaltime``: they were a fifth of a list
    page (issue 14). Every part is digits, "-", ":", "T", "Z" or the
    duration's words, so nothing in it needs escaping.
    """
    if moment is None:
        return mark_safe('<span class="muted">—</span>')  # noqa: S308 - a constant
    return mark_safe(  # noqa: S308 - see above
        f'<time datetime="{formats.rfc3339(moment)}" title="{formats.ago(moment)}">'
        f"{formats.utc_text(moment, zone=False)}</time>"
    )


@register.filter
def amount(value):
    return formats.amount(value)


@register.filter
def duration(delta):
    """A timedelta as "14 s", "3 min 5 s", "2 h 4 min", "3 days 2 h"."""
    return formats.duration(delta)


MODES = {
    True: mark_safe('<span class="mode live">live</span>'),  # noqa: S308 - constants
    False: mark_safe('<span class="mode test">test</span>'),  # noqa: S308
}


@register.filter
def mode(livemode):
    return MODES[bool(livemode)]


@register.filter
def percent(value):
    return formats.percent(value)


@register.filter
def ms(value):
    return formats.milliseconds(value)
