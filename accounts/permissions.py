"""Who may read what and do which guarded action: the whole matrix, in one place.

``Action`` is the one vocabulary of what people do in the panel: the names
runs, audit entries, the timeline and this matrix use. ``Read`` names what
people look at. Every view names what it needs on its face with one
``require(...)`` (a bulk run needs both bulk actions); a signed-in user
without a role may do and read nothing.
"""

from functools import wraps

from django.core.exceptions import PermissionDenied
from django.db import models

from .roles import ADMIN, OPERATIONS, SUPPORT, role_of


class Action(models.TextChoices):
    """A guarded action, as the audit log names it (namespaced) and a person reads it."""

    TRADE_REPOLL = "trade.repoll", "Re-poll"
    EVENT_REPLAY = "event.replay", "Replay"
    BULK_REPOLL = "bulk.repoll", "Bulk re-poll"
    BULK_REPLAY = "bulk.replay", "Bulk replay of the latest state"
    BULK_RECOVER = "bulk.recover", "Replay of a partner's failed deliveries"
    QUEUE_CLAIM = "queue.claim", "Claimed"
    QUEUE_UNCLAIM = "queue.unclaim", "Unclaimed"
    QUEUE_TAKE_OVER = "queue.take_over", "Took over a claim"
    POOL_SLA = "pool.sla", "Pool SLA change"
    PARTNER_SET_ENDPOINT = "partner.set_endpoint", "Endpoint change"
    PARTNER_ROTATE_SECRET = "partner.rotate_secret", "Secret rotation"
    RECON_RESOLVE = "recon.resolve", "Reconciliation exception resolved"
    RECON_IGNORE = "recon.ignore", "Reconciliation exception ignored"
    PARTNER_CREATE = "partner.create", "Partner created"
    PARTNER_EDIT = "partner.edit", "Partner edited"
    PARTNER_STATUS = "partner.status", "Partner suspended or reactivated"
    PARTNER_ENTITLEMENT = "partner.entitlement", "Entitlement change"
    PARTNER_KEY_ISSUE = "partner.key_issue", "API key issued"
    PARTNER_KEY_ROLL = "partner.key_roll", "API key rolled"
    PARTNER_KEY_REVOKE = "partner.key_revoke", "API key revoked"
    PARTNER_RETIRE_SECRET = "partner.retire_secret", "Secret retired"
    PARTNER_TEST_EVENT = "partner.test_event", "Test event sent"
    TEAM_CREATE = "team.create", "Panel user created"
    TEAM_ROLE = "team.role", "Role change"
    TEAM_DEACTIVATE = "team.deactivate", "Panel user deactivated"


class Read(models.TextChoices):
    """What a page shows."""

    RECORDS = "read.records", "search, timelines and the lists of records"
    QUEUE = "read.queue", "the stuck queue"
    AUDIT = "read.audit", "the audit log"
    RUN = "read.run", "the guarded runs and their progress"
    DELIVERIES = "read.deliveries", "delivery health"
    RECONCILIATION = "read.reconciliation", "the daily close and its exceptions"
    PARTNERS = "read.partners", "partners, their keys and secrets"
    TEAM = "read.team", "the panel's users"


EVERYONE = frozenset({SUPPORT, OPERATIONS, ADMIN})

MATRIX = {
    Read.RECORDS: EVERYONE,
    Read.QUEUE: EVERYONE,
    Read.AUDIT: EVERYONE,
    Read.RUN: EVERYONE,
    Read.DELIVERIES: EVERYONE,
    Action.TRADE_REPOLL: EVERYONE,
    Action.EVENT_REPLAY: EVERYONE,
    Action.BULK_REPOLL: {OPERATIONS, ADMIN},
    Action.BULK_REPLAY: {OPERATIONS, ADMIN},
    Action.BULK_RECOVER: {OPERATIONS, ADMIN},
    # Claiming and letting go are one permission; taking over someone
    # else's claim (or letting it go for them) is an admin's.
    Action.QUEUE_CLAIM: {OPERATIONS, ADMIN},
    Action.QUEUE_UNCLAIM: {OPERATIONS, ADMIN},
    Action.QUEUE_TAKE_OVER: {ADMIN},
    Action.POOL_SLA: {OPERATIONS, ADMIN},
    Action.PARTNER_SET_ENDPOINT: {ADMIN},
    Action.PARTNER_ROTATE_SECRET: {ADMIN},
    # The daily close: support reads it, operations work its exceptions.
    Read.RECONCILIATION: EVERYONE,
    Action.RECON_RESOLVE: {OPERATIONS, ADMIN},
    Action.RECON_IGNORE: {OPERATIONS, ADMIN},
    # Partners, their keys and secrets, and the team: admins only (issue 12).
    Read.PARTNERS: {ADMIN},
    Read.TEAM: {ADMIN},
    Action.PARTNER_CREATE: {ADMIN},
    Action.PARTNER_EDIT: {ADMIN},
    Action.PARTNER_STATUS: {ADMIN},
    Action.PARTNER_ENTITLEMENT: {ADMIN},
    Action.PARTNER_KEY_ISSUE: {ADMIN},
    Action.PARTNER_KEY_ROLL: {ADMIN},
    Action.PARTNER_KEY_REVOKE: {ADMIN},
    Action.PARTNER_RETIRE_SECRET: {ADMIN},
    Action.PARTNER_TEST_EVENT: {ADMIN},
    Action.TEAM_CREATE: {ADMIN},
    Action.TEAM_ROLE: {ADMIN},
    Action.TEAM_DEACTIVATE: {ADMIN},
}


