"""Django's PostgreSQL backend (``ENGINE = "lib.postgresql"``), its pool
checking connections with ``lib.pool.check_quietly``.

Django hands psycopg_pool ``ConnectionPool.check_connection`` when
``CONN_HEALTH_CHECKS`` is on (a round trip on every connection handed
out) and takes no other check: the pool's own is replaced once it exists.
"""

from django.db.backends.postgresql import base

from lib.pool import check_quietly


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        if pool is not None and pool._check is not None:
            # psycopg_pool keeps the check it was given here (3.2, 3.3).
            pool._check = check_quietly
        return pool
