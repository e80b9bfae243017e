"""The stuck-reserved queue, read: trades in ``reserved`` longer than their pool's SLA.

The set itself, its age bands and histogram, and what one page of it shows
beside each trade (age, holder, last poll, last delivery), plus the last
scheduled re-poll.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import (
    Count,
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.utils import timezone

from accounts.permissions import Action
from actions.models import Run
from lib.formats import duration
from records.models import DeliveryAttempt, Trade, WebhookEvent, order_url


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


# --- age bands ---------------------------------------------------------------


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

    A stuck trade gathers a read every few minutes, all kept: per trade, a
    LIMIT 1 subquery walks ``event_subject_time_idx`` (subject_id,
    created_at) backwards and stops at the newest read, instead of sorting
    every read of every trade of the page (DISTINCT ON).
    """
    newest = (
        WebhookEvent.objects.filter(
            source=WebhookEvent.Source.POLL, subject_id=OuterRef("transact_id")
        )
        .order_by("-created_at", "-id")
        .values("pk")[:1]
    )
    pks = Trade.objects.filter(transact_id__in=transact_ids).values(newest=Subquery(newest))
    polls = WebhookEvent.objects.filter(pk__in=pks).only(
        "event_id", "subject_id", "type", "created_at"
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
        trade.timeline = order_url(order.partner.partner_id, order.partner_reference)
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
        Run.objects.filter(action=Action.BULK_REPOLL, user__isnull=True, params__scheduled=True)
        .order_by("-created_at")
        .first()
    )
