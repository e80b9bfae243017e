"""The Jinja2 environment of the panel's hot tables (``TEMPLATES["jinja2"]``).

Most of the panel is Django templates. A list page draws up to 200 rows
with a dozen values each, and Django's engine spent most of such a page
resolving and escaping those values (issue 14: 3.2 ms for 50 events'
rows against 0.9 ms for the same rows here, both measured in one process).
So the tables of the lists and the stuck queue live under
``templates/jinja2/`` and use the same formatting functions as their Django
counterparts (``lib.templatetags``), so a value reads the same on every page.
"""

from django.conf import settings
from jinja2 import Environment, StrictUndefined

from lib.templatetags.formats import amount, duration, mode, utc
from lib.templatetags.links import event_url, route


def environment(**options):
    if settings.DEBUG or settings.TESTING:
        options["undefined"] = StrictUndefined  # a misspelt name fails loudly
    env = Environment(**options)  # noqa: S701 - the backend turns autoescape on
    env.filters.update(
        amount=amount, duration=duration, event_url=event_url, mode=mode, route=route, utc=utc
    )
    return env
