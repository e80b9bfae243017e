"""The one ingest pipeline: the only way 0Pools events become records.

Two steps, each batched (one SQL statement per table per batch, never one
round trip per row):

``store``   puts envelopes in ``WebhookEvent`` once per event id. A
            duplicate bumps ``duplicate_count`` and changes nothing else.
``apply``   upserts the records the stored events carry and moves trades
            through the state machine (``records.states``), then joins
            records that arrived before the ones they refer to.

``ingest`` does both in one transaction (import, poll). The webhook stores
in the request and applies in a Celery task (``ingest.tasks``).

Events are applied in the order they were stored (their primary key), so a
batch behaves exactly like the same events arriving one by one.

This module runs the steps; the writing is done by ``upserts`` (partners,
pools, orders, quotes, ledger, deliveries), ``trades`` (the state machine)
and ``linking`` (orders of early arrivals, the identifier index). A refused
webhook request is no event: ``refusals`` records it.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache

import orjson
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from psycopg.sql import SQL, Literal

from records.models import WebhookEvent

from .contract import Envelope, parse_envelope
from .linking import index_identifiers, link_late_arrivals, place, relink_waiting
from .sql import Insert, Update, execute, table
from .trades import apply_trades
from .upserts import (
    insert_deliveries,
    insert_ledger,
    merge_quote,
    touch_order,
    upsert_orders,
    upsert_partners,
    upsert_pools,
    upsert_quotes,
    widen_activity,
)


@dataclass(frozen=True)
class Stored:
    pk: int
    event_id: str
    duplicate: bool


# --- store -------------------------------------------------------------------

# A new event row; the SELECT in ``store`` gives these columns in this order.
EVENT_INSERT = Insert(
    WebhookEvent,
    (
        "event_id",
        "type",
        "livemode",
        "created_at",
        "received_at",
        "source",
        "verified_with",
        "duplicate_count",
        "state",
        "attempts",
        "last_error",
        "dropped_keys",
        "payload",
        "partner_id",
        "subject_id",
        "link_key",
    ),
)
# A duplicate changes nothing but its count.
EVENT_DUPLICATE = Update(
    WebhookEvent,
    (
        ("duplicate_count", "w.duplicate_count + 1"),
        ("last_duplicate_at", "EXCLUDED.received_at"),
    ),
)
# The same event more than once in one batch; the ``%b`` is the time.
EVENT_REPEATED = Update(
    WebhookEvent,
    (("duplicate_count", "w.duplicate_count + r.n"), ("last_duplicate_at", "%b")),
)


# One event (the webhook's request): a plain VALUES row, its text built once.
# Against the unnest form for a batch of one it costs a third of the
# client's CPU (no eight one-element arrays to encode, no SQL composed per
# call) and half the server's time.
_STORE_ONE = SQL("""
    INSERT INTO {table} AS w ({columns})
    VALUES (%b, %b, %b, %b, %b, %b, %b, 0, 'pending', 0, '', %b, %b::jsonb, %b, %b, '')
    ON CONFLICT (event_id) DO UPDATE SET {duplicate}
    RETURNING id, (xmax = 0) AS inserted
    """).format(table=EVENT_INSERT.table, columns=EVENT_INSERT.names, duplicate=EVENT_DUPLICATE.set)


@cache
def _store_one_sql():
    return _STORE_ONE.as_bytes()


def _store_one(envelope, source, verified_with):
    ((pk, inserted),) = execute(
        _store_one_sql(),
        [
            envelope.event_id,
            envelope.type,
            envelope.livemode,
            envelope.created_at,
            timezone.now(),
            source,
            verified_with,
            envelope.dropped,
            orjson.dumps(envelope.payload).decode(),
            envelope.partner_id,
            envelope.subject_id,
        ],
    )
    return [Stored(pk, envelope.event_id, not inserted)]


def store(envelopes, source, *, verified_with=""):
    """Store each envelope once; return a ``Stored`` per envelope, in order."""
    if len(envelopes) == 1:
        return _store_one(envelopes[0], source, verified_with)
    now = timezone.now()
    first = {}
    for envelope in envelopes:
        first.setdefault(envelope.event_id, envelope)
    fresh = list(first.values())
    rows = execute(
        SQL("""
        INSERT INTO {table} AS w ({columns})
        SELECT e.event_id, e.type, e.livemode, e.created_at, %b, %b, %b,
               0, 'pending', 0, '', e.dropped, e.payload::jsonb, e.partner_id, e.subject_id, ''
        FROM unnest(%b::text[], %b::text[], %b::bool[], %b::timestamptz[], %b::int[],
                    %b::text[], %b::text[], %b::text[])
             AS e(event_id, type, livemode, created_at, dropped, payload, partner_id, subject_id)
        ON CONFLICT (event_id) DO UPDATE SET {duplicate}
        RETURNING id, event_id, (xmax = 0) AS inserted
        """).format(
            table=EVENT_INSERT.table, columns=EVENT_INSERT.names, duplicate=EVENT_DUPLICATE.set
        ),
        [
            now,
            source,
            verified_with,
            [e.event_id for e in fresh],
            [e.type for e in fresh],
            [e.livemode for e in fresh],
            [e.created_at for e in fresh],
            [e.dropped for e in fresh],
            [orjson.dumps(e.payload).decode() for e in fresh],
            [e.partner_id for e in fresh],
            [e.subject_id for e in fresh],
        ],
    )
    by_id = {event_id: (pk, inserted) for pk, event_id, inserted in rows}
    results = []
    seen = set()
    repeats = defaultdict(int)
    for envelope in envelopes:
        pk, inserted = by_id[envelope.event_id]
        duplicate = envelope.event_id in seen or not inserted
        if envelope.event_id in seen:
            repeats[pk] += 1
        seen.add(envelope.event_id)
        results.append(Stored(pk, envelope.event_id, duplicate))
    if repeats:
        execute(
            SQL("""
            UPDATE {table} w SET {repeated}
              FROM unnest(%b::bigint[], %b::int[]) AS r(id, n)
             WHERE w.id = r.id
            """).format(table=EVENT_REPEATED.table, repeated=EVENT_REPEATED.set),
            [now, list(repeats), list(repeats.values())],
        )
    return results


def ingest(envelopes, source):
    """Store and apply in one transaction; return a ``Stored`` per envelope.

    Each new event is written once, already applied (``_ingest_applied``).
    If another writer stores one of the batch's events meanwhile (a webhook
    while an import runs), the batch is rolled back to its savepoint and
    done the webhook's way: stored pending, then applied.
    """
    with transaction.atomic():
        try:
            with transaction.atomic():
                return _ingest_applied(envelopes, source)
        except _Raced:
            pass
        results = store(envelopes, source)
        fresh = {r.pk for r in results if not r.duplicate}
        apply([(r.pk, source, e) for r, e in zip(results, envelopes, strict=True) if r.pk in fresh])
    return results


class _Raced(Exception):
    """Another writer stored one of the batch's events while it was applied."""


