"""One order's status history, merged from every table that speaks of it.

``build(order)`` reads, in a fixed number of queries whatever the order's
size (each served by an index named beside it), and returns a ``Timeline``:
the current state, the three clocks, one time-ordered list of items, the
consistency flags and a support-safe summary. Everything in it comes from
allowlisted columns and payloads.
"""

from dataclasses import dataclass, field
from datetime import timedelta

import orjson
from django.utils import timezone

from audit.models import Entry
from lib.formats import amount_json, duration, money, rfc3339_or_none, utc_text
from records import states
from records.models import DeliveryAttempt, LedgerEntry, Quote, StatusChange, Trade, WebhookEvent

# A timeline longer than this shows its newest items and says so.
MAX_EVENTS = 1000
# A webhook received this long after it happened upstream is shown as late.
LATE_AFTER = timedelta(minutes=5)
# Items at the same instant: the cause before its consequences.
KIND_RANK = {"quote": 0, "status": 1, "ledger": 2, "delivery": 3, "event": 4, "action": 5}
PARTNER_TERMS = {
    "reserved": "pending",
    "settled": "settled",
    "failed": "failed",
    "released": "released",
    "returned": "returned",
}


@dataclass
class Item:
    at: object
    kind: str
    title: str
    detail: str = ""
    ids: dict = field(default_factory=dict)
    learned_at: object = None
    source: str = ""
    flag: str = ""  # late, illegal, override, failed ...
    tiebreak: int = 0

    @property
    def learned_late(self):
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


@dataclass
class Flag:
    code: str
    title: str
    explanation: str

    def as_json(self):
        return {"code": self.code, "title": self.title, "explanation": self.explanation}


@dataclass
class Clock:
    name: str
    start: object
    end: object
    state: str  # what ended it, or "running"
    note: str = ""

    @property
    def duration(self):
        if self.start is None:
            return None
        return (self.end or timezone.now()) - self.start

    def as_json(self):
        return {
            "name": self.name,
            "start": rfc3339_or_none(self.start),
            "end": rfc3339_or_none(self.end),
            "state": self.state,
            "seconds": self.duration.total_seconds() if self.duration is not None else None,
            "note": self.note or None,
        }


@dataclass
class Timeline:
    order: object
    trade: object
    trades: list
    quotes: list
    items: list
    flags: list
    clocks: list
    summary: str
    truncated: bool = False

    @property
    def live(self):
        """True while a trade is pending: the page refreshes itself."""
        return any(t.status == states.RESERVED for t in self.trades)

    def as_json(self):
        order = self.order
        trade = self.trade
        return {
            "order": {
                "partnerId": order.partner.partner_id,
                "partnerReference": order.partner_reference,
                "livemode": order.livemode,
                "firstSeenAt": rfc3339_or_none(order.first_seen_at),
                "lastActivityAt": rfc3339_or_none(order.last_activity_at),
                "trade": _trade_json(trade) if trade else None,
                "trades": [t.transact_id for t in self.trades],
                "quotes": [q.quote_id for q in self.quotes],
            },
            "clocks": [c.as_json() for c in self.clocks],
            "items": [i.as_json() for i in self.items],
            "flags": [f.as_json() for f in self.flags],
            "summary": self.summary,
            "truncated": self.truncated,
        }


def _trade_json(trade):
    return {
        "transactId": trade.transact_id,
        "status": trade.status,
        "statusAt": rfc3339_or_none(trade.status_at),
        "failureCode": trade.failure_code or None,
        "poolId": trade.pool.pool_id,
        "network": trade.network,
        "amount": amount_json(trade.amount_value, trade.amount_currency),
        "deliverAmount": amount_json(trade.deliver_value, trade.deliver_currency),
        "reservedAt": rfc3339_or_none(trade.reserved_at),
        "finalAt": rfc3339_or_none(trade.final_at),
    }


