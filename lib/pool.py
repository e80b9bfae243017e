"""The psycopg pool's check of a connection it hands out (settings: the
pool's ``check``). Free of Django, so the settings can name it."""

import select
import time
import weakref

import psycopg
from psycopg_pool import ConnectionPool

# A connection handed out within this many seconds goes out again without a
# round trip, unless its socket says the server spoke or hung up meanwhile.
# HikariCP skips its check the same way (``aliveBypassWindowMs``, 0.5 s).
RECENT_SECONDS = 1.0

_handed_out = weakref.WeakKeyDictionary()  # connection -> time.monotonic()


def check_quietly(conn):
    """psycopg_pool's ``check``, without its round trip on a connection that
    was in use a moment ago and has heard nothing since.

    ``ConnectionPool.check_connection`` sends an empty query on every
    connection handed out: a round trip on every request, a tenth of a
    signed-in redirect's time (issue 14). A connection idle in the pool is
    owed nothing by the server, so anything readable on its socket means the
    server spoke or hung up: a restart or ``pg_terminate_backend`` sends its
    FATAL and closes, a crashed server's socket reads end-of-file. Then, or
    when the connection has not been handed out for ``RECENT_SECONDS``, the
    real check runs (and raises for a dead connection, which the pool
    replaces): a connection cut without a word (a NAT or firewall dropping
    an idle flow) is only found by sending on it, and that happens to idle
    connections, not to ones in use a second ago. What is left to the 503
    page: a connection ended in the instant before it is handed out, before
    the server's goodbye reached its socket."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    now = time.monotonic()
    last = _handed_out.get(conn)
    if last is None or now - last > RECENT_SECONDS or _readable(conn):
        ConnectionPool.check_connection(conn)
    _handed_out[conn] = now


def _readable(conn):
    """Whether the server sent anything (or closed) on the idle connection.
    ``poll``, not ``select``: a descriptor above 1023 is fine."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))
