from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from .models import Session
from .roles import ROLES


@transaction.atomic
def create_user(username, password, role):
    """Create (or reset) a user holding exactly one role."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_password(password)
    user.is_active = True
    user.save()
    return set_role(user, role)


@transaction.atomic
def set_role(user, role):
    """Give ``user`` exactly ``role`` instead of the one it holds."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    # get_or_create: the data migration makes the groups, but a test database
    # flushed between transactional tests no longer has them.
    user.groups.set([Group.objects.get_or_create(name=role)[0]])
    user.__dict__.pop("_opspanel_role", None)
    return user


@transaction.atomic
def deactivate(user):
    """Signed out at the next request and refused at sign-in; the audit log keeps the name.

    Their sessions are deleted too, so reactivating them later does not bring
    back a session (or a sudo window) from before. A session row keeps the
    id of the user it signs in (``accounts.Session``)."""
    user.is_active = False
    user.save(update_fields=["is_active"])
    Session.objects.filter(user=user).delete()
    return user
