"""The Jinja2 environment of the panel's hot pages (``TEMPLATES``, named "jinja2").

Most of the panel is Django templates. A list page draws up to 200 rows
with a dozen values each, and Django's engine spent most of such a page
resolving and escaping those values (issue 14: 3.2 ms for 50 events'
rows against 0.9 ms for the same rows here, both measured in one process).
So the tables of the lists, the stuck queue's table and summary, and the
order timeline live under ``templates/jinja2/`` and use the same formatting
functions as their Django counterparts (``lib.templatetags``, Django's own
filters), so a value reads the same on every page. ``docs/decisions.md``
("Hot pages") has the figures.
"""

from datetime import UTC

from django.conf import settings
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.template.defaultfilters import floatformat, timesince_filter
from django.urls import reverse
from django.utils.text import slugify
from jinja2 import Environment, StrictUndefined

from accounts.permissions import can
from lib.formats import datetime_attr, utc_text
from lib.templatetags.formats import amount, duration, mode, utc
from lib.templatetags.links import event_url, route


def _clock(moment):
    """``{{ moment|date:"H:i:s" }}`` in UTC (the panel's zone); "" for None."""
    return "" if moment is None else f"{moment.astimezone(UTC):%H:%M:%S}"


def _utc_text(moment):
    """``lib.formats.utc_text`` without " UTC" (the page says its times are UTC)."""
    return utc_text(moment, "", zone=False)


def environment(**options):
    if settings.DEBUG or settings.TESTING:
        options["undefined"] = StrictUndefined  # a misspelt name fails loudly
    env = Environment(**options)  # noqa: S701 - the backend turns autoescape on
    env.filters.update(
        amount=amount,
        can=can,
        datetime_attr=datetime_attr,
        duration=duration,
        event_url=event_url,
        floatformat=floatformat,
        hms=_clock,
        mode=mode,
        naturaltime=naturaltime,
        route=route,
        slugify=slugify,
        timesince=timesince_filter,
        utc=utc,
        utc_text=_utc_text,
    )
    env.globals["url"] = lambda name, *args: reverse(name, args=args)
    return env
