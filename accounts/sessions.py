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
from django.utils import timezone

from lib.rawsql import columns, fetch

from .backends import ROLE, ROLE_PARAMS


@cache
def _read(session_model, user_model):
    """The session, its user and their role: the same statement on every request."""
    return (
        f"SELECT {columns('s', session_model)}, {columns('u', user_model)}, {ROLE}"  # noqa: S608 - the columns are the models'
        " FROM accounts_session s LEFT JOIN auth_user u ON u.id = s.user_id"
        " WHERE s.session_key = %(key)s AND s.expire_date > %(now)s"
    )


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
        user_model = get_user_model()
        params = {**ROLE_PARAMS, "key": self.session_key, "now": timezone.now()}
        found = fetch(
            _read(self.model, user_model), params, self.model, user_model, extra=("role",)
        )
        if not found:
            self._session_key = None
            return None
        ((session, user, role),) = found
        if user is not None:
            user._opspanel_role = role
            self.user_read = user
        return session

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
