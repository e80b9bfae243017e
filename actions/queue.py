"""The stuck-reserved queue: trades in ``reserved`` longer than their pool's SLA.

What the queue page reads (the set, its age bands, the last poll and last
delivery of a page of trades, the last scheduled re-poll) and the three
things operations do from it besides bulk runs: claim a trade, let it go,
and change a pool's SLA. Each change writes its audit entry in the same
transaction.
"""

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import django_filters as filters
from django.db import transaction
from django.db.models import (
    Count,
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Value,
)
from django.utils import timezone

from accounts.roles import ADMIN, role_of
from audit import log as audit
from audit.models import Entry
from browse.filters import livemode_filter, partner_filter, pool_filter
from browse.listings import timeline_url
from lib.formats import duration
from records.models import DeliveryAttempt, Pool, Trade, WebhookEvent

from . import services
from .models import Claim, Run

# A bulk run acts on at most this many trades: a bigger set is narrowed first.
BULK_CAP = 5000


def stuck_trades(now=None):
    """Oldest first. Served by ``trade_reserved_age_idx`` (partial, status = 'reserved')."""
    now = now or timezone.now()
    sla = ExpressionWrapper(
        F("pool__sla_minutes") * timedelta(minutes=1), output_field=DurationField()
    )
    return (
        Trade.objects.filter(
            status=Trade.Status.RESERVED,
            reserved_at__lt=ExpressionWrapper(Value(now) - sla, output_field=DateTimeField()),
        )
        .select_related("order__partner", "pool")
        .order_by("reserved_at", "id")
    )


# --- age bands -----------------------------------------------------------------


@dataclass(frozen=True)
class AgeBand:
    key: str  # the ``age`` query parameter
    label: str
    low: timedelta | None  # age at least this
    high: timedelta | None  # and under this

    def q(self, now):
        """The band as a condition on ``reserved_at``: age = now - reserved_at."""
        condition = Q()
        if self.low is not None:
            condition &= Q(reserved_at__lte=now - self.low)
        if self.high is not None:
            condition &= Q(reserved_at__gt=now - self.high)
        return condition


# The first band starts at the pool's SLA (15 min unless changed): a trade
# younger than its SLA is not in the queue at all.
AGE_BANDS = (
    AgeBand("under-1h", "up to 1 h", None, timedelta(hours=1)),
    AgeBand("1-4h", "1–4 h", timedelta(hours=1), timedelta(hours=4)),
    AgeBand("4-24h", "4–24 h", timedelta(hours=4), timedelta(hours=24)),
    AgeBand("over-24h", "over 24 h", timedelta(hours=24), None),
)
BANDS = {band.key: band for band in AGE_BANDS}


class StuckFilter(filters.FilterSet):
    """What the queue, its histogram, its CSV and its bulk runs are narrowed by."""

    partner = partner_filter("order__partner__partner_id")
    pool = pool_filter()
    age = filters.ChoiceFilter(
        label="Age",
        choices=[(band.key, band.label) for band in AGE_BANDS],
        empty_label="any age",
        method="filter_age",
    )
    livemode = livemode_filter()

    def filter_age(self, queryset, name, value):
        return queryset.filter(BANDS[value].q(timezone.now()))

    def params(self):
        """The filters as asked, minus the empty ones: what a bulk run records and echoes."""
        return {
            name: str(self.form.data[name]).strip()
            for name in self.form.fields
            if str(self.form.data.get(name) or "").strip()
        }


@dataclass(frozen=True)
class PoolAges:
    pool_id: str
    sla_minutes: int
    counts: tuple  # one per AGE_BANDS

    @property
    def total(self):
        return sum(self.counts)


def age_histogram(queryset, now=None):
    """Stuck trades per pool and age band, in one GROUP BY over the filtered set."""
    now = now or timezone.now()
    rows = (
        queryset.order_by()
        .values("pool__pool_id", "pool__sla_minutes")
        .annotate(
            **{f"band{i}": Count("pk", filter=band.q(now)) for i, band in enumerate(AGE_BANDS)}
        )
        .order_by("pool__pool_id")
    )
    return [
        PoolAges(
            row["pool__pool_id"],
            row["pool__sla_minutes"],
            tuple(row[f"band{i}"] for i in range(len(AGE_BANDS))),
        )
        for row in rows
    ]


# --- one page of the queue ------------------------------------------------------


def last_polls(transact_ids):
    """transact_id -> its newest status read (a ``poll`` event), one query.

    DISTINCT ON walks ``event_subject_time_idx`` (subject_id, created_at).
    """
    polls = (
        WebhookEvent.objects.filter(source=WebhookEvent.Source.POLL, subject_id__in=transact_ids)
        .order_by("subject_id", "-created_at", "-id")
        .distinct("subject_id")
        .only("subject_id", "type", "created_at")
    )
    return {event.subject_id: event for event in polls}


