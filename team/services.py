"""The team page's changes: ``accounts.services`` (what ``manage.py createuser``
uses), each with its audit entry in the same transaction."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts import services as accounts
from accounts.permissions import Action
from accounts.roles import ADMIN, ROLES, role_of
from audit import log as audit


class Refused(Exception):
    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def _other_active_admins(user):
    """Whether an active admin besides ``user`` remains. Locks the admin group
    first, so two admins demoting or deactivating each other at once are
    taken one after the other, and the second sees the first's change."""
    Group.objects.select_for_update().filter(name=ADMIN).first()
    return (
        get_user_model()
        .objects.filter(is_active=True, groups__name=ADMIN)
        .exclude(pk=user.pk)
        .exists()
    )


@transaction.atomic
def create(actor, username, password, role, reason):
    User = get_user_model()
    if role not in ROLES:
        raise Refused(f"A role is one of {', '.join(ROLES)}.")
    if User.objects.filter(username=username).exists():
        raise Refused(f"{username} already exists: change its role instead.", status=409)
    try:
        validate_password(password, User(username=username))
    except ValidationError as exc:
        raise Refused(" ".join(exc.messages)) from None
    user = accounts.create_user(username, password, role)
    audit.record(
        actor=actor,
        action=Action.TEAM_CREATE,
        target=username,
        reason=reason,
        detail=f"role {role}",
    )
    return user


@transaction.atomic
def change_role(actor, user, role, reason):
    before = role_of(user)
    if role == before:
        return False
    if before == ADMIN and not _other_active_admins(user):
        raise Refused("The last active admin keeps the admin role.", status=409)
    accounts.set_role(user, role)
    audit.record(
        actor=actor,
        action=Action.TEAM_ROLE,
        target=user.get_username(),
        reason=reason,
        detail=f"{before or 'no role'} → {role}",
    )
    return True


@transaction.atomic
def deactivate(actor, user, reason):
    if not user.is_active:
        return False
    if user.pk == actor.pk:
        raise Refused("You cannot deactivate yourself.", status=409)
    if role_of(user) == ADMIN and not _other_active_admins(user):
        raise Refused("The last active admin cannot be deactivated.", status=409)
    accounts.deactivate(user)
    audit.record(
        actor=actor, action=Action.TEAM_DEACTIVATE, target=user.get_username(), reason=reason
    )
    return True
