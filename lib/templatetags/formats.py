"""``{% load formats %}``: ``lib.formats`` in templates."""

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from lib import formats

register = template.Library()


@register.filter
def utc(moment):
    """A UTC time to the second, with "3 minutes ago" on hover."""
    if moment is None:
        return mark_safe('<span class="muted">—</span>')  # noqa: S308 - a constant
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        formats.rfc3339(moment),
        naturaltime(moment),
        formats.utc_text(moment, zone=False),
    )


@register.filter
def amount(value):
    return formats.amount(value)


@register.filter
def duration(delta):
    """A timedelta as "14 s", "3 min 5 s", "2 h 4 min", "3 days 2 h"."""
    return formats.duration(delta)


@register.filter
def mode(livemode):
    word = "live" if livemode else "test"
    return format_html('<span class="mode {}">{}</span>', word, word)


@register.filter
def percent(value):
    return formats.percent(value)


@register.filter
def ms(value):
    return formats.milliseconds(value)