# How a refusal ends: "Your role (support) may not claim trades." One
# phrase beside each rule of the matrix (the 403 page reads it).
MAY_NOT = {
    Read.RECORDS: "search or see timelines and lists of records",
    Read.QUEUE: "see the stuck queue",
    Read.AUDIT: "see the audit log",
    Read.RUN: "see guarded runs and their progress",
    Read.DELIVERIES: "see delivery health",
    Action.TRADE_REPOLL: "re-poll trades",
    Action.EVENT_REPLAY: "replay webhook events",
    Action.BULK_REPOLL: "re-poll stuck trades in bulk",
    Action.BULK_REPLAY: "replay the latest state of stuck trades in bulk",
    Action.BULK_RECOVER: "replay a partner's failed deliveries",
    Action.QUEUE_CLAIM: "claim trades",
    Action.QUEUE_UNCLAIM: "let go of claims",
    Action.QUEUE_TAKE_OVER: "take over or let go of someone else's claim",
    Action.POOL_SLA: "change a pool's SLA",
    Action.PARTNER_SET_ENDPOINT: "change a partner's webhook endpoint",
    Action.PARTNER_ROTATE_SECRET: "rotate a partner's signing secret",
    Read.RECONCILIATION: "see the daily close",
    Action.RECON_RESOLVE: "resolve reconciliation exceptions",
    Action.RECON_IGNORE: "ignore reconciliation exceptions",
    Read.PARTNERS: "see partners, their keys and secrets",
    Read.TEAM: "see the panel's users",
    Action.PARTNER_CREATE: "create partners",
    Action.PARTNER_EDIT: "edit partners",
    Action.PARTNER_STATUS: "suspend or reactivate partners",
    Action.PARTNER_ENTITLEMENT: "change a partner's entitlements",
    Action.PARTNER_KEY_ISSUE: "issue API keys",
    Action.PARTNER_KEY_ROLL: "roll API keys",
    Action.PARTNER_KEY_REVOKE: "revoke API keys",
    Action.PARTNER_RETIRE_SECRET: "retire a partner's signing secret",
    Action.PARTNER_TEST_EVENT: "send a partner a test event",
    Action.TEAM_CREATE: "create panel users",
    Action.TEAM_ROLE: "change a panel user's role",
    Action.TEAM_DEACTIVATE: "deactivate panel users",
}


class NotAllowed(PermissionDenied):
    """A 403 of the matrix: whose role was refused what, in words."""

    def __init__(self, role, what):
        self.role = role  # None: a signed-in user without a role
        self.what = what
        super().__init__(f"Your role ({role or 'none'}) may not {MAY_NOT[what]}.")


def can(user, what):
    return user.is_authenticated and role_of(user) in MATRIX[what]


def require(*what):
    """View guard: 403 and nothing happens for anyone the matrix does not give
    every one of ``what``."""
    unknown = [w for w in what if w not in MATRIX]
    if not what or unknown:
        raise ValueError(f"unknown permission {unknown or what!r}")

    def decorator(view):
        @wraps(view)
        def guarded(request, *args, **kwargs):
            for each in what:
                if not can(request.user, each):
                    raise NotAllowed(role_of(request.user), each)
            return view(request, *args, **kwargs)

        guarded.permissions = what
        return guarded

    return decorator
