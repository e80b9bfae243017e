"""When PostgreSQL is away: tell that apart from a bug, and come back quickly.

``unavailable(exc)`` says whether an exception means the database could not
be reached (refused, restarting, a connection cut, no connection from the
pool in time), as opposed to a query that failed. ``lib.errors`` answers
those with 503 and ``Retry-After`` instead of a 500.

``shorten_reconnect_backoff()`` (called from ``LibConfig.ready``): psycopg_pool
retries a failed connection after 1 s, then doubles the wait (2, 4, 8 s...), so
after a 10 s outage the pool's next try could come seconds after the server
is back, and the panel stayed down that much longer (issue 15, item 3). The
pool takes no option for it, so its class constants are set: a try every
``RECONNECT_SECONDS`` (with the pool's own jitter) for as long as it lasts.
"""

import psycopg
from django.db import connection
from django.db import utils as db_utils

from .cooldown import Cooldown

RECONNECT_SECONDS = 0.5
RETRY_AFTER_SECONDS = 2
# After a request found the database unreachable, the requests of the next
# few seconds in this process answer 503 at once unless the pool has a
# connection again (``known_away``): they would only wait the pool's timeout
# each, and queue behind one another. One request then tries for real.
AWAY_SECONDS = 3.0

_away = Cooldown(AWAY_SECONDS)

# SQLSTATEs of a server going away or not taking connections yet:
# admin_shutdown, crash_shutdown, cannot_connect_now.
_AWAY = {"57P01", "57P02", "57P03"}


def unavailable(exc):
    """True when ``exc`` (or what caused it) says the database is unreachable."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _unreachable(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _unreachable(exc):
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # pragma: no cover - the pool is installed with the project
        PoolTimeout = ()  # noqa: N806
    if isinstance(exc, PoolTimeout | psycopg.InterfaceError):
        return True  # no connection in time; a connection already closed
    if isinstance(exc, psycopg.OperationalError):
        state = getattr(exc, "sqlstate", None)
        # No SQLSTATE: the connection failed or was cut (not a server's answer).
        return state is None or state.startswith("08") or state in _AWAY
    # Django's "connection already closed":
    return isinstance(exc, db_utils.InterfaceError)


def shorten_reconnect_backoff():
    from psycopg_pool.base import AttemptWithBackoff

    AttemptWithBackoff.INITIAL_DELAY = RECONNECT_SECONDS
    AttemptWithBackoff.DELAY_BACKOFF = 1.0


def mark_away():
    """A request just found the database unreachable."""
    _away.trip()


def forget_away():
    """Tests: the next request tries the database for real."""
    _away.clear()


def known_away():
    """True while the database was found away moments ago and the pool has not
    got a connection since (its reconnect tries run every RECONNECT_SECONDS,
    so this ends within that much of the server's return)."""
    if not _away.active():
        return False
    pool = connection.pool if connection.settings_dict["OPTIONS"].get("pool") else None
    if pool is None or pool.closed:
        return False  # no pool (yet): a refused connect is as quick as this check
    return pool.get_stats().get("pool_available", 0) == 0
