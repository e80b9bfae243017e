"""The event rows of the pipeline (``records.WebhookEvent``): stored once per
event id, pending (the webhook) or already applied (import, poll), then
marked processed or failed. ``pipeline`` decides when; this module writes.
"""

from collections import defaultdict
from dataclasses import dataclass
from functools import cache

import orjson
from django.db.models import F
from django.utils import timezone
from psycopg.sql import SQL

from records.models import WebhookEvent

from .sql import Insert, Update, execute


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


def count_repeats(now, pks, times):
    """Stored events seen again: each ``pks[i]`` one more duplicate ``times[i]``
    times, the last at ``now``; one statement."""
    execute(
        SQL("""
        UPDATE {table} w SET {repeated}
          FROM unnest(%b::bigint[], %b::int[]) AS r(id, n)
         WHERE w.id = r.id
        """).format(table=EVENT_REPEATED.table, repeated=EVENT_REPEATED.set),
        [now, list(pks), list(times)],
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
        count_repeats(now, repeats, repeats.values())
    return results


class Raced(Exception):
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


def insert_applied(placed, source, times, now):
    """Write the applied events (``Placed``); raise ``Raced`` if one is stored already."""
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
        raise Raced


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


def mark_processed(placed):
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
