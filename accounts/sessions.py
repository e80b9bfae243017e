"""The session engine (``SESSION_ENGINE = "accounts.sessions"``): Django's
database sessions, kept in ``accounts.Session`` with their user's id, and
read together with that user and their role in one plain SQL statement.

Every signed-in request reads its session and then its user; Django's own
engine builds the session's SELECT through the ORM each time, and the user
came in a second statement. Here the user row read with the session waits
on the store (``user_read``) for the sign-in backend, which takes it only
for the same user id the signed data names (``backends.read_with_session``):
Django's checks of the session (its backend, its password hash) are
unchanged. Sign-out deletes the row, so every web process refuses the
cookie at its next request (no per-process cache of sessions, no
signed-cookie sessions).
"""

from functools import cache

from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.backends import db
from django.db import connections, router
from django.utils import timezone

from .backends import ROLE, ROLE_PARAMS, user_columns, user_from_row

READ = (
    "SELECT s.session_data, s.expire_date, s.user_id, {columns}, " + ROLE + " FROM"
    " accounts_session s LEFT JOIN auth_user u ON u.id = s.user_id"
    " WHERE s.session_key = %(key)s AND s.expire_date > %(now)s"
)


@cache
def _read(user_model, using):
    columns, _ = user_columns(user_model, using)
    return READ.format(columns=columns)


class SessionStore(db.SessionStore):
    # The user (and role) read with the session, for backends.read_with_session.
    user_read = None

    @classmethod
    def get_model_class(cls):
        from .models import Session

        return Session

    def _get_session_from_db(self):
        self.user_read = None
        if not self.session_key:
            self._session_key = None
            return None
        using = router.db_for_read(self.model)
        user_model = get_user_model()
        params = {**ROLE_PARAMS, "key": self.session_key, "now": timezone.now()}
        with connections[using].cursor() as cursor:
            cursor.execute(_read(user_model, using), params)
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        data, expire_date, user_id, *user, role = row
        if user_id is not None and user[0] is not None:
            self.user_read = user_from_row(user_model, using, user, role)
        return self.model(
            session_key=self.session_key,
            session_data=data,
            expire_date=expire_date,
            user_id=user_id,
        )

    def create_model_instance(self, data):
        """The row to save: Django's, with the id of the user it signs in."""
        return _with_user(super().create_model_instance(data), data)

    async def acreate_model_instance(self, data):
        """See create_model_instance() (Django's async twin does not call it)."""
        return _with_user(await super().acreate_model_instance(data), data)


def _with_user(instance, data):
    user_id = data.get(SESSION_KEY)
    try:
        pk = get_user_model()._meta.pk
        instance.user_id = None if user_id is None else pk.to_python(user_id)
    except Exception:  # noqa: BLE001 - a malformed id signs nobody in
        instance.user_id = None
    return instance
