"""What each record of an order reads like on its timeline: one ``Item`` each.

Received events (quotes, status changes, ledger postings), delivery attempts
to the partner and the support actions of the audit log all become items of
the same shape, which ``build`` merges into one history.
"""

from dataclasses import dataclass, field
from datetime import timedelta

import orjson

from accounts.permissions import Action
from audit.models import Entry
from lib.formats import rfc3339_or_none
from records import states
from records.models import DeliveryAttempt, WebhookEvent

# A webhook received this long after it happened upstream is shown as late.
LATE_AFTER = timedelta(minutes=5)


@dataclass
class Item:
    """One line of the history: what happened ``at`` (upstream time), and for a
    received event when and how the panel learned of it. ``tiebreak`` (the
    row's id) keeps items of one kind at one instant in arrival order."""

    at: object
    kind: str
    title: str
    detail: str = ""
    ids: dict = field(default_factory=dict)
    learned_at: object = None
    source: str = ""
    flag: str = ""  # a move's outcome, a failed delivery, an expired quote, an action not ok
    tiebreak: int = 0

    @property
    def learned_late(self):
        """Only a webhook or a status read can arrive late: an import is a
        backfill, learned after the fact by design."""
        return bool(
            self.learned_at
            and self.source in ("webhook", "poll")
            and self.learned_at - self.at > LATE_AFTER
        )

    def as_json(self):
        return {
            "at": rfc3339_or_none(self.at),
            "kind": self.kind,
            "summary": self.title + (f" — {self.detail}" if self.detail else ""),
            "ids": self.ids,
            "learnedAt": rfc3339_or_none(self.learned_at),
            "source": self.source or None,
            "flag": self.flag or None,
        }


def event_items(events, changes, ledger, deliveries):
    """One item per received event, and one per delivery attempt to the partner."""
    change_of = {c.event_id: c for c in changes}
    ledger_of = {entry.event_id: entry for entry in ledger}
    items = []
    for event in events:
        data = event_data(event)
        received = {
            "learned_at": event.received_at,
            "source": event.source,
            "tiebreak": event.pk,
        }
        provenance = _provenance(event)
        ids = {"event": event.event_id}
        if event.type.startswith("quote."):
            items.append(_quote_item(event, data, ids, provenance, received))
        elif event.type.startswith("trade."):
            change = change_of.get(event.pk)
            items.append(_trade_item(event, data, change, ids, provenance, received))
        elif event.type == "ledger.posted":
            entry = ledger_of.get(event.event_id)
            items.append(_ledger_item(event, data, entry, ids, provenance, received))
        # webhook.delivery_attempted: shown from its attempt row below
    by_pk = {e.pk: e for e in events}
    by_event_id = {e.event_id: e for e in events}
    for attempt in deliveries:
        delivered = by_event_id.get(attempt.event_id)
        report = by_pk.get(attempt.reported_by_id)
        items.append(_delivery_item(attempt, delivered, report))
    return items


def event_data(event):
    """The ``data`` of the event's stored envelope."""
    payload = event.payload if isinstance(event.payload, dict) else orjson.loads(event.payload)
    return payload["data"]


def _provenance(event):
    how = {"webhook": "webhook", "import": "import", "poll": "status read"}[event.source]
    parts = [f"{event.event_id} via {how}"]
    if event.source == "webhook":
        parts.append(f"signature ok ({event.verified_with})" if event.verified_with else "unsigned")
    if event.duplicate_count:
        parts.append(f"received {event.duplicate_count + 1} times")
    if event.state != WebhookEvent.State.PROCESSED:
        parts.append(f"{event.state} after {event.attempts} attempt(s)")
    return ", ".join(parts)


def _quote_item(event, data, ids, provenance, received):
    ids |= {"quote": data["quoteId"]}
    if data.get("requestId"):
        ids["request"] = data["requestId"]
    amount = f"{data['amount']['value']} {data['amount']['currency']}"
    kind = event.type.split(".", 1)[1]
    if kind == "created":
        title = f"Quote {data['quoteId']} created: {amount} on {data['network']}"
        if data.get("rate"):
            title += f" at {data['rate']}"
        if data.get("expiresAt"):
            title += f", expires {data['expiresAt'][11:19]} UTC"
    elif kind == "unavailable":
        title = f"Quote unavailable for {amount} on {data['network']} (no lock issued)"
    else:
        title = f"Quote {data['quoteId']} {kind}"
    return Item(
        at=event.created_at,
        kind="quote",
        title=title,
        detail=provenance,
        ids=ids,
        flag="expired" if kind == "expired" else "",
        **received,
    )