def build(order, *, now=None):
    now = now or timezone.now()
    # trades of the order: records_trade.order_id (FK index)
    trades = list(
        Trade.objects.filter(order=order).select_related("pool").order_by("created_at", "id")
    )
    # quotes: records_quote.order_id (FK index)
    quotes = list(Quote.objects.filter(order=order).order_by("created_at", "id"))
    transact_ids = [t.transact_id for t in trades]
    # event_order_time_idx (order_id, created_at)
    events = list(
        WebhookEvent.objects.filter(order=order).order_by("-created_at", "-id")[: MAX_EVENTS + 1]
    )
    truncated = len(events) > MAX_EVENTS
    events = events[:MAX_EVENTS]
    # status_trade_time_idx (trade_id, upstream_at, id)
    changes = list(
        StatusChange.objects.filter(trade__order=order)
        .select_related("trade")
        .order_by("upstream_at", "id")
    )
    # records_ledgerentry.transact_id index
    ledger = list(
        LedgerEntry.objects.filter(transact_id__in=transact_ids).order_by("posted_at", "id")
    )
    # records_deliveryattempt.event_id index
    deliveries = list(
        DeliveryAttempt.objects.filter(event_id__in=[e.event_id for e in events]).order_by(
            "attempted_at", "id"
        )
    )

    # audit_order_idx (order_id, at)
    actions = list(Entry.objects.filter(order=order).order_by("at", "id")[:MAX_EVENTS])

    trade = trades[-1] if trades else None
    items = _items(events, changes, ledger, deliveries, quotes) + _action_items(actions)
    items.sort(key=lambda i: (i.at, KIND_RANK[i.kind], i.tiebreak))
    flags = _flags(trades, changes, ledger, deliveries, events, now)
    return Timeline(
        order=order,
        trade=trade,
        trades=trades,
        quotes=quotes,
        items=items,
        flags=flags,
        clocks=_clocks(trade, quotes, events, now),
        summary=_summary(order, trade, quotes),
        truncated=truncated,
    )


def _items(events, changes, ledger, deliveries, quotes):
    by_event = {e.pk: e for e in events}
    event_ids = {e.event_id: e for e in events}
    change_of = {c.event_id: c for c in changes}
    ledger_of = {entry.event_id: entry for entry in ledger}
    items = []
    for event in events:
        payload = event.payload if isinstance(event.payload, dict) else orjson.loads(event.payload)
        data = payload["data"]
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
            ids |= {"trade": data["transactId"]}
            if data.get("requestId"):
                ids["request"] = data["requestId"]
            if change:
                outcome = change.outcome
                title = (
                    (
                        f"{change.from_status} → {change.to_status}"
                        if change.from_status
                        else change.to_status
                    )
                    if outcome == states.APPLIED
                    else f"{change.to_status} ({outcome}, not applied)"
                    if outcome in (states.LATE, states.ILLEGAL)
                    else f"{change.from_status} → {change.to_status} (status read overrides)"
                )
                detail = change.note or provenance
                if change.note:
                    detail = f"{change.note}. {provenance}"
                items.append(
                    Item(
                        at=change.upstream_at,
                        kind="status",
                        title=f"Trade {title}",
                        detail=detail,
                        ids=ids,
                        flag="" if outcome == states.APPLIED else outcome,
                        **received,
                    )
                )
            else:
                items.append(
                    Item(
                        at=event.created_at,
                        kind="event",
                        title=f"{event.type} again: no change (already {data['status']})",
                        detail=provenance,
                        ids=ids,
                        **received,
                    )
                )
        elif event.type == "ledger.posted":
            entry = ledger_of.get(event.event_id)
            ids |= {"ledger": data["ledgerId"], "trade": data["transactId"]}
            amount = f"{data['amount']['value']} {data['amount']['currency']}"
            items.append(
                Item(
                    at=entry.posted_at if entry else event.created_at,
                    kind="ledger",
                    title=f"Ledger {data['entryType']} {data['direction']} {amount}",
                    detail=provenance,
                    ids=ids,
                    **received,
                )
            )
        else:  # webhook.delivery_attempted: shown from its attempt row below
            continue
    for attempt in deliveries:
        delivered = event_ids.get(attempt.event_id)
        what = delivered.type if delivered else attempt.event_id
        if attempt.response_status:
            answer = f"HTTP {attempt.response_status}"
            if attempt.duration_ms is not None:
                answer += f" in {attempt.duration_ms} ms"
        else:
            answer = "no answer"
            if attempt.duration_ms is not None:
                answer += f" after {attempt.duration_ms} ms"
        report = by_event.get(attempt.reported_by_id)
        items.append(
            Item(
                at=attempt.attempted_at,
                kind="delivery",
                title=(
                    f"Delivery of {what} to the partner: "
                    f"attempt {attempt.attempt}, {attempt.outcome}"
                ),
                detail=answer + (f". {_provenance(report)}" if report else ""),
                ids={"event": attempt.event_id},
                flag="" if attempt.outcome == "succeeded" else "failed",
                learned_at=report.received_at if report else None,
                source=report.source if report else "",
                tiebreak=attempt.pk,
            )
        )
    return items


