"""One order's status history, merged from every table that speaks of it.

``build(order)`` reads, in a fixed number of queries whatever the order's
size (each served by an index named beside it), and returns a ``Timeline``:
the current state, the three clocks, one time-ordered list of items, the
consistency flags and a support-safe summary. Everything in it comes from
allowlisted columns and payloads.

The items are made in ``items``, the flags in ``flags``, the clocks and the
summary in ``summary``; this module queries and merges.
"""

from dataclasses import dataclass

from django.db.models import IntegerField, Q, Value
from django.utils import timezone

from audit import log as audit
from audit.models import Entry
from lib.formats import amount_json, rfc3339_or_none
from records import states
from records.models import DeliveryAttempt, LedgerEntry, Quote, StatusChange, Trade, WebhookEvent

from .flags import consistency_flags
from .items import action_items, event_items, fold_polls
from .summary import clocks, support_summary

# A timeline longer than this shows its newest items and says so.
MAX_EVENTS = 1000
# Items at the same instant: the cause before its consequences.
KIND_RANK = {"quote": 0, "status": 1, "ledger": 2, "delivery": 3, "event": 4, "action": 5}


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
    # event_order_time_idx (order_id, created_at), newest first, in one
    # statement: the events 0Pools sent and our status reads each under
    # their own cap, so that days of scheduled re-polls never push the
    # quote, the trade's first status or the ledger off the timeline.
    ours = Q(source=WebhookEvent.Source.POLL)
    events = WebhookEvent.objects.filter(order=order).order_by("-created_at", "-id")
    events, events_cut = _capped(_newest_event, events.exclude(ours), events.filter(ours))
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

    # audit_order_idx (order_id, at), newest first, in one statement: what
    # people did and what the schedule did (a re-poll every few minutes)
    # each under their own cap.
    scheduled = Q(actor__isnull=True, actor_name=audit.SCHEDULE)
    actions = Entry.objects.filter(order=order).order_by("-at", "-id")
    actions, actions_cut = _capped(
        _newest_entry, actions.exclude(scheduled), actions.filter(scheduled)
    )

    trade = trades[-1] if trades else None
    items = event_items(events, changes, ledger, deliveries) + action_items(actions)
    items.sort(key=lambda i: (i.at, KIND_RANK[i.kind], i.tiebreak))
    items = fold_polls(items)
    flags = consistency_flags(trades, changes, ledger, deliveries, events, now)
    return Timeline(
        order=order,
        trade=trade,
        trades=trades,
        quotes=quotes,
        items=items,
        flags=flags,
        clocks=clocks(trade, quotes, events, now),
        summary=support_summary(order, trade, quotes),
        truncated=events_cut or actions_cut,
    )


def _newest_event(event):
    return (event.created_at, event.pk)


def _newest_entry(entry):
    return (entry.at, entry.pk)


def _capped(newest, *querysets):
    """The newest ``MAX_EVENTS`` rows of each queryset, read in one UNION ALL,
    and whether any of them had more. ``newest`` is the rows' sort key."""
    branches = [
        qs.annotate(branch=Value(n, IntegerField()))[: MAX_EVENTS + 1]
        for n, qs in enumerate(querysets)
    ]
    rows = sorted(branches[0].union(*branches[1:], all=True), key=newest, reverse=True)
    kept, cut = [], False
    for n in range(len(querysets)):
        mine = [row for row in rows if row.branch == n]
        kept += mine[:MAX_EVENTS]
        cut = cut or len(mine) > MAX_EVENTS
    return kept, cut
