"""``{% load links %}``: links to a record's own page from an id of unknown kind."""

from django import template

from records import ids
from records.links import link

register = template.Library()


@register.filter
def event_url(value):
    """The event page of ``value`` when it is an event id, else "" (an audit
    target or a run's target may be a trade, a pool or a set)."""
    if isinstance(value, str) and ids.PATTERNS["event"].fullmatch(value):
        return link("browse:event", value)
    return ""


@register.filter
def route(value, name):
    """``{{ value|route:"app:name" }}``: ``{% url "app:name" value %}`` for a
    route with one argument, without a ``reverse()`` per row of a table."""
    return link(name, value)
