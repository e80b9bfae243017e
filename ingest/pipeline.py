"""The one ingest pipeline: the only writer of the 0Pools record tables.

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
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import orjson
import psycopg
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from records import states

from .contract import Envelope, parse_envelope, parse_time

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stored:
    pk: int
    event_id: str
    duplicate: bool


def _execute(sql, params=()):
    """Run one statement with server-side binding and binary parameters (``%b``).

    Django's psycopg cursors bind on the client, quoting every element of
    every array parameter as text; the pipeline's batches are arrays of
    thousands, so it talks to psycopg directly, on Django's connection and
    inside Django's transaction.
    """
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        if cursor.description is None:
            return []
        return cursor.fetchall()


# --- store -------------------------------------------------------------------


def store(envelopes, source, *, verified_with=""):
    """Store each envelope once; return a ``Stored`` per envelope, in order."""
    now = timezone.now()
    first = {}
    for envelope in envelopes:
        first.setdefault(envelope.event_id, envelope)
    fresh = list(first.values())
    rows = _execute(
        """
        INSERT INTO records_webhookevent (
            event_id, type, livemode, created_at, received_at, source, verified_with,
            duplicate_count, state, attempts, last_error, dropped_keys, payload,
            partner_id, subject_id, link_key)
        SELECT e.event_id, e.type, e.livemode, e.created_at, %b, %b, %b,
               0, 'pending', 0, '', e.dropped, e.payload, e.partner_id, e.subject_id, ''
        FROM unnest(%b::text[], %b::text[], %b::bool[], %b::timestamptz[], %b::int[],
                    %b::jsonb[], %b::text[], %b::text[])
             AS e(event_id, type, livemode, created_at, dropped, payload, partner_id, subject_id)
        ON CONFLICT (event_id) DO UPDATE
            SET duplicate_count = records_webhookevent.duplicate_count + 1,
                last_duplicate_at = EXCLUDED.received_at
        RETURNING id, event_id, (xmax = 0) AS inserted
        """,
        [
            now,
            source,
            verified_with,
            [e.event_id for e in fresh],
            [e.type for e in fresh],
            [e.livemode for e in fresh],
            [e.created_at for e in fresh],
            [e.dropped for e in fresh],
            [Jsonb(e.payload) for e in fresh],
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
    if repeats:  # the same event twice in one batch
        _execute(
            """
            UPDATE records_webhookevent e
               SET duplicate_count = e.duplicate_count + r.n, last_duplicate_at = %b
              FROM unnest(%b::bigint[], %b::int[]) AS r(id, n)
             WHERE e.id = r.id
            """,
            [now, list(repeats), list(repeats.values())],
        )
    return results


def ingest(envelopes, source):
    """Store and apply in one transaction; return a ``Stored`` per envelope."""
    with transaction.atomic():
        results = store(envelopes, source)
        fresh = {r.pk for r in results if not r.duplicate}
        apply([(r.pk, source, e) for r, e in zip(results, envelopes, strict=True) if r.pk in fresh])
    return results


def apply_stored(pks):
    """Apply stored events that are still pending; lock them while doing so.

    Used by the Celery task and the sweep. Rows locked by another worker are
    skipped (that worker applies them); processed rows are skipped, so
    running it twice applies nothing twice. Returns how many were applied.
    """
    rows = _execute(
        """
        SELECT id, source, payload FROM records_webhookevent
         WHERE id = ANY(%b) AND state <> 'processed'
         ORDER BY id
           FOR UPDATE SKIP LOCKED
        """,
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
    orders: dict = field(default_factory=dict)  # (partner, ref) -> [livemode, min_at, max_at]
    quotes: dict = field(default_factory=dict)  # quote id -> merged row
    trades: dict = field(default_factory=dict)  # transact id -> [(pk, source, at, data)]
    ledger: list = field(default_factory=list)
    deliveries: list = field(default_factory=list)


QUOTE_STATUS = {
    "quote.created": "created",
    "quote.unavailable": "unavailable",
    "quote.expired": "expired",
    "quote.accepted": "accepted",
}
QUOTE_RANK = ("created", "unavailable", "expired", "accepted")


def _touch_order(batch, data, livemode, at):
    key = (data["partnerId"], data["partnerReference"])
    row = batch.orders.get(key)
    if row is None:
        batch.orders[key] = [livemode, at, at]
    else:
        row[1] = min(row[1], at)
        row[2] = max(row[2], at)


def _gather(events):
    batch = _Batch()
    for pk, source, envelope in events:
        data = envelope.data
        batch.partners.add(data["partnerId"])
        if "poolId" in data:
            batch.pools.add(data["poolId"])
        at = envelope.created_at
        if envelope.object == "quote":
            _touch_order(batch, data, envelope.livemode, at)
            _merge_quote(batch, envelope)
        elif envelope.object == "trade":
            _touch_order(batch, data, envelope.livemode, at)
            batch.trades.setdefault(data["transactId"], []).append((pk, source, envelope))
        elif envelope.object == "ledger_entry":
            batch.ledger.append((envelope, data))
        else:
            batch.deliveries.append((pk, data))
    return batch


def _merge_quote(batch, envelope):
    data = envelope.data
    status = QUOTE_STATUS[envelope.type]
    row = batch.quotes.setdefault(
        data["quoteId"],
        {"status": status, "accepted_at": None, "expired_at": None, "livemode": envelope.livemode},
    )
    row["data"] = {**row.get("data", {}), **{k: v for k, v in data.items() if v is not None}}
    if QUOTE_RANK.index(status) > QUOTE_RANK.index(row["status"]):
        row["status"] = status
    if status == "accepted":
        row["accepted_at"] = row["accepted_at"] or envelope.created_at
    if status == "expired":
        row["expired_at"] = row["expired_at"] or envelope.created_at


def apply(events):
    """Apply ``[(pk, source, Envelope)]`` (stored, pending), in that order."""
    if not events:
        return
    batch = _gather(events)
    partner_pk = _upsert_ids("records_partner", "partner_id", batch.partners)
    pool_pk = _upsert_ids("records_pool", "pool_id", batch.pools, extra="sla_minutes", value=15)
    order_pk = _upsert_orders(batch.orders, partner_pk)
    _upsert_quotes(batch.quotes, order_pk, pool_pk)
    trade_order = _apply_trades(batch.trades, order_pk, pool_pk)
    _insert_ledger(batch.ledger, partner_pk, pool_pk)
    _insert_deliveries(batch.deliveries, partner_pk)

    # Which order each event belongs to, or the id that will tell it later.
    ledger_tids = {data["transactId"] for _, data in batch.ledger} - trade_order.keys()
    if ledger_tids:
        trade_order.update(
            _execute(
                "SELECT transact_id, order_id FROM records_trade WHERE transact_id = ANY(%b)",
                [list(ledger_tids)],
            )
        )
    referenced = {d["eventId"] for _, d in batch.deliveries}
    event_order = dict(
        _execute(
            "SELECT event_id, order_id FROM records_webhookevent WHERE event_id = ANY(%b)",
            [list(referenced)],
        )
        if referenced
        else []
    )
    links = []  # (pk, order pk or None, link key)
    identifiers = {}
    for pk, _source, envelope in events:
        data = envelope.data
        partner = data["partnerId"]
        order = link = None
        if envelope.object in ("quote", "trade"):
            order = order_pk[(partner, data["partnerReference"])]
        elif envelope.object == "ledger_entry":
            order = trade_order.get(data["transactId"])
            link = data["transactId"]
        else:
            link = data["eventId"]
            order = event_order.get(link)
        event_order[envelope.event_id] = order
        links.append((pk, order, "" if order else link))
        for value, kind in _identifiers(envelope):
            identifiers[(value, kind, partner, order)] = "" if order else link

    _execute(
        """
        UPDATE records_webhookevent e
           SET state = 'processed', processed_at = now(), attempts = e.attempts + 1,
               last_error = '', order_id = u.order_id, link_key = u.link_key
          FROM unnest(%b::bigint[], %b::bigint[], %b::text[]) AS u(id, order_id, link_key)
         WHERE e.id = u.id
        """,
        [[pk for pk, _, _ in links], [o for _, o, _ in links], [k for _, _, k in links]],
    )
    _upsert_identifiers(identifiers)
    _link_late_arrivals(
        list(batch.trades), [eid for eid, order in event_order.items() if order is not None]
    )


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


def _upsert_ids(table, column, values, extra=None, value=None):
    """Insert missing public ids; return {public id: pk}."""
    if not values:
        return {}
    values = sorted(values)
    if extra:
        _execute(
            f"INSERT INTO {table} ({column}, {extra}) "  # noqa: S608 - fixed names
            f"SELECT v, %b FROM unnest(%b::text[]) AS v ON CONFLICT ({column}) DO NOTHING",
            [value, values],
        )
    else:
        _execute(
            f"INSERT INTO {table} ({column}, name, first_seen) "  # noqa: S608 - fixed names
            f"SELECT v, '', now() FROM unnest(%b::text[]) AS v ON CONFLICT ({column}) DO NOTHING",
            [values],
        )
    return dict(
        _execute(f"SELECT {column}, id FROM {table} WHERE {column} = ANY(%b)", [values])  # noqa: S608
    )


def _upsert_orders(orders, partner_pk):
    if not orders:
        return {}
    keys = sorted(orders)
    rows = _execute(
        """
        INSERT INTO records_order
               (partner_id, partner_reference, livemode, first_seen_at, last_activity_at)
        SELECT * FROM unnest(%b::bigint[], %b::text[], %b::bool[],
                             %b::timestamptz[], %b::timestamptz[])
        ON CONFLICT (partner_id, partner_reference) DO UPDATE
           SET first_seen_at = LEAST(records_order.first_seen_at, EXCLUDED.first_seen_at),
               last_activity_at = GREATEST(records_order.last_activity_at,
                                           EXCLUDED.last_activity_at)
        RETURNING id, partner_id, partner_reference
        """,
        [
            [partner_pk[p] for p, _ in keys],
            [r for _, r in keys],
            [orders[k][0] for k in keys],
            [orders[k][1] for k in keys],
            [orders[k][2] for k in keys],
        ],
    )
    partner_of = {pk: public for public, pk in partner_pk.items()}
    return {(partner_of[partner], ref): pk for pk, partner, ref in rows}


def _amount(data, key):
    amount = data.get(key)
    if not amount:
        return None, ""
    return Decimal(amount["value"]), amount["currency"]


def _dec(value):
    return Decimal(value) if value is not None else None


def _time(value):
    return parse_time(value) if value else None


def _upsert_quotes(quotes, order_pk, pool_pk):
    if not quotes:
        return
    cols = defaultdict(list)
    for quote_id in sorted(quotes):
        row = quotes[quote_id]
        d = row["data"]
        value, currency = _amount(d, "amount")
        cols["quote_id"].append(quote_id)
        cols["order_id"].append(order_pk[(d["partnerId"], d["partnerReference"])])
        cols["pool_id"].append(pool_pk[d["poolId"]])
        cols["livemode"].append(row["livemode"])
        cols["status"].append(row["status"])
        cols["side"].append(d["side"])
        cols["network"].append(d["network"])
        cols["amount_value"].append(value)
        cols["amount_currency"].append(currency)
        cols["available"].append(d["available"])
        cols["quote_type"].append(d.get("type", ""))
        cols["executable"].append(d.get("executable"))
        cols["rate"].append(_dec(d.get("rate")))
        cols["spread_bps"].append(d.get("spreadBps"))
        cols["fee_bps"].append(d.get("feeBps"))
        cols["request_id"].append(d.get("requestId", ""))
        cols["created_at"].append(parse_time(d["createdAt"]))
        cols["expires_at"].append(_time(d.get("expiresAt")))
        cols["accepted_at"].append(row["accepted_at"])
        cols["expired_at"].append(row["expired_at"])
    _execute(
        """
        INSERT INTO records_quote (quote_id, order_id, pool_id, livemode, status, side, network,
               amount_value, amount_currency, available, quote_type, executable, rate,
               spread_bps, fee_bps, request_id, created_at, expires_at, accepted_at, expired_at)
        SELECT * FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::bool[], %b::text[],
               %b::text[], %b::text[], %b::numeric[], %b::text[], %b::bool[], %b::text[],
               %b::bool[], %b::numeric[], %b::int[], %b::int[], %b::text[], %b::timestamptz[],
               %b::timestamptz[], %b::timestamptz[], %b::timestamptz[])
        ON CONFLICT (quote_id) DO UPDATE SET
            status = CASE
                WHEN array_position(ARRAY['created','unavailable','expired','accepted'],
                                    EXCLUDED.status::text)
                   > array_position(ARRAY['created','unavailable','expired','accepted'],
                                    records_quote.status::text)
                THEN EXCLUDED.status ELSE records_quote.status END,
            rate = COALESCE(EXCLUDED.rate, records_quote.rate),
            expires_at = COALESCE(EXCLUDED.expires_at, records_quote.expires_at),
            accepted_at = COALESCE(records_quote.accepted_at, EXCLUDED.accepted_at),
            expired_at = COALESCE(records_quote.expired_at, EXCLUDED.expired_at)
        """,
        list(cols.values()),
    )


def _observed_at(envelope):
    """Upstream time of the status a trade event claims."""
    data = envelope.data
    for entry in reversed(data.get("statusHistory") or ()):
        if entry["status"] == data["status"]:
            return parse_time(entry["at"])
    return _time(data.get("updatedAt")) or envelope.created_at


def _reserved_at(envelope):
    data = envelope.data
    for entry in data.get("statusHistory") or ():
        if entry["status"] == states.RESERVED:
            return parse_time(entry["at"])
    if data["status"] == states.RESERVED:
        return _observed_at(envelope)
    return None


# Fixed fields of a trade, newest upstream view wins; order_id (first) is
# set once: a trade never moves to another order.
TRADE_COLUMNS = (
    ("order_id", "bigint"),
    ("pool_id", "bigint"),
    ("quote_id", "text"),
    ("livemode", "bool"),
    ("side", "text"),
    ("network", "text"),
    ("amount_value", "numeric"),
    ("amount_currency", "text"),
    ("deliver_value", "numeric"),
    ("deliver_currency", "text"),
    ("rate", "numeric"),
    ("fee_bps", "int"),
    ("idempotency_key", "text"),
    ("request_id", "text"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)


def _newest(name):
    """Set a fixed field from the batch's view only when that view is not older
    than the stored one: a late ``trade.reserved`` must not blank the
    ``deliverAmount`` a ``trade.settled`` brought."""
    if name == "updated_at":
        return "updated_at = GREATEST(t.updated_at, s.updated_at)"
    return f"{name} = CASE WHEN s.updated_at >= t.updated_at THEN s.{name} ELSE t.{name} END"


def _trade_static(envelope, order_pk, pool_pk):
    d = envelope.data
    value, currency = _amount(d, "amount")
    deliver_value, deliver_currency = _amount(d, "deliverAmount")
    created = parse_time(d["createdAt"])
    return (
        order_pk[(d["partnerId"], d["partnerReference"])],
        pool_pk[d["poolId"]],
        d.get("quoteId") or "",
        envelope.livemode,
        d["side"],
        d["network"],
        value,
        currency,
        deliver_value,
        deliver_currency,
        _dec(d.get("rate")),
        d.get("feeBps"),
        d.get("idempotencyKey") or "",
        d.get("requestId") or "",
        created,
        _time(d.get("updatedAt")) or envelope.created_at,
    )


def _apply_trades(trades, order_pk, pool_pk):
    """Upsert trades, run each observation through the state machine.

    New trades are inserted with an empty status first so that every trade
    of the batch can then be locked (``FOR UPDATE``, in id order so two
    workers never deadlock) and moved from the status it really has.
    Returns {transact id: order pk}.
    """
    if not trades:
        return {}
    ids = sorted(trades)
    static = {}
    for transact_id in ids:
        # The newest upstream view of the trade's fixed fields wins.
        newest = max(trades[transact_id], key=lambda obs: _trade_static_key(obs[2]))
        static[transact_id] = _trade_static(newest[2], order_pk, pool_pk)
    names = ", ".join(name for name, _ in TRADE_COLUMNS)
    casts = ", ".join(f"%b::{kind}[]" for _, kind in TRADE_COLUMNS)
    columns = [list(col) for col in zip(*(static[i] for i in ids), strict=True)]
    _execute(
        f"""
        INSERT INTO records_trade (transact_id, status, status_at, failure_code, {names})
        SELECT t.transact_id, '', t.created_at, '', {names}
          FROM unnest(%b::text[], {casts}) AS t(transact_id, {names})
        ON CONFLICT (transact_id) DO NOTHING
        """,  # noqa: S608 - column names are the constants above
        [ids, *columns],
    )
    current = {
        tid: [pk, status or None, status_at, failure_code, reserved_at, final_at]
        for pk, tid, status, status_at, failure_code, reserved_at, final_at in _execute(
            """
            SELECT id, transact_id, status, status_at, failure_code, reserved_at, final_at
              FROM records_trade WHERE transact_id = ANY(%b) ORDER BY id FOR UPDATE
            """,
            [ids],
        )
    }
    changes = []
    now = timezone.now()
    for transact_id in ids:
        row = current[transact_id]
        for event_pk, source, envelope in trades[transact_id]:
            claimed = envelope.data["status"]
            at = _observed_at(envelope)
            reserved = _reserved_at(envelope)
            if reserved and (row[4] is None or reserved < row[4]):
                row[4] = reserved
            outcome = states.classify(row[1], claimed, authoritative=source == "poll")
            if outcome == states.REPEAT:
                continue
            note = ""
            if outcome == states.LATE:
                note = f"{claimed} arrived after {row[1]}; kept {row[1]}"
            elif outcome == states.ILLEGAL:
                note = f"{row[1]} → {claimed} is not a legal move; kept {row[1]}"
            elif outcome == states.OVERRIDE:
                note = f"{row[1]} → {claimed} is not a legal move; the status read is authoritative"
            changes.append(
                (row[0], row[1] or "", claimed, at, now, source, event_pk, outcome, note)
            )
            if outcome in (states.APPLIED, states.OVERRIDE):
                row[1], row[2] = claimed, at
                row[3] = envelope.data.get("failureCode") or ""
            # The settlement clock stops at the first final status, even one
            # that arrived late (settled after returned).
            if outcome != states.ILLEGAL and claimed in states.FINAL_STATUSES:
                row[5] = at if row[5] is None else min(row[5], at)
    _execute(
        f"""
        UPDATE records_trade t
           SET status = u.status, status_at = u.status_at, failure_code = u.failure_code,
               reserved_at = u.reserved_at, final_at = u.final_at,
               {", ".join(_newest(name) for name, _ in TRADE_COLUMNS[1:])}
          FROM unnest(%b::bigint[], %b::text[], %b::timestamptz[], %b::text[],
                      %b::timestamptz[], %b::timestamptz[])
               AS u(id, status, status_at, failure_code, reserved_at, final_at),
               unnest(%b::text[], {casts}) AS s(transact_id, {names})
         WHERE t.id = u.id AND t.transact_id = s.transact_id
        """,  # noqa: S608 - column names are the constants above
        [
            [current[i][0] for i in ids],
            [current[i][1] for i in ids],
            [current[i][2] for i in ids],
            [current[i][3] for i in ids],
            [current[i][4] for i in ids],
            [current[i][5] for i in ids],
            ids,
            *columns,
        ],
    )
    if changes:
        _execute(
            """
            INSERT INTO records_statuschange (trade_id, from_status, to_status, upstream_at,
                   recorded_at, source, event_id, outcome, note)
            SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::timestamptz[],
                   %b::timestamptz[], %b::text[], %b::bigint[], %b::text[], %b::text[])
            """,
            [list(col) for col in zip(*changes, strict=True)],
        )
    return {tid: static[tid][0] for tid in ids}


def _trade_static_key(envelope):
    return (_time(envelope.data.get("updatedAt")) or envelope.created_at, envelope.created_at)


def _insert_ledger(entries, partner_pk, pool_pk):
    if not entries:
        return
    rows = []
    for envelope, d in entries:
        value, currency = _amount(d, "amount")
        rows.append(
            (
                d["ledgerId"],
                d["transactId"],
                partner_pk[d["partnerId"]],
                pool_pk[d["poolId"]],
                envelope.livemode,
                d["entryType"],
                d["direction"],
                value,
                currency,
                parse_time(d["postedAt"]),
                envelope.event_id,
            )
        )
    # Sorted: two workers inserting the same ids take their locks in one order.
    rows.sort(key=lambda row: row[0])
    # Append-only: a ledger id already stored keeps its first version.
    _execute(
        """
        INSERT INTO records_ledgerentry (ledger_id, transact_id, partner_id, pool_id, livemode,
               entry_type, direction, amount_value, amount_currency, posted_at, event_id)
        SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::bool[],
               %b::text[], %b::text[], %b::numeric[], %b::text[], %b::timestamptz[], %b::text[])
        ON CONFLICT (ledger_id) DO NOTHING
        """,
        [list(col) for col in zip(*rows, strict=True)],
    )


def _insert_deliveries(deliveries, partner_pk):
    if not deliveries:
        return
    rows = [
        (
            d["eventId"],
            partner_pk[d["partnerId"]],
            d["attempt"],
            d.get("responseStatus"),
            d.get("durationMs"),
            d["outcome"],
            parse_time(d["attemptedAt"]),
            pk,
        )
        for pk, d in deliveries
    ]
    _execute(
        """
        INSERT INTO records_deliveryattempt (event_id, partner_id, attempt, response_status,
               duration_ms, outcome, attempted_at, reported_by_id)
        SELECT * FROM unnest(%b::text[], %b::bigint[], %b::int[], %b::int[], %b::int[],
               %b::text[], %b::timestamptz[], %b::bigint[])
        ON CONFLICT (reported_by_id) DO NOTHING
        """,
        [list(col) for col in zip(*rows, strict=True)],
    )


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
    _execute(
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


def _link_late_arrivals(transact_ids, event_ids):
    """Give an order to records that arrived before the trade or event that tells it.

    Served by the partial indexes ``event_unlinked_idx`` and
    ``identifier_unlinked_idx`` (``WHERE order_id IS NULL``), which hold only
    the few records still waiting.
    """
    linked = []
    if transact_ids:
        linked = [
            event_id
            for (event_id,) in _execute(
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
        _execute(
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
    _execute(
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
    _execute(
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
        for (key,) in _execute(
            """
            SELECT DISTINCT link_key FROM records_webhookevent
             WHERE order_id IS NULL AND link_key <> '' LIMIT %b
            """,
            [limit],
        )
    ] + [
        key
        for (key,) in _execute(
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
            _link_late_arrivals(
                [k for k in keys if k.startswith("pt_")], [k for k in keys if k.startswith("evt_")]
            )
    return len(keys)


__all__ = ["Envelope", "Stored", "apply", "apply_stored", "ingest", "relink_waiting", "store"]
