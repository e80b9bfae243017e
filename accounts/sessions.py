"""The session engine (``SESSION_ENGINE = "accounts.sessions"``): Django's
database sessions, read with one plain SQL statement.

Every signed-in request reads its session first; Django's own engine builds
that SELECT through the ORM each time, a measurable share of a small page.
The row, its expiry check and everything else are Django's: sign-out
deletes the row, so every web process refuses the cookie at its next
request (no per-process cache of sessions, no signed-cookie sessions).
"""

from django.contrib.sessions.backends import db
from django.db import connections, router
from django.utils import timezone

READ = (
    "SELECT session_data, expire_date FROM django_session"
    " WHERE session_key = %s AND expire_date > %s"
)


class SessionStore(db.SessionStore):
    def _get_session_from_db(self):
        if not self.session_key:
            self._session_key = None
            return None
        using = router.db_for_read(self.model)
        with connections[using].cursor() as cursor:
            cursor.execute(READ, [self.session_key, timezone.now()])
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        data, expire_date = row
        return self.model(session_key=self.session_key, session_data=data, expire_date=expire_date)
