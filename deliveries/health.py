"""Delivery health, read: how each partner's deliveries went up to a moment.

Every figure is counted by PostgreSQL, one GROUP BY per question, over the
delivery attempts of both sources (those 0Pools reported and the panel's
own replays). ``delivery_partner_time_idx`` serves each: the windows are
``partner_id = ANY(%s) AND attempted_at > %s AND attempted_at <= %s``.

The windows end at ``at``: now, unless the page was asked for another
moment (see docs/decisions.md, "Delivery health").
"""

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Min,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.db.models.functions import Extract, Floor
from django.urls import reverse

from partners.services import host_of
from records.models import DeliveryAttempt, Partner, WebhookEvent

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WINDOWS = {"hour": HOUR, "day": DAY}
HOURS = 24  # columns of the hourly chart: the day window, an hour each
FAILING_SHOWN = 50  # failing events listed on a partner's page, newest first

SUCCEEDED = Q(outcome=DeliveryAttempt.Outcome.SUCCEEDED)
FAILED = Q(outcome=DeliveryAttempt.Outcome.FAILED)


class Percentile(Aggregate):
    """``PERCENTILE_CONT(fraction) WITHIN GROUP (ORDER BY expression)``, FILTER allowed.

    Nulls (an attempt that got no answer may have no duration) are left out,
    as every aggregate leaves them.
    """

    function = "PERCENTILE_CONT"
    name = "Percentile"
    output_field = FloatField()
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, fraction, **extra):
        if not 0 <= fraction <= 1:
            raise ValueError("a percentile is a fraction between 0 and 1")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


@dataclass(frozen=True)
class Window:
    """Attempts in one window: how many, how many succeeded, latency percentiles (ms)."""

    attempts: int = 0
    succeeded: int = 0
    p50: float | None = None
    p95: float | None = None

    @property
    def failed(self):
        return self.attempts - self.succeeded

    @property
    def success_rate(self):
        """Percent, or None with no attempt (no attempt is not 0 % success)."""
        return 100 * self.succeeded / self.attempts if self.attempts else None


def _window_aggregates(prefix, condition):
    return {
        f"{prefix}_attempts": Count("id", filter=condition),
        f"{prefix}_succeeded": Count("id", filter=condition & SUCCEEDED),
        f"{prefix}_p50": Percentile("duration_ms", 0.5, filter=condition),
        f"{prefix}_p95": Percentile("duration_ms", 0.95, filter=condition),
    }


def _in_day(partner_ids, at):
    return DeliveryAttempt.objects.filter(
        partner_id__in=partner_ids, attempted_at__gt=at - DAY, attempted_at__lte=at
    )


def windows(partner_ids, at):
    """``{partner pk: {"hour": Window, "day": Window}}``, in one GROUP BY.

    A partner with no attempt in the day has empty windows, not a missing key.
    """
    aggregates = {}
    for name, length in WINDOWS.items():
        aggregates |= _window_aggregates(name, Q(attempted_at__gt=at - length))
    rows = {
        row["partner_id"]: row
        for row in _in_day(partner_ids, at).values("partner_id").annotate(**aggregates).order_by()
    }
    empty = {name: Window() for name in WINDOWS}
    return {
        pk: {
            name: Window(
                row[f"{name}_attempts"],
                row[f"{name}_succeeded"],
                row[f"{name}_p50"],
                row[f"{name}_p95"],
            )
            for name in WINDOWS
        }
        if (row := rows.get(pk))
        else empty
        for pk in partner_ids
    }


@dataclass(frozen=True)
class Hour:
    """One column of the hourly chart: ``ago`` 0 is the hour that ends at ``at``."""

    ago: int
    succeeded: int = 0
    failed: int = 0
    p50: float | None = None
    p95: float | None = None

    @property
    def attempts(self):
        return self.succeeded + self.failed


