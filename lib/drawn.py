"""Markup kept by what it shows: drawn once, served again while nothing it shows changed.

The stuck queue's filter form (``lib.listing``) and its histogram and SLA
table (``queues.charts``) each drew the same markup on every load of the
page; each now keeps it under a key made of everything it shows.
"""

from django.conf import settings


class Drawn:
    """At most ``most`` pieces of markup by key; when full it starts afresh.

    Nothing is kept under DEBUG, where a template may change between loads.
    The key must hold everything the markup shows, and the markup nothing
    of the request or the user beyond that (no CSRF token).
    """

    def __init__(self, most):
        self.most = most
        self._kept = {}

    def get(self, key, draw, *, keep=True):
        """The markup kept under ``key``, else ``draw()``, kept when ``keep``."""
        drawn = self._kept.get(key)
        if drawn is None:
            drawn = draw()
            if keep and not settings.DEBUG:
                if len(self._kept) >= self.most:
                    self._kept.clear()
                self._kept[key] = drawn
        return drawn
