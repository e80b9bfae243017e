"""Closing a day, reading a day (closed or live), and working its exceptions.

``close_day`` stores the day as computed at the close, once. ``day_report``
reads a day: a closed day is its snapshot, each exception beside its state
now (still open, fixed by the data since, resolved or ignored), plus what
arrived after the close and what it would have changed; a day not closed
yet is computed live and says so. ``work`` resolves or ignores one
exception: confirmed, audited in the same transaction, idempotent, and
refused (audited too) when the page was drawn from another state.
"""

import hashlib
import time as clock
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from accounts.permissions import Action
from actions.services import Refused
from audit import log as audit
from audit.models import Entry
from lib.formats import utc_text
from lib.limits import a_minute_ago, over_the_limit
from records.models import Order, order_url

from . import kinds
from .compute import bounds, compute
from .models import Close, ClosedException, Resolution

OPEN, FIXED, NEW = "open", "fixed", "new"
RESOLVED, IGNORED = Resolution.State.RESOLVED, Resolution.State.IGNORED
# The states a page hides unless asked to show everything.
WORKED = frozenset({RESOLVED, IGNORED})


class NotOver(Exception):
    """The day is not over yet: it cannot be closed."""


def is_over(day, now=None):
    return bounds(day)[1] <= (now or timezone.now())


# --- closing ------------------------------------------------------------------------


def _in_one_snapshot(fn, *args):
    """``fn`` with its totals and its exceptions read from one snapshot
    (REPEATABLE READ), so an import committing between its statements
    cannot make a stored close disagree with itself. Inside a caller's
    transaction, that transaction's reads are what they are."""
    if connection.in_atomic_block:
        return fn(*args)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return fn(*args)


def close_day(day, *, by, now=None):
    """Close ``day`` (a ``date``): store its totals and exceptions as they are now.

    Returns ``(close, created)``; a day already closed is left as it was
    (``created`` False), so running it twice, or the beat and a person at
    once, closes it once.
    """
    now = now or timezone.now()
    if not is_over(day, now):
        raise NotOver(
            f"{day.isoformat()} is not over yet: it can be closed from "
            f"{day + timedelta(days=1)} 00:00 UTC."
        )
    existing = Close.objects.filter(day=day).first()
    if existing:
        return existing, False
    started = clock.perf_counter()
    computed = _in_one_snapshot(compute, day, now)
    took = round((clock.perf_counter() - started) * 1000)
    try:
        with transaction.atomic():
            close = Close.objects.create(
                day=day, closed_at=now, closed_by=by, totals=computed.totals, took_ms=took
            )
            ClosedException.objects.bulk_create(
                ClosedException(
                    close=close,
                    kind=found.kind,
                    subject=found.subject,
                    transact_id=found.transact_id,
                    ledger_id=found.ledger_id,
                    line=found.line,
                    facts=found.stored_facts(),
                )
                for found in computed.exceptions
            )
    except IntegrityError:  # closed by someone else at the same moment
        return Close.objects.get(day=day), False
    return close, True


def days_to_close(now=None):
    """The days the beat closes: each of the last ``OPSPANEL_CLOSE_CATCH_UP_DAYS`` days
    that is over by the grace period and not closed yet, oldest first."""
    now = now or timezone.now()
    grace = timedelta(minutes=settings.OPSPANEL_CLOSE_GRACE_MINUTES)
    last = (now - grace).date() - timedelta(days=1)
    days = [last - timedelta(days=n) for n in range(settings.OPSPANEL_CLOSE_CATCH_UP_DAYS)]
    closed = set(Close.objects.filter(day__in=days).values_list("day", flat=True))
    return sorted(day for day in days if day not in closed)


# --- reading a day ------------------------------------------------------------------


