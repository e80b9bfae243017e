"""Recovery: replaying a partner's failed deliveries since a time, as one guarded run.

Which events a recovery takes is ``recoverable``; ``request_recover`` asks
for the run through ``actions.services.request_run`` (rate limit,
idempotency key, the stale-set refusal, audited). Each event is then
replayed by the same step as a single replay, which records a delivery
attempt and an audit entry per event. Nothing here sends a task: the view
sends the run's task on commit.
"""

from django.db.models import Exists, OuterRef

from accounts.permissions import Action
from actions.services import Refused, request_run, set_version
from lib.formats import rfc3339, utc_text
from records.models import DeliveryAttempt, WebhookEvent

# A recovery replays at most this many events: each is a POST to one
# partner's endpoint, which may still be struggling, with its own timeout.
RECOVER_CAP = 1000


def recoverable(partner, since, until=None):
    """The partner's failing events that started failing at or after ``since``
    (and before ``until``): oldest failure first, one row per event.

    An event counts when its latest attempt (either source) failed, and the
    first of its failures since its last success (its first failure, if it
    never got through) is in the window. Only events the panel holds can be
    replayed: a failure reported for an event not stored yet is left out.
    """
    events = (
        DeliveryAttempt.objects.filter(partner=partner)
        .failing_events()
        .filter(
            Exists(WebhookEvent.objects.filter(event_id=OuterRef("event_id"))),
            failing_since__gte=since,
        )
    )
    if until is not None:
        events = events.filter(failing_since__lt=until)
    return events.order_by("failing_since", "event_id")


def describe(partner_id, size, since, until=None):
    """The run's target: what the dry run showed, in words."""
    deliveries = "delivery" if size == 1 else "deliveries"
    text = f"{partner_id}: {size} failed {deliveries} since {utc_text(since)}"
    return text + (f", before {utc_text(until)}" if until else "")


def request_recover(user, partner, event_ids, *, since, until, key, reason, drawn):
    """Queue one run replaying ``event_ids`` (the set as it is now), or refuse.

    ``drawn`` is the fingerprint of the set the dry run showed: a set that
    changed since (an event joined, one got through) is refused and audited
    by ``request_run``. The target names the set as drawn, so a resubmitted
    form finds its run even after the run has delivered the events.
    """
    current = set_version(event_ids)
    if len(event_ids) > RECOVER_CAP:
        raise Refused(
            f"More than {RECOVER_CAP:,} failed deliveries match: choose a later “since” or "
            "an earlier “before”, and recover in parts. Nothing was run."
        )
    if not event_ids and drawn == current:
        raise Refused(
            f"No delivery to {partner.partner_id} is failing in that time; nothing was run."
        )
    count = drawn.partition(":")[0]
    size = int(count) if count.isdigit() else len(event_ids)
    return request_run(
        user,
        Action.BULK_RECOVER,
        describe(partner.partner_id, size, since, until),
        key=key,
        reason=reason,
        drawn=drawn,
        current=current,
        params={
            "targets": list(event_ids),
            "partner": partner.partner_id,
            "since": rfc3339(since),
            "until": rfc3339(until) or None,
        },
        total=len(event_ids),
    )
