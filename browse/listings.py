"""The four lists of records, each described once: what it shows, how it sorts,
what it exports. ``lib.listing.show_list`` does the rest."""

from django.db.models import OuterRef, Subquery

from lib.listing import Listing
from records.models import LedgerEntry, Order, Trade, WebhookEvent, order_url

from . import filters


def _latest_trade_status():
    latest = Trade.objects.filter(order=OuterRef("pk")).order_by("-created_at", "-id")
    return Subquery(latest.values("status")[:1])


def _link_orders(rows):
    for order in rows:
        order.timeline = order_url(order.partner.partner_id, order.partner_reference)


def _link_trades(rows):
    for trade in rows:
        trade.timeline = order_url(trade.order.partner.partner_id, trade.order.partner_reference)


def _link_events(rows):
    # An event whose order is not known yet (a ledger entry or delivery
    # attempt ahead of its trade) has no timeline to go to.
    for event in rows:
        order = event.order
        event.timeline = order and order_url(order.partner.partner_id, order.partner_reference)


def _link_ledger(rows):
    # A ledger entry names its trade by transact_id only; one query for the page.
    orders = {
        transact_id: (partner_id, reference)
        for transact_id, partner_id, reference in Trade.objects.filter(
            transact_id__in={entry.transact_id for entry in rows}
        ).values_list("transact_id", "order__partner__partner_id", "order__partner_reference")
    }
    for entry in rows:
        order = orders.get(entry.transact_id)
        entry.timeline = order and order_url(*order)


ORDERS = Listing(
    name="orders",
    title="Orders",
    filterset=filters.OrderFilter,
    queryset=lambda: Order.objects.select_related("partner").annotate(
        latest_status=_latest_trade_status()
    ),
    time_field="last_activity_at",
    table="browse/orders.html",
    engine="jinja2",
    csv_columns=[
        ("partnerId", "partner__partner_id"),
        ("partnerReference", "partner_reference"),
        ("livemode", "livemode"),
        ("latestTradeStatus", "latest_status"),
        ("firstSeenAt", "first_seen_at"),
        ("lastActivityAt", "last_activity_at"),
    ],
    link=_link_orders,
)

TRADES = Listing(
    name="trades",
    title="Trades",
    filterset=filters.TradeFilter,
    queryset=lambda: Trade.objects.select_related("order__partner", "pool"),
    time_field="created_at",
    table="browse/trades.html",
    engine="jinja2",
    csv_columns=[
        ("transactId", "transact_id"),
        ("quoteId", "quote_id"),
        ("partnerId", "order__partner__partner_id"),
        ("partnerReference", "order__partner_reference"),
        ("poolId", "pool__pool_id"),
        ("livemode", "livemode"),
        ("side", "side"),
        ("network", "network"),
        ("amountValue", "amount_value"),
        ("amountCurrency", "amount_currency"),
        ("deliverAmountValue", "deliver_value"),
        ("deliverAmountCurrency", "deliver_currency"),
        ("rate", "rate"),
        ("feeBps", "fee_bps"),
        ("idempotencyKey", "idempotency_key"),
        ("requestId", "request_id"),
        ("status", "status"),
        ("failureCode", "failure_code"),
        ("statusAt", "status_at"),
        ("reservedAt", "reserved_at"),
        ("finalAt", "final_at"),
        ("createdAt", "created_at"),
        ("updatedAt", "updated_at"),
    ],
    link=_link_trades,
)

EVENTS = Listing(
    name="events",
    title="Events",
    filterset=filters.EventFilter,
    # The payload is the bulk of the row and the list never shows it.
    queryset=lambda: WebhookEvent.objects.select_related("order__partner").defer(
        "payload", "last_error"
    ),
    time_field="created_at",
    table="browse/events.html",
    engine="jinja2",
    csv_columns=[
        ("id", "event_id"),
        ("type", "type"),
        ("livemode", "livemode"),
        ("createdAt", "created_at"),
        ("partnerId", "partner_id"),
        ("subjectId", "subject_id"),
        ("partnerReference", "order__partner_reference"),
        ("receivedAt", "received_at"),
        ("source", "source"),
        ("state", "state"),
        ("duplicateCount", "duplicate_count"),
    ],
    link=_link_events,
)

LEDGER = Listing(
    name="ledger",
    title="Ledger",
    filterset=filters.LedgerFilter,
    queryset=lambda: LedgerEntry.objects.select_related("partner", "pool"),
    time_field="posted_at",
    table="browse/ledger.html",
    engine="jinja2",
    csv_columns=[
        ("ledgerId", "ledger_id"),
        ("transactId", "transact_id"),
        ("partnerId", "partner__partner_id"),
        ("poolId", "pool__pool_id"),
        ("livemode", "livemode"),
        ("entryType", "entry_type"),
        ("direction", "direction"),
        ("amountValue", "amount_value"),
        ("amountCurrency", "amount_currency"),
        ("postedAt", "posted_at"),
    ],
    link=_link_ledger,
)
