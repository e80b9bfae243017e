"""The sign-in backend: Django's ``ModelBackend``, with the user and their
role read in one query, or in none when the session's own statement read
them (``accounts.sessions``).

Every signed-in request loads its user (``AuthenticationMiddleware``) and
then the role the view's guard asks for (``roles.role_of``): two ORM
queries. Here one plain statement returns the user's row and the strongest
role among their groups, cached on the user object for this request only,
so a role taken away counts at the next request.

The statement goes through ``lib.rawsql.fetch`` (the row made into a user
as the ORM makes it), not ``Manager.raw()``: a RawQuerySet works out its
columns and the model's init order on every call, half of what reading the
user cost (issue 14).
"""

from functools import cache

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend

from lib.rawsql import columns, fetch

from .roles import ADMIN, OPERATIONS, SUPPORT

# The strongest role of user ``u`` (a column of any statement that reads one).
ROLE = """(
    SELECT g.name FROM auth_user_groups ug JOIN auth_group g ON g.id = ug.group_id
    WHERE ug.user_id = u.id AND g.name IN (%(admin)s, %(operations)s, %(support)s)
    ORDER BY CASE g.name WHEN %(admin)s THEN 0 WHEN %(operations)s THEN 1 ELSE 2 END
    LIMIT 1
)"""
ROLE_PARAMS = {"admin": ADMIN, "operations": OPERATIONS, "support": SUPPORT}


@cache
def _read(model):
    """The user's row and their role: the same statement on every request."""
    return f"SELECT {columns('u', model)}, {ROLE} FROM auth_user u WHERE u.id = %(id)s"  # noqa: S608 - the columns are the model's


class RoleModelBackend(ModelBackend):
    def get_user(self, user_id):
        model = get_user_model()
        try:
            pk = model._meta.pk.to_python(user_id)
        except Exception:  # noqa: BLE001 - a session with a malformed id: nobody
            return None
        user = read_with_session(pk)
        if user is None:
            found = fetch(_read(model), {**ROLE_PARAMS, "id": pk}, model, extra=("role",))
            if not found:
                return None
            ((user, role),) = found
            user._opspanel_role = role
        return user if self.user_can_authenticate(user) else None


def read_with_session(pk):
    """The user with id ``pk`` as this request's session read them, in the
    same statement (``accounts.sessions``), or None when it did not."""
    from .middleware import current_session

    session = current_session()
    user = getattr(session, "user_read", None)
    return user if user is not None and user.pk == pk else None
