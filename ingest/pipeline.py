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

This module runs the steps; the writing is done by ``events`` (the event
rows themselves), ``upserts`` (partners, pools, orders, quotes, ledger,
deliveries), ``trades`` (the state machine) and ``linking`` (orders of early
arrivals, the identifier index). A refused webhook request is no event:
``refusals`` records it.
"""

from collections import defaultdict
from dataclasses import dataclass, field

import orjson
from django.db import transaction
from django.utils import timezone
from psycopg.sql import SQL

from records.models import WebhookEvent

from .contract import Envelope, parse_envelope
from .events import (
    Raced,
    Stored,
    count_repeats,
    insert_applied,
    mark_failed,
    mark_processed,
    store,
)
from .linking import index_identifiers, link_late_arrivals, place, relink_waiting
from .newest import keep as keep_newest
from .sql import execute, next_ids, table
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
        except Raced:
            pass
        results = store(envelopes, source)
        fresh = {r.pk for r in results if not r.duplicate}
        apply([(r.pk, source, e) for r, e in zip(results, envelopes, strict=True) if r.pk in fresh])
    return results


def _ingest_applied(envelopes, source):
    """``ingest`` with one write per new event; raise ``Raced`` (see there).

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
        count_repeats(now, known.values(), [times[event_id] for event_id in known])
    new = [event_id for event_id in first if event_id not in known]
    pk = dict(known)
    if new:
        pk.update(zip(new, next_ids(WebhookEvent, len(new)), strict=True))
        fresh = [(pk[event_id], source, first[event_id]) for event_id in new]
        placed, batch, linked = _apply_records(fresh)
        insert_applied(placed, source, times, now)
        _index_and_link(placed, batch, linked)
    results = []
    seen = set()
    for envelope in envelopes:
        duplicate = envelope.event_id in seen or envelope.event_id in known
        seen.add(envelope.event_id)
        results.append(Stored(pk[envelope.event_id], envelope.event_id, duplicate))
    return results


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
    # Public ids of the trade events 0Pools sent (for ``newest.keep``).
    sent: list = field(default_factory=list)
    ledger: list = field(default_factory=list)  # [(Envelope, data)]
    deliveries: list = field(default_factory=list)  # [(pk, data)]
    attempts: list = field(default_factory=list)  # pks of the attempts inserted


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
            batch.sent.append(envelope.event_id)
        elif envelope.object == "ledger_entry":
            batch.ledger.append((envelope, data))
        else:
            batch.deliveries.append((pk, data))
    return batch


def apply(events):
    """Apply ``[(pk, source, Envelope)]`` (stored, pending), in that order."""
    if not events:
        return
    placed, batch, linked = _apply_records(events)
    mark_processed(placed)
    _index_and_link(placed, batch, linked)


def _apply_records(events):
    """Write the records ``events`` carry; return their ``Placed``, the
    ``_Batch`` and the ids of the events whose order is known."""
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
    batch.attempts = insert_deliveries(batch.deliveries, partner_pk)
    placed, known = place(events, order_pk, trade_order)
    return placed, batch, known


def _index_and_link(placed, batch, known):
    """Once the events are written: the identifier index, early arrivals, and
    what the stuck queue shows beside the trades (``newest``)."""
    index_identifiers(placed)
    reported = link_late_arrivals(list(batch.trades), known)
    # The events 0Pools sent in this batch, and those whose waiting reports
    # were just linked: their attempts stored earlier join the newest.
    sent = batch.sent + reported
    keep_newest(polls=[pk for pk, _ in batch.polls], attempts=batch.attempts, sent=sent)


def _polls_are_activity(polls, recorded, order_pk):
    """A status read is activity only when it recorded a status (applied,
    late or overriding): one that found what we knew already leaves the
    order where it was in the orders list."""
    active = {}
    for pk, envelope in polls:
        if pk in recorded:
            touch_order(active, envelope)
    widen_activity(active, order_pk)


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
