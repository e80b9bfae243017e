"""One stored event as the event page tells it: where it came from, how it was
checked and processed, the order it belongs to, and every delivery of it to
the partner. The page and its JSON tell the same facts."""

from dataclasses import dataclass
from functools import cached_property

import orjson

from lib.formats import rfc3339_or_none
from records.models import DeliveryAttempt, WebhookEvent

# How each source vouches for an event (the contract: a webhook is signed, an
# import skips the check, a status read is the panel's own authenticated GET).
CHECKS = {
    WebhookEvent.Source.WEBHOOK: "Standard Webhooks signature",
    WebhookEvent.Source.IMPORT: "not checked: an import skips the signature check",
    WebhookEvent.Source.POLL: "none needed: a status read the panel asked 0Pools for itself",
}
# An envelope as the contract writes one; the database keeps no key order.
ENVELOPE_ORDER = ("id", "type", "createdAt", "livemode", "data")


@dataclass
class EventFacts:
    event: WebhookEvent
    attempts: list

    @cached_property
    def payload(self):
        """The stored envelope: the allowlisted fields, nothing else ever stored."""
        payload = self.event.payload
        if isinstance(payload, str | bytes):
            payload = orjson.loads(payload)
        # Below the envelope, keys sorted: the same event always reads the same.
        stored = orjson.loads(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
        first = {key: stored[key] for key in ENVELOPE_ORDER if key in stored}
        return first | stored

    @property
    def payload_text(self):
        return orjson.dumps(self.payload, option=orjson.OPT_INDENT_2).decode()

    @property
    def check(self):
        return CHECKS[self.event.source]

    @property
    def lag(self):
        """How long after it happened upstream we received it."""
        return self.event.received_at - self.event.created_at

    @property
    def timeline(self):
        order = self.event.order
        return order and order.get_absolute_url()

    @property
    def delivered_event_id(self):
        """For a report of a delivery attempt: the event it delivered."""
        if self.event.type == "webhook.delivery_attempted":
            return self.event.subject_id
        return None

    def as_json(self):
        event = self.event
        order = event.order
        return {
            "id": event.event_id,
            "type": event.type,
            "livemode": event.livemode,
            "partnerId": event.partner_id,
            "subjectId": event.subject_id,
            "createdAt": rfc3339_or_none(event.created_at),
            "receivedAt": rfc3339_or_none(event.received_at),
            "source": event.source,
            "signature": {
                "checked": event.source == WebhookEvent.Source.WEBHOOK,
                "verifiedWith": event.verified_with or None,
            },
            "duplicates": {
                "count": event.duplicate_count,
                "lastAt": rfc3339_or_none(event.last_duplicate_at),
            },
            "processing": {
                "state": event.state,
                "attempts": event.attempts,
                "lastError": event.last_error or None,
                "processedAt": rfc3339_or_none(event.processed_at),
            },
            "droppedKeys": event.dropped_keys,
            "order": order
            and {
                "partnerId": order.partner.partner_id,
                "partnerReference": order.partner_reference,
                "url": self.timeline,
            },
            "waitingFor": None if order else (event.link_key or None),
            "deliveryAttempts": [_attempt_json(attempt) for attempt in self.attempts],
            "payload": self.payload,
        }


def _attempt_json(attempt):
    report = attempt.reported_by
    return {
        "attempt": attempt.attempt,
        "attemptedAt": rfc3339_or_none(attempt.attempted_at),
        "outcome": attempt.outcome,
        "responseStatus": attempt.response_status,
        "durationMs": attempt.duration_ms,
        # 0Pools' own deliveries are told by a webhook.delivery_attempted
        # event; a replay the panel sent is told by nobody.
        "sentBy": "0pools" if report else "panel",
        "reportedBy": report.event_id if report else None,
    }


def facts(event):
    """The event and every delivery of it to the partner, oldest first, in one query."""
    attempts = list(
        DeliveryAttempt.objects.filter(event_id=event.event_id)
        .select_related("reported_by")
        .only(
            "attempt",
            "attempted_at",
            "outcome",
            "response_status",
            "duration_ms",
            "event_id",
            "reported_by__event_id",
            "reported_by__received_at",
        )
        .order_by("attempted_at", "id")
    )
    return EventFacts(event, attempts)
