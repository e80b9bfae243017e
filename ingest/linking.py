"""Which order each record belongs to, the identifier index, and early arrivals.

A ledger entry can arrive before its trade, a delivery attempt before the
event it delivered. Such a record is kept with a link key (the trade or
event id that will tell its order) and joins its order when that trade or
event is applied, here, or by ``relink_waiting`` from the sweep.
"""

from typing import NamedTuple

from django.db import transaction
from psycopg.sql import SQL

from records.models import Identifier, Trade, WebhookEvent

from .contract import Envelope
from .newest import keep as keep_newest
from .sql import Insert, Update, execute, table

IDENTIFIER_INSERT = Insert(Identifier, ("value", "kind", "partner_id", "order_id", "link_key"))
# A waiting row takes the order its source row (alias s) tells, and stops waiting.
EVENT_LINKED = Update(WebhookEvent, (("order_id", "s.order_id"), ("link_key", "''")))


class Placed(NamedTuple):
    pk: int
    envelope: Envelope
    order: int | None  # the order's pk, when known
    link_key: str  # the trade or event id that will tell the order; "" once known


def place(events, order_pk, trade_order):
    """Find the order of each ``(pk, source, Envelope)``, or the key that will tell it.

    Returns a ``Placed`` per event, in order, and the ids of the events
    whose order is known, for ``link_late_arrivals``.
    """
    trade_order = dict(trade_order)
    ledger_tids = {
        e.data["transactId"] for _, _, e in events if e.object == "ledger_entry"
    } - trade_order.keys()
    if ledger_tids:
        trade_order.update(
            execute(
                SQL(
                    "SELECT transact_id, order_id FROM {trades} WHERE transact_id = ANY(%b)"
                ).format(trades=table(Trade)),
                [list(ledger_tids)],
            )
        )
    referenced = {e.data["eventId"] for _, _, e in events if e.object == "delivery_attempt"}
    event_order = dict(
        execute(
            SQL("SELECT event_id, order_id FROM {events} WHERE event_id = ANY(%b)").format(
                events=table(WebhookEvent)
            ),
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
            # event_order also holds the events placed earlier in this batch.
            order = event_order.get(link)
        event_order[envelope.event_id] = order
        placed.append(Placed(pk, envelope, order, "" if order else link))
    return placed, [event_id for event_id, order in event_order.items() if order is not None]


def index_identifiers(placed):
    """Put every id the events carry in the identifier index (see ``place``)."""
    identifiers = {}
    for event in placed:
        partner = event.envelope.data["partnerId"]
        for value, kind in _identifiers(event.envelope):
            identifiers[(value, kind, partner, event.order)] = event.link_key
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
        SQL("""
        WITH rows AS (
            SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[], %b::text[])
                   AS u({columns})
        ), added AS (
            INSERT INTO {table} ({columns})
            SELECT * FROM rows
            ON CONFLICT (value, kind, partner_id, order_id) DO NOTHING
        )
        DELETE FROM {table} i USING rows r
         WHERE i.order_id IS NULL AND r.order_id IS NOT NULL
           AND i.value = r.value AND i.kind = r.kind AND i.partner_id = r.partner_id
        """).format(table=IDENTIFIER_INSERT.table, columns=IDENTIFIER_INSERT.names),
        params,
    )


def link_late_arrivals(transact_ids, event_ids):
    """Give an order to records that arrived before the trade or event that tells it.

    Served by the partial indexes ``event_unlinked_idx`` and
    ``identifier_unlinked_idx`` (``WHERE order_id IS NULL``), which hold only
    the few records still waiting. Returns the ids of the events whose
    waiting delivery reports it linked: their attempts may now be a trade's
    newest delivery (``newest.keep``).
    """
    linked, reported = [], []
    if transact_ids:
        linked = [
            event_id
            for (event_id,) in execute(
                SQL("""
                UPDATE {events} e SET {linked}
                  FROM {trades} s
                 WHERE e.order_id IS NULL AND e.link_key = ANY(%b)
                   AND s.transact_id = e.link_key
                RETURNING e.event_id
                """).format(
                    events=EVENT_LINKED.table, linked=EVENT_LINKED.set, trades=table(Trade)
                ),
                [transact_ids],
            )
        ]
        _link_identifiers(table(Trade), SQL("s.transact_id = i.link_key"), transact_ids)
    keys = event_ids + linked
    if keys:
        reported = [
            event_id
            for (event_id,) in execute(
                SQL("""
                UPDATE {events} d SET {linked}
                  FROM {events} s
                 WHERE d.order_id IS NULL AND d.link_key = ANY(%b)
                   AND s.event_id = d.link_key AND s.order_id IS NOT NULL
                RETURNING s.event_id
                """).format(events=EVENT_LINKED.table, linked=EVENT_LINKED.set),
                [keys],
            )
        ]
        _link_identifiers(
            table(WebhookEvent),
            SQL("s.event_id = i.link_key AND s.order_id IS NOT NULL"),
            keys,
        )
    return list(dict.fromkeys(reported))


def _link_identifiers(source, join, keys):
    """Waiting identifier rows whose key now tells an order (``source`` row ``s``
    found by ``join``) take that order, or give way to the row of that id and
    order that exists already.

    One statement: it removes a waiting row only to put its linked row in,
    from the same snapshot. Two statements (link, then drop what is left
    waiting) lost rows: under READ COMMITTED the second sees a waiting row
    another worker committed in between, which the first never linked. A
    row committed while this runs is not seen at all: it stays waiting, and
    ``relink_waiting`` links it.
    """
    execute(
        SQL("""
        WITH waiting AS (
            DELETE FROM {identifiers} i USING {source} s
             WHERE i.order_id IS NULL AND i.link_key = ANY(%b) AND {join}
            RETURNING i.value, i.kind, i.partner_id, s.order_id
        )
        INSERT INTO {identifiers} ({columns})
        SELECT value, kind, partner_id, order_id, '' FROM waiting
        ON CONFLICT (value, kind, partner_id, order_id) DO NOTHING
        """).format(
            identifiers=IDENTIFIER_INSERT.table,
            columns=IDENTIFIER_INSERT.names,
            source=source,
            join=join,
        ),
        [keys],
    )


def relink_waiting(limit=1000):
    """Link records still waiting whose trade or event has arrived since.

    The link step runs with the batch that brings a trade; a ledger event
    applied at the same moment by another worker (it could not see the
    uncommitted trade) misses it. The sweep calls this to catch those.
    Only keys that tell an order now are taken, so records waiting for a
    trade that never comes cannot fill the ``limit`` and hold back the rest.
    Returns how many link keys were looked at.
    """
    # Events and identifier rows wait the same way (order null, a link key).
    keys = sorted(
        {
            key
            for waiting in (WebhookEvent, Identifier)
            for (key,) in execute(
                SQL("""
                SELECT DISTINCT w.link_key FROM {waiting} w
                 WHERE w.order_id IS NULL AND w.link_key <> ''
                   AND (EXISTS (SELECT 1 FROM {trades} t WHERE t.transact_id = w.link_key)
                        OR EXISTS (SELECT 1 FROM {events} e
                                    WHERE e.event_id = w.link_key AND e.order_id IS NOT NULL))
                 LIMIT %b
                """).format(
                    waiting=table(waiting), trades=table(Trade), events=table(WebhookEvent)
                ),
                [limit],
            )
        }
    )
    if keys:
        with transaction.atomic():
            reported = link_late_arrivals(
                [k for k in keys if k.startswith("pt_")], [k for k in keys if k.startswith("evt_")]
            )
            # Reports that waited for their event, now linked: an attempt of
            # theirs may be the trade's newest delivery (see ``newest``).
            keep_newest(sent=reported)
    return len(keys)