@dataclass
class Item:
    """One exception of the day as the page, the CSV and the JSON show it."""

    kind: str
    subject: str
    transact_id: str
    ledger_id: str
    line: str
    facts: dict
    state: str = OPEN  # open, fixed (by the data since the close), new (since the close)
    resolution: Resolution | None = None
    fixed_by: list = field(default_factory=list)  # late arrivals that touch it

    @property
    def key(self):
        return (self.kind, self.subject)

    @property
    def title(self):
        return kinds.KINDS[self.kind]

    @property
    def shown_state(self):
        """What the exception is now: resolved / ignored by a person, else its data state."""
        return self.resolution.state if self.resolution else self.state

    @property
    def workable(self):
        return self.resolution is None

    @property
    def version(self):
        """What the exception was when a page drew it: its state and its line."""
        digest = hashlib.sha256(self.line.encode()).hexdigest()[:16]
        return f"{self.shown_state}:{digest}"

    @property
    def link(self):
        """The order's timeline; for an entry whose trade is unknown, the id looked up."""
        partner, reference = self.facts.get("partnerId"), self.facts.get("partnerReference")
        if partner and reference is not None:
            return order_url(partner, reference)
        return reverse("lookup:id", args=[self.ledger_id or self.transact_id])

    @property
    def note(self):
        """The second line: what changed since, in words."""
        if self.state == FIXED:
            what = ", ".join(a.label for a in self.fixed_by) or "a record that arrived later"
            return f"Closed by itself: the data fixed it since the close ({what})."
        if self.state == NEW:
            what = ", ".join(a.label for a in self.fixed_by) or "records that arrived later"
            return f"Not in the close: appeared after it ({what})."
        return ""


@dataclass
class Arrival:
    """A record of the day that arrived after its close."""

    event_id: str
    what: str
    transact_id: str
    ledger_id: str
    happened_at: object
    received_at: object
    closes: list = field(default_factory=list)  # items it fixed
    opens: list = field(default_factory=list)  # items it made

    @property
    def label(self):
        return f"{self.what} received {utc_text(self.received_at)}"


@dataclass
class Report:
    day: date
    now: object
    close: Close | None
    totals: list
    items: list
    live_totals: list | None = None  # a closed day's totals if computed now
    arrivals: list = field(default_factory=list)

    @property
    def live(self):
        return self.close is None

    @property
    def over(self):
        return is_over(self.day, self.now)

    @property
    def totals_changed(self):
        return self.live_totals is not None and self.live_totals != self.totals


def _item_of_found(found):
    return Item(
        found.kind, found.subject, found.transact_id, found.ledger_id, found.line, found.facts
    )


def _item_of_closed(closed):
    return Item(
        closed.kind, closed.subject, closed.transact_id, closed.ledger_id, closed.line, closed.facts
    )


def day_report(day, now=None):
    """The day: its close (with the state of each exception now), or computed live."""
    now = now or timezone.now()
    close = Close.objects.filter(day=day).first()
    if close is None:
        computed = compute(day, now)
        report = Report(
            day, now, None, computed.totals, [_item_of_found(f) for f in computed.exceptions]
        )
    else:
        snapshot = [_item_of_closed(c) for c in close.exceptions.order_by("id")]
        computed = compute(
            day,
            now,
            trades={i.transact_id for i in snapshot if i.transact_id},
            ledgers={i.ledger_id for i in snapshot if i.ledger_id},
        )
        live = {found.key: found for found in computed.exceptions}
        for item in snapshot:
            if item.key not in live:
                item.state = FIXED
        known = {item.key for item in snapshot}
        start, end = bounds(day)
        # New since the close: found now for the day itself, not for a snapshot
        # subject whose status has since moved on to another day (that day has it).
        new = [
            _item_of_found(f)
            for f in computed.exceptions
            if f.key not in known
            and (f.kind == kinds.RESERVED_PAST_SLA or start <= f.facts["at"] < end)
        ]
        for item in new:
            item.state = NEW
        report = Report(day, now, close, close.totals, snapshot + new, live_totals=computed.totals)
        report.arrivals = _arrivals(day, close, report.items)
    resolutions = {
        (r.kind, r.subject): r for r in Resolution.objects.filter(day=day).select_related("user")
    }
    for item in report.items:
        item.resolution = resolutions.get(item.key)
    return report


LATE_SQL = """
SELECT ev.event_id, ev.received_at, l.posted_at, l.transact_id, l.ledger_id,
       l.entry_type || ' entry ' || l.ledger_id
FROM records_ledgerentry l JOIN records_webhookevent ev ON ev.event_id = l.event_id
WHERE ev.received_at > %(closed_at)s
  AND ((l.posted_at >= %(start)s AND l.posted_at < %(end)s) OR l.transact_id = ANY(%(subjects)s))
UNION
SELECT ev.event_id, ev.received_at, ev.created_at, ev.subject_id, '',
       ev.type || ' of ' || ev.subject_id
FROM records_webhookevent ev
WHERE ev.received_at > %(closed_at)s AND ev.type LIKE 'trade.%%'
  AND ((ev.created_at >= %(start)s AND ev.created_at < %(end)s)
       OR ev.subject_id = ANY(%(subjects)s))
ORDER BY 2, 1
LIMIT 500
"""