# An event stored already applied (import, poll): one write per event, where
# storing pending and then marking it processed wrote each row, and every
# index entry of it, twice.
EVENT_APPLIED = Insert(
    WebhookEvent,
    (
        "id",
        "event_id",
        "type",
        "livemode",
        "created_at",
        "received_at",
        "source",
        "verified_with",
        "duplicate_count",
        "last_duplicate_at",
        "state",
        "processed_at",
        "attempts",
        "last_error",
        "dropped_keys",
        "payload",
        "partner_id",
        "subject_id",
        "order_id",
        "link_key",
    ),
)


def _ingest_applied(envelopes, source):
    """``ingest`` with one write per new event; raise ``_Raced`` (see there).

    The new events get their ids from the table's sequence first, in the
    order they arrived (arrival order is the id order, as when stored one by
    one), so they can be applied before their rows are written; the
    foreign keys that point at them (status changes, delivery attempts) are
    checked at commit (Django's are ``DEFERRABLE INITIALLY DEFERRED``).
    """
    now = timezone.now()
    times = defaultdict(int)
    first = {}
    for envelope in envelopes:
        times[envelope.event_id] += 1
        first.setdefault(envelope.event_id, envelope)
    events = table(WebhookEvent)
    known = dict(
        execute(
            SQL("SELECT event_id, id FROM {events} WHERE event_id = ANY(%b)").format(events=events),
            [list(first)],
        )
    )
    if known:
        execute(
            SQL("""
            UPDATE {table} w SET {repeated}
              FROM unnest(%b::bigint[], %b::int[]) AS r(id, n)
             WHERE w.id = r.id
            """).format(table=EVENT_REPEATED.table, repeated=EVENT_REPEATED.set),
            [now, list(known.values()), [times[event_id] for event_id in known]],
        )
    new = [event_id for event_id in first if event_id not in known]
    pk = dict(known)
    if new:
        ids = sorted(
            next_id
            for (next_id,) in execute(
                SQL(
                    "SELECT nextval(pg_get_serial_sequence({name}, 'id'))"
                    " FROM generate_series(1, %b)"
                ).format(name=Literal(WebhookEvent._meta.db_table)),
                [len(new)],
            )
        )
        pk.update(zip(new, ids, strict=True))
        fresh = [(pk[event_id], source, first[event_id]) for event_id in new]
        placed, transact_ids, linked = _apply_records(fresh)
        _insert_applied(placed, source, times, now)
        _index_and_link(placed, transact_ids, linked)
    results = []
    seen = set()
    for envelope in envelopes:
        duplicate = envelope.event_id in seen or envelope.event_id in known
        seen.add(envelope.event_id)
        results.append(Stored(pk[envelope.event_id], envelope.event_id, duplicate))
    return results


