"""Writing the audit log: call ``record`` inside the transaction of the change."""

from accounts.roles import role_of

from .models import Entry

# The actor name of what the beat does on its own (no user): the scheduled
# re-poll of stuck trades.
SCHEDULE = "schedule"


def record(
    *,
    actor,
    action,
    target,
    result=Entry.Result.OK,
    reason="",
    detail="",
    order=None,
    before_status="",
    after_status="",
    run_id=None,
    actor_name=None,
):
    """One audit entry. ``actor`` is a user, or None with ``actor_name`` ("schedule", "cli")."""
    return Entry.objects.create(
        actor=actor,
        actor_name=actor.get_username() if actor else (actor_name or "system"),
        role=(role_of(actor) or "") if actor else "",
        action=action,
        target=target,
        result=result,
        reason=reason,
        detail=detail[:2000],
        order=order,
        before_status=before_status or "",
        after_status=after_status or "",
        run_id=run_id,
    )
