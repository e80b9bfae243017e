"""The panel's sessions: Django's database sessions, with their user's id
beside the signed data.

Every signed-in request reads its session, then its user: two statements,
while the user's id sat inside the signed data where SQL cannot join on
it. Kept in a column, one statement reads both (``accounts.sessions``), and
a person's sessions are found without decoding every live one
(``services.deactivate``)."""

from django.conf import settings
from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import models


class Session(AbstractBaseSession):
    # Written from the session's data on every save (``SessionStore``);
    # null until someone signs in. Deleting a user deletes their sessions
    # (the ORM's cascade). No constraint in the database: the column only
    # saves a statement and is never trusted alone, and a session saved for
    # a user deleted meanwhile would fail its commit, which Django's
    # ``SessionStore.create`` retries with a new key for ever.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_constraint=False,
    )

    @classmethod
    def get_session_store_class(cls):
        from .sessions import SessionStore

        return SessionStore

    class Meta(AbstractBaseSession.Meta):
        db_table = "accounts_session"