def _insert_applied(placed, source, times, now):
    """Write the applied events (``Placed``); raise ``_Raced`` if one is stored already."""
    envelopes = [p.envelope for p in placed]
    rows = execute(
        SQL("""
        INSERT INTO {table} ({columns})
        SELECT e.id, e.event_id, e.type, e.livemode, e.created_at, %b, %b, '',
               e.repeats, CASE WHEN e.repeats > 0 THEN %b::timestamptz END,
               'processed', now(), 1, '', e.dropped, e.payload::jsonb, e.partner_id,
               e.subject_id, e.order_id, e.link_key
        FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::bool[], %b::timestamptz[],
                    %b::int[], %b::int[], %b::text[], %b::text[], %b::text[], %b::bigint[],
                    %b::text[])
             AS e(id, event_id, type, livemode, created_at, repeats, dropped, payload,
                  partner_id, subject_id, order_id, link_key)
        ON CONFLICT (event_id) DO NOTHING
        RETURNING id
        """).format(table=EVENT_APPLIED.table, columns=EVENT_APPLIED.names),
        [
            now,
            source,
            now,
            [p.pk for p in placed],
            [e.event_id for e in envelopes],
            [e.type for e in envelopes],
            [e.livemode for e in envelopes],
            [e.created_at for e in envelopes],
            [times[e.event_id] - 1 for e in envelopes],
            [e.dropped for e in envelopes],
            [orjson.dumps(e.payload).decode() for e in envelopes],
            [e.partner_id for e in envelopes],
            [e.subject_id for e in envelopes],
            [p.order for p in placed],
            [p.link_key for p in placed],
        ],
    )
    if len(rows) != len(placed):
        raise _Raced


def apply_stored(pks):
    """Apply stored events that are still pending; lock them while doing so.

    Used by the Celery task and the sweep. Rows locked by another worker are
    skipped (that worker applies them); processed rows are skipped, so
    running it twice applies nothing twice. Returns how many were applied.
    """
    rows = execute(
        SQL("""
        SELECT id, source, payload FROM {events}
         WHERE id = ANY(%b) AND state <> 'processed'
         ORDER BY id
           FOR UPDATE SKIP LOCKED
        """).format(events=table(WebhookEvent)),
        [list(pks)],
    )
    # Django has psycopg hand jsonb over as text.
    apply([(pk, source, parse_envelope(orjson.loads(payload))) for pk, source, payload in rows])
    return len(rows)


# --- apply -------------------------------------------------------------------


@dataclass
class _Batch:
    """What one batch of events carries, gathered before any write."""

    partners: set = field(default_factory=set)
    pools: set = field(default_factory=set)
    orders: dict = field(default_factory=dict)  # see upserts.touch_order
    # Orders named only by status reads: no activity unless a read records a
    # status (``polls``, checked once the state machine has run).
    read_orders: dict = field(default_factory=dict)
    polls: list = field(default_factory=list)  # [(pk, Envelope)]
    quotes: dict = field(default_factory=dict)  # see upserts.merge_quote
    trades: dict = field(default_factory=dict)  # transact id -> [(pk, source, Envelope)]
    ledger: list = field(default_factory=list)  # [(Envelope, data)]
    deliveries: list = field(default_factory=list)  # [(pk, data)]


