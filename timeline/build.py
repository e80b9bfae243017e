"""One order's status history, merged from every table that speaks of it.

``build(order)`` reads, in a fixed number of queries whatever the order's
size (``reads``: each served by an index named beside it), and returns a ``Timeline``:
the current state, the three clocks, one time-ordered list of items, the
consistency flags and a support-safe summary. Everything in it comes from
allowlisted columns and payloads.

The items are made in ``items``, the flags in ``flags``, the clocks and the
summary in ``summary``; this module queries and merges.
"""

from dataclasses import dataclass

from django.utils import timezone

from lib.formats import amount_json, rfc3339_or_none
from records import states

from . import reads
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
    trades = reads.trades(order)
    quotes = reads.quotes(order)
    events, events_cut = reads.events(order, MAX_EVENTS)
    changes = reads.changes(trades)
    ledger = reads.ledger([t.transact_id for t in trades])
    deliveries = reads.deliveries([e.event_id for e in events])
    actions, actions_cut = reads.entries(order, MAX_EVENTS)

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
