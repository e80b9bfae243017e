"""The psycopg pool's check of a connection it hands out (settings: the
pool's ``check``). Free of Django, so the settings can name it."""

import select

import psycopg
from psycopg_pool import ConnectionPool


def check_quietly(conn):
    """psycopg_pool's ``check`` (settings: the pool's options), without its
    round trip per request while nothing happened.

    ``ConnectionPool.check_connection`` sends an empty query on every
    connection handed out: a round trip on every request, a tenth of a
    signed-in redirect's time (issue 14). A connection idle in the pool is
    owed nothing by the server, so anything readable on its socket means the
    server spoke or hung up: a restart or ``pg_terminate_backend`` sends its
    FATAL and closes, a crashed server's socket reads end-of-file. Only then
    the real check runs, and raises for a dead connection, which the pool
    replaces (the checks go-sql-driver/mysql and others make before reusing
    a connection). A network cut without a word is seen by neither check
    until the query itself fails: that is what ``connect_timeout`` and the
    503 are for."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)
