"""What operations do from the stuck queue besides reading it.

Claim a trade, let it go, change a pool's SLA, and ask for a bulk run over
the filtered set. Each change writes its audit entry in the same
transaction; a refusal is audited too, then raised as ``Refused``. Nothing
here sends a task: the caller sends the run's task on commit.
"""

from django.db import transaction
from django.utils import timezone

from accounts.permissions import Action, can
from actions.services import Refused, request_run, set_version
from audit import log as audit
from audit.models import Entry
from lib.formats import utc_text
from records.models import Pool, Trade

from .models import Claim

# A bulk run acts on at most this many trades: a bigger set is narrowed first.
BULK_CAP = 5000


# --- bulk runs over the whole filtered set ----------------------------------------


def request_bulk(user, action, transact_ids, *, key, reason, drawn, filters):
    """Queue one bulk run over ``transact_ids`` (the set as it is now), or refuse.

    ``request_run`` refuses when ``drawn`` (the set the dry run
    showed) is not the set now, and finds the run a repeated key made. The
    target names the set as drawn, so a resubmitted form matches its run
    even after the run has moved trades out of the queue.
    """
    current = set_version(transact_ids)
    if len(transact_ids) > BULK_CAP:
        raise Refused(f"More than {BULK_CAP:,} trades match: narrow the filters. Nothing was run.")
    if not transact_ids and drawn == current:
        raise Refused("No trade in this set is stuck; nothing was run.")
    count = drawn.partition(":")[0]
    size = int(count) if count.isdigit() else len(transact_ids)
    return request_run(
        user,
        action,
        f"{size} stuck trade{'s' if size != 1 else ''}",
        key=key,
        reason=reason,
        drawn=drawn,
        current=current,
        params={"targets": list(transact_ids), "filters": filters},
        total=len(transact_ids),
    )


# --- claims -------------------------------------------------------------------------

DEFAULT_CLAIM_REASON = "from the stuck queue"


def _audit_claim(user, trade, action, reason, refused, detail):
    """The audit entry of a claim change, refused or done (inside its transaction)."""
    audit.record(
        actor=user,
        action=action,
        target=trade.transact_id,
        order=trade.order,
        reason=reason or DEFAULT_CLAIM_REASON,
        result=Entry.Result.REFUSED if refused else Entry.Result.OK,
        detail=refused or detail,
    )


def claim(user, trade, reason=""):
    """``user`` takes ``trade``. Returns whether anything changed.

    Claiming what you already hold does nothing (and writes nothing). A
    trade someone else holds is refused, unless an admin takes it over;
    the entry says from whom. A trade no longer reserved cannot be claimed.
    Refusals are audited too, then raised as ``Refused``.
    """
    refused = None
    with transaction.atomic():
        # The trade's row lock orders two people claiming it at once.
        locked = Trade.objects.select_for_update().get(pk=trade.pk)
        held = Claim.objects.select_related("user").filter(trade=trade).first()
        if held and held.user_id == user.pk:
            return False
        detail = ""
        if locked.status != Trade.Status.RESERVED:
            refused = f"{trade.transact_id} is {locked.status} now: there is nothing to claim."
        elif held and not can(user, Action.QUEUE_TAKE_OVER):
            refused = (
                f"{held.user.get_username()} holds {trade.transact_id} since "
                f"{utc_text(held.claimed_at)}; they (or an admin) can let it go."
            )
        elif held:
            detail = f"taken over from {held.user.get_username()}"
            held.user, held.claimed_at = user, timezone.now()
            held.save(update_fields=["user", "claimed_at"])
        else:
            Claim.objects.create(trade=trade, user=user)
        action = Action.QUEUE_TAKE_OVER if held and not refused else Action.QUEUE_CLAIM
        _audit_claim(user, trade, action, reason, refused, detail)
    if refused:
        raise Refused(refused)
    return True


def unclaim(user, trade, reason=""):
    """``user`` lets ``trade`` go. Returns whether anything changed.

    Nothing held: nothing to do. Only the holder, or an admin, may let a
    claim go; anyone else is refused (audited).
    """
    refused = None
    with transaction.atomic():
        Trade.objects.select_for_update().get(pk=trade.pk)
        held = Claim.objects.select_related("user").filter(trade=trade).first()
        if held is None:
            return False
        detail = ""
        if held.user_id != user.pk and not can(user, Action.QUEUE_TAKE_OVER):
            refused = f"{held.user.get_username()} holds {trade.transact_id}, not you."
        else:
            if held.user_id != user.pk:
                detail = f"let go of {held.user.get_username()}'s claim"
            held.delete()
        _audit_claim(user, trade, Action.QUEUE_UNCLAIM, reason, refused, detail)
    if refused:
        raise Refused(refused)
    return True


# --- pool SLA ---------------------------------------------------------------------------

SLA_MINUTES = (1, 1440)


def set_pool_sla(user, pool, minutes, reason):
    """Change how long a trade in ``pool`` may stay reserved. Returns whether it changed."""
    with transaction.atomic():
        locked = Pool.objects.select_for_update().get(pk=pool.pk)
        before = locked.sla_minutes
        if before == minutes:
            return False
        locked.sla_minutes = minutes
        locked.save(update_fields=["sla_minutes"])
        audit.record(
            actor=user,
            action=Action.POOL_SLA,
            target=pool.pool_id,
            reason=reason,
            detail=f"{before} → {minutes} min",
        )
    pool.sla_minutes = minutes
    return True
