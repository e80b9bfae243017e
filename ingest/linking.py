"""Which order each record belongs to, the identifier index, and early arrivals.

A ledger entry can arrive before its trade, a delivery attempt before the
event it delivered. Such a record is kept with a link key (the trade or
event id that will tell its order) and joins its order when that trade or
event is applied, here, or by ``relink_waiting`` from the sweep.
"""

from django.db import transaction

from .sql import execute


def place(events, order_pk, trade_order):
    """Find each event's order, or the key that will tell it.

    Returns ``[(pk, Envelope, order pk or None, link key)]`` in the events'
    order (the link key is "" once the order is known), and the ids of the
    events whose order is known, for ``link_late_arrivals``.
    """
    trade_order = dict(trade_order)
    ledger_tids = {
        e.data["transactId"] for _, _, e in events if e.object == "ledger_entry"
    } - trade_order.keys()
    if ledger_tids:
        trade_order.update(
            execute(
                "SELECT transact_id, order_id FROM records_trade WHERE transact_id = ANY(%b)",
                [list(ledger_tids)],
            )
        )
    referenced = {e.data["eventId"] for _, _, e in events if e.object == "delivery_attempt"}
    event_order = dict(
        execute(
            "SELECT event_id, order_id FROM records_webhookevent WHERE event_id = ANY(%b)",
            [list(referenced)],
        )
        if referenced
        else []
    )
    placed = []
    for pk, _source, envelope in events:
        data = envelope.data
        link = None
        if envelope.object in ("quote", "trade"):
            order = order_pk[(data["partnerId"], data["partnerReference"])]
        elif envelope.object == "ledger_entry":
            link = data["transactId"]
            order = trade_order.get(link)
        else:
            link = data["eventId"]
            # An event earlier in the batch counts: it was placed above.
            order = event_order.get(link)
        event_order[envelope.event_id] = order
        placed.append((pk, envelope, order, "" if order else link))
    return placed, [event_id for event_id, order in event_order.items() if order is not None]


def index_identifiers(placed):
    """Put every id the events carry in the identifier index (see ``place``)."""
    identifiers = {}
    for _pk, envelope, order, link_key in placed:
        partner = envelope.data["partnerId"]
        for value, kind in _identifiers(envelope):
            identifiers[(value, kind, partner, order)] = link_key
    _upsert_identifiers(identifiers)


def _identifiers(envelope):
    data = envelope.data
    yield envelope.event_id, "event"
    if envelope.object in ("quote", "trade"):
        yield data["partnerReference"], "order"
        if data.get("quoteId"):
            yield data["quoteId"], "quote"
        if data.get("requestId"):
            yield data["requestId"], "request"
    if envelope.object == "trade":
        yield data["transactId"], "trade"
        if data.get("idempotencyKey"):
            yield data["idempotencyKey"], "idempotency_key"
    elif envelope.object == "ledger_entry":
        yield data["ledgerId"], "ledger"


def _upsert_identifiers(identifiers):
    """Insert ``{(value, kind, partner, order or None): link key}``; known rows stay.

    A row that names its order replaces the waiting row (order null) of the
    same id, if there was one.
    """
    if not identifiers:
        return
    keys = sorted(identifiers, key=lambda k: (k[0], k[1], k[2], k[3] or 0))
    params = [
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
        [identifiers[k] for k in keys],
    ]
    execute(
        """
        WITH rows AS (
            SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[], %b::text[])
                   AS u(value, kind, partner_id, order_id, link_key)
        ), known AS (
            INSERT INTO records_identifier (value, kind, partner_id, order_id, link_key)
            SELECT * FROM rows WHERE order_id IS NOT NULL
            ON CONFLICT (value, kind, partner_id, order_id) WHERE order_id IS NOT NULL
            DO NOTHING
        ), waiting AS (
            INSERT INTO records_identifier (value, kind, partner_id, order_id, link_key)
            SELECT * FROM rows WHERE order_id IS NULL
            ON CONFLICT (value, kind, partner_id) WHERE order_id IS NULL DO NOTHING
        )
        DELETE FROM records_identifier i USING rows r
         WHERE i.order_id IS NULL AND r.order_id IS NOT NULL
           AND i.value = r.value AND i.kind = r.kind AND i.partner_id = r.partner_id
        """,
        params,
    )


def link_late_arrivals(transact_ids, event_ids):
    """Give an order to records that arrived before the trade or event that tells it.

    Served by the partial indexes ``event_unlinked_idx`` and
    ``identifier_unlinked_idx`` (``WHERE order_id IS NULL``), which hold only
    the few records still waiting.
    """
    linked = []
    if transact_ids:
        linked = [
            event_id
            for (event_id,) in execute(
                """
                UPDATE records_webhookevent e SET order_id = t.order_id, link_key = ''
                  FROM records_trade t
                 WHERE e.order_id IS NULL AND e.link_key = ANY(%b)
                   AND t.transact_id = e.link_key
                RETURNING e.event_id
                """,
                [transact_ids],
            )
        ]
        _link_identifiers(
            "records_trade t", "t.transact_id = i.link_key", "t.order_id", transact_ids
        )
    keys = event_ids + linked
    if keys:
        execute(
            """
            UPDATE records_webhookevent d SET order_id = e.order_id, link_key = ''
              FROM records_webhookevent e
             WHERE d.order_id IS NULL AND d.link_key = ANY(%b)
               AND e.event_id = d.link_key AND e.order_id IS NOT NULL
            """,
            [keys],
        )
        _link_identifiers(
            "records_webhookevent e",
            "e.event_id = i.link_key AND e.order_id IS NOT NULL",
            "e.order_id",
            keys,
        )


def _link_identifiers(source, join, order, keys):
    """Waiting identifier rows whose key now tells an order: link them, or drop
    them where a row for that id and order already exists."""
    execute(
        f"""
        UPDATE records_identifier i SET order_id = {order}, link_key = ''
          FROM {source}
         WHERE i.order_id IS NULL AND i.link_key = ANY(%b) AND {join}
           AND NOT EXISTS (
               SELECT 1 FROM records_identifier j
                WHERE j.value = i.value AND j.kind = i.kind
                  AND j.partner_id = i.partner_id AND j.order_id = {order})
        """,  # noqa: S608 - fixed table and column names from the callers above
        [keys],
    )
    execute(
        f"""
        DELETE FROM records_identifier i USING {source}
         WHERE i.order_id IS NULL AND i.link_key = ANY(%b) AND {join}
        """,  # noqa: S608 - as above
        [keys],
    )


def relink_waiting(limit=1000):
    """Link records still waiting whose trade or event has arrived since.

    The link step runs with the batch that brings a trade; a ledger event
    applied at the same moment by another worker (it could not see the
    uncommitted trade) misses it. The sweep calls this to catch those.
    Returns how many link keys were looked at.
    """
    keys = [
        key
        for (key,) in execute(
            """
            SELECT DISTINCT link_key FROM records_webhookevent
             WHERE order_id IS NULL AND link_key <> '' LIMIT %b
            """,
            [limit],
        )
    ] + [
        key
        for (key,) in execute(
            """
            SELECT DISTINCT link_key FROM records_identifier
             WHERE order_id IS NULL AND link_key <> '' LIMIT %b
            """,
            [limit],
        )
    ]
    if keys:
        keys = sorted(set(keys))
        with transaction.atomic():
            link_late_arrivals(
                [k for k in keys if k.startswith("pt_")], [k for k in keys if k.startswith("evt_")]
            )
    return len(keys)