def _trade_item(event, data, change, ids, provenance, received):
    """A status move of the trade, or (no change recorded) a repeat of its status."""
    ids |= {"trade": data["transactId"]}
    if data.get("requestId"):
        ids["request"] = data["requestId"]
    if change is None:
        return Item(
            at=event.created_at,
            kind="event",
            title=f"{event.type} again: no change (already {data['status']})",
            detail=provenance,
            ids=ids,
            **received,
        )
    outcome = change.outcome
    if outcome == states.APPLIED:
        title = (
            f"{change.from_status} → {change.to_status}" if change.from_status else change.to_status
        )
    elif outcome in (states.LATE, states.ILLEGAL):
        title = f"{change.to_status} ({outcome}, not applied)"
    else:
        title = f"{change.from_status} → {change.to_status} (status read overrides)"
    return Item(
        at=change.upstream_at,
        kind="status",
        title=f"Trade {title}",
        detail=f"{change.note}. {provenance}" if change.note else provenance,
        ids=ids,
        flag="" if outcome == states.APPLIED else outcome,
        **received,
    )


def _ledger_item(event, data, entry, ids, provenance, received):
    ids |= {"ledger": data["ledgerId"], "trade": data["transactId"]}
    amount = f"{data['amount']['value']} {data['amount']['currency']}"
    return Item(
        at=entry.posted_at if entry else event.created_at,
        kind="ledger",
        title=f"Ledger {data['entryType']} {data['direction']} {amount}",
        detail=provenance,
        ids=ids,
        **received,
    )


def _delivery_item(attempt, delivered, report):
    """An attempt at delivering an event to the partner, told by ``report`` (an
    upstream webhook.delivery_attempted) or, for a replay, by nobody."""
    what = delivered.type if delivered else attempt.event_id
    if attempt.response_status:
        answer = f"HTTP {attempt.response_status}"
        if attempt.duration_ms is not None:
            answer += f" in {attempt.duration_ms} ms"
    else:
        answer = "no answer"
        if attempt.duration_ms is not None:
            answer += f" after {attempt.duration_ms} ms"
    return Item(
        at=attempt.attempted_at,
        kind="delivery",
        title=f"Delivery of {what} to the partner: attempt {attempt.attempt}, {attempt.outcome}",
        detail=answer + (f". {_provenance(report)}" if report else ""),
        ids={"event": attempt.event_id},
        flag="" if attempt.outcome == DeliveryAttempt.Outcome.SUCCEEDED else "failed",
        learned_at=report.received_at if report else None,
        source=report.source if report else "",
        tiebreak=attempt.pk,
    )


def action_items(entries):
    """Support actions taken on the order, from the audit log."""
    items = []
    for entry in entries:
        title = f"{_action_title(entry.action)} of {entry.target}"
        title += f" by {entry.actor_name}" + (f" ({entry.role})" if entry.role else "")
        title += f": {entry.get_result_display()}"
        if entry.before_status or entry.after_status:
            title += f", {entry.before_status or '?'} → {entry.after_status or '?'}"
        detail = entry.detail + (f". Reason: {entry.reason}" if entry.reason else "")
        items.append(
            Item(
                at=entry.at,
                kind="action",
                title=title,
                detail=detail,
                ids={"audit": entry.pk, "target": entry.target},
                flag="" if entry.result == Entry.Result.OK else entry.result,
                tiebreak=entry.pk,
            )
        )
    return items


def _action_title(name):
    """The action as a person reads it ("Re-poll"), from the one vocabulary.

    An entry the vocabulary does not name (an action since renamed or
    retired: the audit log is append-only) reads as its stored name.
    """
    try:
        return Action(name).label
    except ValueError:
        return name
