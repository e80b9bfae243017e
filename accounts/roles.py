"""The three roles of the panel, as Django groups.

Who may read and do what is decided in one place: ``permissions.MATRIX``.
"""

SUPPORT = "support"
OPERATIONS = "operations"
ADMIN = "admin"
ROLES = (SUPPORT, OPERATIONS, ADMIN)


def role_of(user):
    """The strongest role a user holds, or None (looked up once per user object)."""
    if not hasattr(user, "_opspanel_role"):
        names = {group.name for group in user.groups.all()}
        user._opspanel_role = next((r for r in (ADMIN, OPERATIONS, SUPPORT) if r in names), None)
    return user._opspanel_role
