"""Django's PostgreSQL backend (``ENGINE = "lib.postgresql"``): its pool
checks connections with ``lib.pool.check_quietly``, and times come back
through psycopg's own compiled loader.

Django hands psycopg_pool ``ConnectionPool.check_connection`` when
``CONN_HEALTH_CHECKS`` is on (a round trip on every connection handed
out) and takes no other check: the pool's own is replaced once it exists.

Every ``timestamptz`` Django reads goes through its ``BaseTzLoader``, a
Python subclass of psycopg's pure-Python loader (psycopg swaps in its C
loaders only for its own classes), which parses the text and then sets the
connection's zone: about 5 µs a value, against under 1 µs for psycopg's
compiled loader. A stuck-queue page reads about a hundred times. Where
Django's zone is UTC (``USE_TZ`` and no ``TIME_ZONE`` for the database,
as in ``opspanel.settings``), Django also sets every connection's session
zone to UTC (``_configure_timezone``), and psycopg's loader then returns
the same aware datetimes, in ``datetime.timezone.utc``: this backend
registers it instead (``tests/test_db_backend.py`` holds the two equal).
Any other zone keeps Django's loader.
"""

import datetime
from functools import cache

from django.db.backends.postgresql import base
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.utils.asyncio import async_unsafe

from lib.pool import check_quietly

if is_psycopg3:
    from psycopg.adapt import AdaptersMap
    from psycopg.pq import Format
    from psycopg.types.datetime import TimestamptzLoader


@cache
def _utc_adapters(template):
    """Django's adapters with psycopg's own ``timestamptz`` text loader (the
    compiled one, where psycopg has its C extension)."""
    adapters = AdaptersMap(template)
    adapters.register_loader("timestamptz", TimestamptzLoader)
    return adapters


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        if pool is not None and pool._check is not None:
            # psycopg_pool keeps the check it was given here (3.2, 3.3).
            pool._check = check_quietly
        return pool

    @property
    def _loads_utc(self):
        # Django's ``timezone`` is datetime.UTC only with USE_TZ and no
        # database TIME_ZONE, and then it sets each session's zone to UTC.
        return is_psycopg3 and self.timezone is datetime.UTC

    def get_connection_params(self):
        params = super().get_connection_params()
        if self._loads_utc:
            params["context"] = _utc_adapters(params["context"])
        return params

    @async_unsafe
    def create_cursor(self, name=None):
        """Django's, without its check of the connection's ``timestamptz``
        loader (which reads a ``timezone`` attribute only Django's loader
        has) when the loader is psycopg's own: then the session zone is UTC,
        and so are the times it returns."""
        loader = self.connection.adapters.get_loader(base.TIMESTAMPTZ_OID, Format.TEXT)
        if hasattr(loader, "timezone"):  # Django's BaseTzLoader
            return super().create_cursor(name)
        if not name:
            cursor = self.connection.cursor()
        elif self.settings_dict["OPTIONS"].get("server_side_binding") is not True:
            cursor = base.ServerSideCursor(
                self.connection, name=name, scrollable=False, withhold=self.connection.autocommit
            )
        else:
            cursor = self.connection.cursor(
                name, scrollable=False, withhold=self.connection.autocommit
            )
        if not self._loads_utc:
            # The zone changed since the connection was made (a test's
            # override_settings): Django's loader for this cursor, as Django does.
            base.register_tzloader(self.timezone, cursor)
        return cursor
