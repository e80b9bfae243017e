"""An order at a glance: its three clocks (quote, execution, settlement) and
the support-safe summary, plain sentences in partner terms.
"""

from dataclasses import dataclass

from django.utils import timezone

from lib.formats import money, rfc3339_or_none, utc_text
from records import states
from records.models import Quote

from .items import event_data

# A trade status as support says it to a partner (the contract's words: a
# reserved trade is "pending").
PARTNER_TERMS = {
    states.RESERVED: "pending",
    states.SETTLED: "settled",
    states.FAILED: "failed",
    states.RELEASED: "released",
    states.RETURNED: "returned",
}


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


def clocks(trade, quotes, events, now):
    """A quote clock per quote (from the quote until accepted or expired), then
    the trade's execution clock (from the accepted quote until the trade id
    came back) and its settlement clock (from reserved until a final status)."""
    drawn = []
    for quote in quotes:
        if quote.status == Quote.Status.UNAVAILABLE:
            drawn.append(
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
        drawn.append(Clock("quote", quote.created_at, end, state, note))
    if trade:
        accepted = next((q for q in quotes if q.quote_id == trade.quote_id and q.accepted_at), None)
        requests = {event_data(e).get("requestId") for e in events if e.type == "trade.reserved"}
        calls = requests - {None}
        note = trade.transact_id
        if len(calls) > 1:
            note += f", {len(calls)} transact calls (idempotent retries)"
        drawn.append(
            Clock(
                "execution",
                accepted.accepted_at if accepted else None,
                trade.created_at,
                "trade id returned",
                note,
            )
        )
        final = trade.status in states.FINAL_STATUSES
        drawn.append(
            Clock(
                "settlement",
                trade.reserved_at,
                trade.final_at if final else None,
                trade.status if final else "running",
                f"SLA {trade.pool.sla_minutes} min",
            )
        )
    return drawn


def support_summary(order, trade, quotes):
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
