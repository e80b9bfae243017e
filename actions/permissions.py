"""Who may do which guarded action: the whole matrix, in one place."""

from functools import wraps

from django.core.exceptions import PermissionDenied

from accounts.roles import ADMIN, OPERATIONS, SUPPORT, role_of

MATRIX = {
    "trade.repoll": {SUPPORT, OPERATIONS, ADMIN},
    "event.replay": {SUPPORT, OPERATIONS, ADMIN},
    "bulk.repoll": {OPERATIONS, ADMIN},
    "bulk.replay": {OPERATIONS, ADMIN},
    "queue.claim": {OPERATIONS, ADMIN},
    "pool.sla": {OPERATIONS, ADMIN},
    "partner.set_endpoint": {ADMIN},
    "partner.rotate_secret": {ADMIN},
}


def can(user, action):
    return user.is_authenticated and role_of(user) in MATRIX[action]


def require(action):
    """View guard: 403 and nothing happens for anyone the matrix does not name."""
    if action not in MATRIX:
        raise ValueError(f"unknown action {action!r}")

    def decorator(view):
        @wraps(view)
        def guarded(request, *args, **kwargs):
            if not can(request.user, action):
                raise PermissionDenied(f"your role may not do {action}")
            return view(request, *args, **kwargs)

        return guarded

    return decorator