def _arrivals(day, close, items):
    """Records of the day received after the close (a ledger entry posted in the
    day or naming one of its exceptions' trades; a trade event of the day or of
    one of those trades), each with the exceptions it fixed or made."""
    start, end = bounds(day)
    subjects = sorted({i.transact_id for i in items if i.transact_id})
    params = {"closed_at": close.closed_at, "start": start, "end": end, "subjects": subjects}
    with connection.cursor() as cursor:
        cursor.execute(LATE_SQL, params)
        rows = cursor.fetchall()
    arrivals = [
        Arrival(event_id, what, transact_id, ledger_id, happened_at, received_at)
        for event_id, received_at, happened_at, transact_id, ledger_id, what in rows
    ]
    arrivals.sort(key=lambda a: (a.received_at, a.event_id))
    for arrival in arrivals:
        for item in items:
            touches = (arrival.transact_id and item.transact_id == arrival.transact_id) or (
                arrival.ledger_id and item.ledger_id == arrival.ledger_id
            )
            if not touches:
                continue
            if item.state == FIXED:
                arrival.closes.append(item)
                item.fixed_by.append(arrival)
            elif item.state == NEW:
                arrival.opens.append(item)
                item.fixed_by.append(arrival)
    return arrivals


def visible(items, show_all):
    """The items a page shows: every one with ``show_all``, else those not worked yet."""
    return list(items) if show_all else [i for i in items if i.shown_state not in WORKED]


# --- working an exception -------------------------------------------------------------

OUTCOMES = {RESOLVED: Action.RECON_RESOLVE, IGNORED: Action.RECON_IGNORE}


@dataclass(frozen=True)
class Worked:
    resolution: Resolution
    repeated: bool


def find_item(report, kind, subject):
    for item in report.items:
        if item.key == (kind, subject):
            return item
    return None


def _order_of(item):
    partner, reference = item.facts.get("partnerId"), item.facts.get("partnerReference")
    if not partner or reference is None:
        return None
    return Order.objects.filter(partner__partner_id=partner, partner_reference=reference).first()


def work(user, day, kind, subject, *, outcome, reason, key, drawn, report=None, now=None):
    """Resolve or ignore one exception of ``day``; see the module docstring.

    ``report`` is the day as the caller just computed it (``day_report``);
    without one it is computed here.

    The same ``key`` again finds the resolution it made (nothing new is
    written). Refusals (changed since drawn, already worked by someone
    else) are audited, then raised as ``Refused``.
    """
    action = OUTCOMES[outcome]
    existing = Resolution.objects.filter(key=key).select_related("user").first()
    if existing:
        if (existing.user_id, existing.day, existing.kind, existing.subject) != (
            user.pk,
            day,
            kind,
            subject,
        ):
            raise Refused("This form was already used for something else; reload the page.")
        return Worked(existing, repeated=True)
    # The limit before the day is computed: a refused flood does not pay for it.
    limited = over_the_limit(Entry.objects.filter(actor=user, at__gte=a_minute_ago()))
    if limited:
        raise Refused(limited, status=429)
    if report is None:
        report = day_report(day, now)
    item = find_item(report, kind, subject)
    if item is None:
        raise Refused(f"{day.isoformat()} has no such exception ({kind} {subject}).", 404)
    order = _order_of(item)
    detail = f"{day.isoformat()} close, {item.title.lower()}: {item.line}"
    refused = None
    if item.resolution is not None:
        who = item.resolution
        refused = (
            f"{who.user.get_username()} already {who.state} this exception at "
            f"{utc_text(who.at)}; nothing was done."
        )
    elif drawn != item.version:
        refused = (
            "This exception changed since the page was drawn; nothing was done. "
            "Look again and confirm anew."
        )
    try:
        with transaction.atomic():
            if refused is None:
                resolution = Resolution.objects.create(
                    day=day,
                    kind=kind,
                    subject=subject,
                    state=outcome,
                    reason=reason,
                    line=item.line,
                    user=user,
                    at=timezone.now(),
                    key=key,
                )
            audit.record(
                actor=user,
                action=action,
                target=subject,
                order=order,
                reason=reason,
                result=Entry.Result.REFUSED if refused else Entry.Result.OK,
                detail=f"{refused} {detail}" if refused else detail,
            )
    except IntegrityError:  # worked by someone else at the same moment
        raise Refused(
            "Someone worked this exception at the same moment; nothing was done."
        ) from None
    if refused:
        raise Refused(refused)
    return Worked(resolution, repeated=False)
