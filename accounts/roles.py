"""The three roles of the panel, as Django groups.

Who may do what is decided in one place per action (later issues); here
every role may sign in, search and view.
"""

SUPPORT = "support"
OPERATIONS = "operations"
ADMIN = "admin"
ROLES = (SUPPORT, OPERATIONS, ADMIN)


def role_of(user):
    """The strongest role a user holds, or None."""
    names = {group.name for group in user.groups.all()}
    for role in (ADMIN, OPERATIONS, SUPPORT):
        if role in names:
            return role
    return None
