"""Links in long tables, built without a ``reverse()`` per row.

``{% url %}`` in a loop was a large share of a list page's rendering (the
resolver walks the URLconf for every link). ``link`` reverses each route
once per process with a stand-in argument and fills in the real one; an
argument that Django would quote (anything but letters, digits and ``_-.~``)
goes through ``reverse()`` itself, so the link is always the same as
``{% url %}`` would make.
"""

import re
from functools import cache

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.urls import get_script_prefix, reverse

PLAIN = re.compile(r"[A-Za-z0-9_\-.~]+")
STAND_IN = "0STANDIN0"


@cache
def _halves(name):
    # Without the script prefix, which belongs to the request, not the route.
    whole = reverse(name, args=[STAND_IN]).removeprefix(get_script_prefix())
    head, _, tail = whole.partition(STAND_IN)
    return head, tail


def link(name, value):
    """``reverse(name, args=[value])`` for a route with one argument."""
    return linker(name)(value)


def linker(name):
    """``link`` for one route, for the rows of one page: the route's halves
    and the request's script prefix looked up once, not per row."""
    head, tail = _halves(name)
    head = get_script_prefix() + head
    plain = PLAIN.fullmatch

    def make(value):
        value = str(value)
        if plain(value) and value not in (".", ".."):
            return head + value + tail
        return reverse(name, args=[value])

    return make


@receiver(setting_changed)
def _forget(setting, **kwargs):
    # A test that swaps the URLconf gets its own routes.
    if setting == "ROOT_URLCONF":
        _halves.cache_clear()