def hourly(partner_ids, at):
    """``{partner pk: [Hour] * HOURS}``, oldest hour first, in one GROUP BY.

    Hour ``k`` holds the attempts in ``(at - (k+1) h, at - k h]``, so the
    newest column is exactly the "last hour" window.
    """
    age = ExpressionWrapper(Value(at) - F("attempted_at"), output_field=DurationField())
    rows = (
        _in_day(partner_ids, at)
        .annotate(ago=Floor(Extract(age, "epoch") / 3600))
        .values("partner_id", "ago")
        .annotate(
            succeeded=Count("id", filter=SUCCEEDED),
            failed=Count("id", filter=FAILED),
            p50=Percentile("duration_ms", 0.5),
            p95=Percentile("duration_ms", 0.95),
        )
        .order_by()
    )
    found = {(row["partner_id"], int(row["ago"])): row for row in rows}
    series = {}
    for pk in partner_ids:
        column = []
        for ago in reversed(range(HOURS)):
            row = found.get((pk, ago))
            column.append(
                Hour(ago, row["succeeded"], row["failed"], row["p50"], row["p95"])
                if row
                else Hour(ago)
            )
        series[pk] = column
    return series


@dataclass(frozen=True)
class Failing:
    """A partner's failing events: how many, and since when the oldest has been failing."""

    events: int = 0
    oldest: object = None  # datetime


def failing(partner_ids):
    """``{partner pk: Failing}``: events whose latest attempt failed, in one GROUP BY.

    Not bounded by the windows: an event that failed last week and was never
    delivered is still failing.
    """
    rows = (
        DeliveryAttempt.objects.filter(partner_id__in=partner_ids)
        .unanswered()
        .values("partner_id")
        .annotate(events=Count("event_id", distinct=True), oldest=Min("attempted_at"))
        .order_by()
    )
    found = {row["partner_id"]: Failing(row["events"], row["oldest"]) for row in rows}
    return {pk: found.get(pk, Failing()) for pk in partner_ids}


def partners():
    """Partners with their endpoint, their newest attempt (any age) and whether
    they are failing now (``Partner.objects.with_delivery_state``), by id.

    The newest attempt is shown beside every window: the windows end now,
    and a partner whose newest attempt is older than a day is quiet, not
    healthy.
    """
    return Partner.objects.with_delivery_state().select_related("endpoint").order_by("partner_id")


def endpoint_host(partner):
    """The endpoint's host only: never its path, query or any secret."""
    endpoint = getattr(partner, "endpoint", None)
    return host_of(endpoint.url) if endpoint else ""


def failing_events(partner, limit=FAILING_SHOWN):
    """The partner's failing events, newest failure first, at most ``limit``.

    Each row: ``event_id``, ``failing_since``, ``last_failed``, ``failures``,
    the latest attempt's ``last_status`` and whether the panel sent it
    (``last_ours``), the stored event's ``type`` and a ``link``.
    """
    latest = DeliveryAttempt.objects.filter(event_id=OuterRef("event_id")).order_by(
        "-attempted_at", "-id"
    )
    rows = list(
        DeliveryAttempt.objects.filter(partner=partner)
        .failing_events()
        .annotate(
            last_status=Subquery(latest.values("response_status")[:1]),
            last_reported_by=Subquery(latest.values("reported_by")[:1]),
        )
        .order_by("-last_failed", "-event_id")[:limit]
    )
    link_events(rows)
    for row in rows:
        row["last_ours"] = row["last_reported_by"] is None
    return rows


def link_events(rows):
    """Sets ``type`` and ``link`` on each row (``event_id``), in one query.

    The link is the event's order timeline; an event we do not hold, or
    whose order is not known yet, is found through search.
    """
    stored = {
        event.event_id: event
        for event in WebhookEvent.objects.filter(
            event_id__in=[row["event_id"] for row in rows]
        ).select_related("order__partner")
    }
    for row in rows:
        event = stored.get(row["event_id"])
        row["type"] = event.type if event else ""
        row["link"] = event_link(row["event_id"], event)


def event_link(event_id, event):
    if event is not None and event.order is not None:
        return event.order.get_absolute_url()
    return reverse("lookup:id", args=[event_id])