ACTION_TITLES = {
    "trade.repoll": "Re-poll",
    "event.replay": "Replay",
    "queue.claim": "Claimed",
    "queue.unclaim": "Unclaimed",
}


def _action_items(entries):
    """Support actions taken on the order, from the audit log."""
    items = []
    for entry in entries:
        title = f"{ACTION_TITLES.get(entry.action, entry.action)} of {entry.target}"
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


def _clocks(trade, quotes, events, now):
    clocks = []
    for quote in quotes:
        if quote.status == Quote.Status.UNAVAILABLE:
            clocks.append(
                Clock("quote", quote.created_at, quote.created_at, "unavailable", quote.quote_id)
            )
            continue
        if quote.accepted_at:
            end, state = quote.accepted_at, "accepted"
        elif quote.expired_at or (quote.expires_at and quote.expires_at <= now):
            end, state = quote.expires_at or quote.expired_at, "expired"
        else:
            end, state = None, "running"
        note = quote.quote_id
        if quote.expires_at:
            note += f", expiresAt {rfc3339_or_none(quote.expires_at)}"
        clocks.append(Clock("quote", quote.created_at, end, state, note))
    if trade:
        accepted = next((q for q in quotes if q.quote_id == trade.quote_id and q.accepted_at), None)
        calls = {
            (e.payload if isinstance(e.payload, dict) else orjson.loads(e.payload))["data"].get(
                "requestId"
            )
            for e in events
            if e.type == "trade.reserved"
        } - {None}
        note = trade.transact_id
        if len(calls) > 1:
            note += f", {len(calls)} transact calls (idempotent retries)"
        clocks.append(
            Clock(
                "execution",
                accepted.accepted_at if accepted else None,
                trade.created_at,
                "trade id returned",
                note,
            )
        )
        final = trade.status in states.FINAL_STATUSES
        clocks.append(
            Clock(
                "settlement",
                trade.reserved_at,
                trade.final_at if final else None,
                trade.status if final else "running",
                f"SLA {trade.pool.sla_minutes} min",
            )
        )
    return clocks


