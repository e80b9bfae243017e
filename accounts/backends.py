"""The sign-in backend: Django's ``ModelBackend``, with the user and their
role read in one query, or in none when the session's own statement read
them (``accounts.sessions``).

Every signed-in request loads its user (``AuthenticationMiddleware``) and
then the role the view's guard asks for (``roles.role_of``): two ORM
queries. Here one plain statement returns the user's row and the strongest
role among their groups, cached on the user object for this request only,
so a role taken away counts at the next request.

The statement goes through a plain cursor and ``Model.from_db`` (what the
ORM itself makes a row into), not ``Manager.raw()``: a RawQuerySet works
out its columns and the model's init order on every call, half of what
reading the user cost (issue 14).
"""

from functools import cache

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.db import connections, router

from .roles import ADMIN, OPERATIONS, SUPPORT

# The strongest role of user ``u`` (a column of any statement that reads one).
ROLE = """(
    SELECT g.name FROM auth_user_groups ug JOIN auth_group g ON g.id = ug.group_id
    WHERE ug.user_id = u.id AND g.name IN (%(admin)s, %(operations)s, %(support)s)
    ORDER BY CASE g.name WHEN %(admin)s THEN 0 WHEN %(operations)s THEN 1 ELSE 2 END
    LIMIT 1
) AS opspanel_role"""
USER_WITH_ROLE = "SELECT {columns}, " + ROLE + " FROM auth_user u WHERE u.id = %(id)s"  # noqa: S608 - the columns are the model's


ROLE_PARAMS = {"admin": ADMIN, "operations": OPERATIONS, "support": SUPPORT}


@cache
def user_columns(model, using):
    """``u.id, u.password, …`` (every column of the user model) and their
    converters (position, converter): the same on every request, so made
    once per process. ``accounts.sessions`` reads the same columns."""
    fields = model._meta.concrete_fields
    columns = ", ".join(f"u.{field.column}" for field in fields)
    converters = [
        (i, converter)
        for i, field in enumerate(fields)
        for converter in field.get_db_converters(connections[using])
    ]
    return columns, converters


@cache
def _read(model, using):
    columns, converters = user_columns(model, using)
    return USER_WITH_ROLE.format(columns=columns), converters


def user_from_row(model, using, values, role):
    """The user a row of ``user_columns`` (and the role column) makes."""
    connection = connections[using]
    _, converters = user_columns(model, using)
    values = list(values)
    for i, converter in converters:
        values[i] = converter(values[i], None, connection)
    user = model.from_db(using, None, values)
    user._opspanel_role = role
    return user


class RoleModelBackend(ModelBackend):
    def get_user(self, user_id):
        model = get_user_model()
        try:
            pk = model._meta.pk.to_python(user_id)
        except Exception:  # noqa: BLE001 - a session with a malformed id: nobody
            return None
        user = read_with_session(pk)
        if user is None:
            using = router.db_for_read(model)
            sql, _ = _read(model, using)
            with connections[using].cursor() as cursor:
                cursor.execute(sql, {**ROLE_PARAMS, "id": pk})
                row = cursor.fetchone()
            if row is None:
                return None
            *values, role = row
            user = user_from_row(model, using, values, role)
        return user if self.user_can_authenticate(user) else None


def read_with_session(pk):
    """The user with id ``pk`` as this request's session read them, in the
    same statement (``accounts.sessions``), or None when it did not."""
    from .middleware import current_session

    session = current_session()
    user = getattr(session, "user_read", None)
    return user if user is not None and user.pk == pk else None
