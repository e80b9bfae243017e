"""The sign-in backend: Django's ``ModelBackend``, with the user and their
role read in one query.

Every signed-in request loads its user (``AuthenticationMiddleware``) and
then the role the view's guard asks for (``roles.role_of``): two ORM
queries. Here one plain statement returns the user's row and the strongest
role among their groups, cached on the user object for this request only,
so a role taken away counts at the next request.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend

from .roles import ADMIN, OPERATIONS, SUPPORT

USER_WITH_ROLE = """
SELECT u.*, (
    SELECT g.name FROM auth_user_groups ug JOIN auth_group g ON g.id = ug.group_id
    WHERE ug.user_id = u.id AND g.name IN (%(admin)s, %(operations)s, %(support)s)
    ORDER BY CASE g.name WHEN %(admin)s THEN 0 WHEN %(operations)s THEN 1 ELSE 2 END
    LIMIT 1
) AS opspanel_role
FROM auth_user u WHERE u.id = %(id)s
"""


class RoleModelBackend(ModelBackend):
    def get_user(self, user_id):
        model = get_user_model()
        try:
            pk = model._meta.pk.to_python(user_id)
        except Exception:  # noqa: BLE001 - a session with a malformed id: nobody
            return None
        params = {"admin": ADMIN, "operations": OPERATIONS, "support": SUPPORT, "id": pk}
        found = list(model._default_manager.raw(USER_WITH_ROLE, params))
        if not found:
            return None
        user = found[0]
        user._opspanel_role = user.opspanel_role
        return user if self.user_can_authenticate(user) else None