def last_deliveries(transact_ids):
    """transact_id -> the newest delivery attempt of any of its events, one query.

    A trade's events are found by ``subject_id`` (``event_subject_time_idx``),
    their attempts by ``event_id`` (indexed); each attempt is tied back to
    its trade through the unique ``event_id``.
    """
    trade_events = WebhookEvent.objects.filter(subject_id__in=transact_ids)
    attempts = (
        DeliveryAttempt.objects.filter(event_id__in=trade_events.values("event_id"))
        .annotate(
            transact_id=trade_events.filter(event_id=OuterRef("event_id")).values("subject_id")[:1]
        )
        .order_by("transact_id", "-attempted_at", "-id")
        .distinct("transact_id")
    )
    return {attempt.transact_id: attempt for attempt in attempts}


def decorate(rows, now=None):
    """Give each trade of one page its age, timeline link, holder, last poll and
    last delivery: two queries for the page, none per row."""
    if not rows:
        return
    now = now or timezone.now()
    ids = [trade.transact_id for trade in rows]
    polls, deliveries = last_polls(ids), last_deliveries(ids)
    for trade in rows:
        order = trade.order
        trade.timeline = timeline_url(order.partner.partner_id, order.partner_reference)
        trade.age = duration(now - trade.reserved_at, smallest="min") if trade.reserved_at else ""
        trade.holder = getattr(trade, "claim", None)  # select_related("claim__user")
        trade.last_poll = polls.get(trade.transact_id)
        trade.last_delivery = deliveries.get(trade.transact_id)
        for done in (trade.last_poll, trade.last_delivery):
            if done is not None:
                moment = getattr(done, "created_at", None) or done.attempted_at
                done.ago = duration(now - moment, smallest="min")


def last_scheduled_repoll():
    """The beat job's newest run (``tasks.repoll_stuck_trades``); ``run_action_created_idx``."""
    return (
        Run.objects.filter(action="bulk.repoll", user__isnull=True, params__scheduled=True)
        .order_by("-created_at")
        .first()
    )


# --- bulk runs over the whole filtered set ----------------------------------------


def fingerprint(transact_ids):
    """What a set of trades "was" when the dry run was drawn: its size and a digest."""
    digest = hashlib.sha256("\n".join(sorted(transact_ids)).encode()).hexdigest()
    return f"{len(transact_ids)}:{digest[:16]}"


def request_bulk(user, action, transact_ids, *, key, reason, drawn, filters):
    """Queue one bulk run over ``transact_ids`` (the set as it is now), or refuse.

    ``services.request_run`` refuses when ``drawn`` (the set the dry run
    showed) is not the set now, and finds the run a repeated key made. The
    target names the set as drawn, so a resubmitted form matches its run
    even after the run has moved trades out of the queue.
    """
    current = fingerprint(transact_ids)
    if len(transact_ids) > BULK_CAP:
        raise services.Refused(
            f"More than {BULK_CAP:,} trades match: narrow the filters. Nothing was run."
        )
    if not transact_ids and drawn == current:
        raise services.Refused("No trade in this set is stuck; nothing was run.")
    count = drawn.partition(":")[0]
    size = int(count) if count.isdigit() else len(transact_ids)
    return services.request_run(
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


def _is_admin(user):
    return role_of(user) == ADMIN


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
    Refusals are audited too, then raised as ``services.Refused``.
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
        elif held and not _is_admin(user):
            refused = (
                f"{held.user.get_username()} holds {trade.transact_id} since "
                f"{held.claimed_at:%Y-%m-%d %H:%M} UTC; they (or an admin) can let it go."
            )
        elif held:
            detail = f"taken over from {held.user.get_username()}"
            held.user, held.claimed_at = user, timezone.now()
            held.save(update_fields=["user", "claimed_at"])
        else:
            Claim.objects.create(trade=trade, user=user)
        _audit_claim(user, trade, "queue.claim", reason, refused, detail)
    if refused:
        raise services.Refused(refused)
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
        if held.user_id != user.pk and not _is_admin(user):
            refused = f"{held.user.get_username()} holds {trade.transact_id}, not you."
        else:
            if held.user_id != user.pk:
                detail = f"let go of {held.user.get_username()}'s claim"
            held.delete()
        _audit_claim(user, trade, "queue.unclaim", reason, refused, detail)
    if refused:
        raise services.Refused(refused)
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
            action="pool.sla",
            target=pool.pool_id,
            reason=reason,
            detail=f"{before} → {minutes} min",
        )
    pool.sla_minutes = minutes
    return True