def _flags(trades, changes, ledger, deliveries, events, now):
    flags = []
    event_type = {e.event_id: e.type for e in events}
    for trade in trades:
        tid = trade.transact_id
        entries = [e for e in ledger if e.transact_id == tid]
        settlements = [e for e in entries if e.entry_type == LedgerEntry.EntryType.SETTLEMENT]
        if trade.status in (states.SETTLED, states.RETURNED) and not settlements:
            flags.append(
                Flag(
                    "settled_without_ledger",
                    "Settled without a settlement ledger entry",
                    f"{tid} is {trade.status} but the ledger has no settlement entry for it.",
                )
            )
        if settlements and trade.status not in (states.SETTLED, states.RETURNED):
            flags.append(
                Flag(
                    "ledger_without_settled",
                    "Ledger entry without a settled trade",
                    f"{settlements[0].ledger_id} posts a settlement for {tid}, "
                    f"which is {trade.status}.",
                )
            )
        expected = (trade.deliver_value, trade.deliver_currency)
        for entry in settlements:
            if (
                trade.deliver_value is not None
                and (entry.amount_value, entry.amount_currency) != expected
            ):
                flags.append(
                    Flag(
                        "amount_mismatch",
                        "Amount mismatch between trade and ledger",
                        f"{entry.ledger_id} posts "
                        f"{money(entry.amount_value, entry.amount_currency)}; "
                        f"{tid} delivers {money(*expected)}.",
                    )
                )
        if trade.status == states.RETURNED and not any(
            e.entry_type == LedgerEntry.EntryType.REVERSAL for e in entries
        ):
            flags.append(
                Flag(
                    "returned_without_reversal",
                    "Returned without a reversal",
                    f"{tid} was returned but the ledger has no reversal entry for it.",
                )
            )
        if trade.status == states.RESERVED and trade.reserved_at:
            age = now - trade.reserved_at
            if age > timedelta(minutes=trade.pool.sla_minutes):
                flags.append(
                    Flag(
                        "reserved_past_sla",
                        "Reserved past the pool SLA",
                        f"{tid} has been pending for {duration(age)}; "
                        f"{trade.pool.pool_id} settles within {trade.pool.sla_minutes} min.",
                    )
                )
        for change in changes:
            if change.trade_id == trade.pk and change.outcome != states.APPLIED:
                flags.append(
                    Flag(
                        f"{change.outcome}_move",
                        {
                            "late": "A late status move",
                            "illegal": "An illegal status move",
                            "override": "A status read overrode an illegal move",
                        }[change.outcome],
                        f"{tid}: {change.note}.",
                    )
                )
        if trade.status in states.FINAL_STATUSES:
            told = [
                d
                for d in deliveries
                if d.outcome == "succeeded" and event_type.get(d.event_id, "").startswith("trade.")
            ]
            last = max(told, key=lambda d: (d.attempted_at, d.pk), default=None)
            if last is None or event_type[last.event_id] != f"trade.{trade.status}":
                told_what = (
                    f"the last successful delivery was {event_type[last.event_id]}"
                    if last
                    else "no delivery of a trade event succeeded"
                )
                flags.append(
                    Flag(
                        "partner_not_told",
                        "Partner probably never told the final status",
                        f"{tid} is {trade.status}, but {told_what}.",
                    )
                )
    return flags


def _summary(order, trade, quotes):
    """Plain sentences in partner terms, safe to paste to the partner."""
    sentences = [f"Order {order.partner_reference}:"]
    if quotes:
        sentences.append(_quote_sentence(quotes))
    if trade is None:
        sentences.append("No trade was made for this order.")
        return " ".join(sentences)
    amount = money(trade.amount_value, trade.amount_currency)
    sentences.append(
        f"Trade {trade.transact_id} for {amount} on {trade.network} was accepted at "
        f"{utc_text(trade.reserved_at or trade.created_at)}."
    )
    if trade.status == states.RESERVED:
        sentences.append(
            f"It is {PARTNER_TERMS[trade.status]} (not final); we are following it up."
        )
    elif trade.status == states.SETTLED:
        delivered = (
            f" {money(trade.deliver_value, trade.deliver_currency)} was delivered."
            if trade.deliver_value is not None
            else ""
        )
        sentences.append(f"It settled at {utc_text(trade.final_at or trade.status_at)}.{delivered}")
    elif trade.status == states.FAILED:
        sentences.append(
            f"It failed at {utc_text(trade.status_at)}; no funds were delivered "
            "and the refund process applies."
        )
    elif trade.status == states.RELEASED:
        sentences.append(
            f"It was released at {utc_text(trade.status_at)}: nothing was delivered "
            "and the user may try again."
        )
    else:
        sentences.append(f"It settled and was later returned at {utc_text(trade.status_at)}.")
    return " ".join(sentences)


def _quote_sentence(quotes):
    parts = []
    for quote in quotes:
        amount = money(quote.amount_value, quote.amount_currency)
        if quote.status == Quote.Status.UNAVAILABLE:
            parts.append(
                f"a quote for {amount} on {quote.network} was unavailable "
                f"at {utc_text(quote.created_at)}"
            )
        elif quote.status == Quote.Status.ACCEPTED:
            parts.append(
                f"quote {quote.quote_id} for {amount} on {quote.network} "
                f"was accepted at {utc_text(quote.accepted_at)}"
            )
        elif quote.status == Quote.Status.EXPIRED or quote.expired_at:
            parts.append(
                f"quote {quote.quote_id} expired at "
                f"{utc_text(quote.expires_at or quote.expired_at)}"
            )
        else:
            parts.append(
                f"quote {quote.quote_id} for {amount} was given at {utc_text(quote.created_at)}"
                + (f", valid until {utc_text(quote.expires_at)}" if quote.expires_at else "")
            )
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."