def _gather(events):
    batch = _Batch()
    for pk, source, envelope in events:
        data = envelope.data
        batch.partners.add(data["partnerId"])
        if "poolId" in data:
            batch.pools.add(data["poolId"])
        if envelope.object == "quote":
            touch_order(batch.orders, envelope)
            merge_quote(batch.quotes, envelope)
        elif envelope.object == "trade" and source == WebhookEvent.Source.POLL:
            touch_order(batch.read_orders, envelope)
            batch.polls.append((pk, envelope))
            batch.trades.setdefault(data["transactId"], []).append((pk, source, envelope))
        elif envelope.object == "trade":
            touch_order(batch.orders, envelope)
            batch.trades.setdefault(data["transactId"], []).append((pk, source, envelope))
        elif envelope.object == "ledger_entry":
            batch.ledger.append((envelope, data))
        else:
            batch.deliveries.append((pk, data))
    return batch


def apply(events):
    """Apply ``[(pk, source, Envelope)]`` (stored, pending), in that order."""
    if not events:
        return
    placed, transact_ids, linked = _apply_records(events)
    _mark_processed(placed)
    _index_and_link(placed, transact_ids, linked)


def _apply_records(events):
    """Write the records ``events`` carry; return their ``Placed``, the
    batch's trade ids and the ids of the events whose order is known."""
    batch = _gather(events)
    partner_pk = upsert_partners(batch.partners)
    pool_pk = upsert_pools(batch.pools)
    order_pk = upsert_orders(batch.orders, partner_pk)
    read_only = {key: row for key, row in batch.read_orders.items() if key not in order_pk}
    order_pk |= upsert_orders(read_only, partner_pk, activity=False)
    upsert_quotes(batch.quotes, order_pk, pool_pk)
    trade_order, recorded = apply_trades(batch.trades, order_pk, pool_pk)
    _polls_are_activity(batch.polls, recorded, order_pk)
    insert_ledger(batch.ledger, partner_pk, pool_pk)
    insert_deliveries(batch.deliveries, partner_pk)
    placed, known = place(events, order_pk, trade_order)
    return placed, list(batch.trades), known


def _index_and_link(placed, transact_ids, known):
    """Once the events are written: the identifier index, then early arrivals."""
    index_identifiers(placed)
    link_late_arrivals(transact_ids, known)


def _polls_are_activity(polls, recorded, order_pk):
    """A status read is activity only when it recorded a status (applied,
    late or overriding): one that found what we knew already leaves the
    order where it was in the orders list."""
    active = {}
    for pk, envelope in polls:
        if pk in recorded:
            touch_order(active, envelope)
    widen_activity(active, order_pk)


EVENT_PROCESSED = Update(
    WebhookEvent,
    (
        ("state", "'processed'"),
        ("processed_at", "now()"),
        ("attempts", "w.attempts + 1"),
        ("last_error", "''"),
        ("order_id", "u.order_id"),
        ("link_key", "u.link_key"),
    ),
)


def _mark_processed(placed):
    """Mark the events processed, each with its order or the key that will tell it."""
    execute(
        SQL("""
        UPDATE {table} w SET {processed}
          FROM unnest(%b::bigint[], %b::bigint[], %b::text[]) AS u(id, order_id, link_key)
         WHERE w.id = u.id
        """).format(table=EVENT_PROCESSED.table, processed=EVENT_PROCESSED.set),
        [[p.pk for p in placed], [p.order for p in placed], [p.link_key for p in placed]],
    )


def mark_failed(pks, exc):
    """Events whose apply failed: failed, with why, one more attempt counted (so
    the sweep gives up after its most attempts). Processed ones stay as they are."""
    WebhookEvent.objects.filter(pk__in=pks).exclude(state=WebhookEvent.State.PROCESSED).update(
        state=WebhookEvent.State.FAILED,
        attempts=F("attempts") + 1,
        last_error=f"{type(exc).__name__}: {exc}"[:500],
    )


__all__ = [
    "Envelope",
    "Stored",
    "apply",
    "apply_stored",
    "ingest",
    "mark_failed",
    "relink_waiting",
    "store",
]
