"""Partners, pools, orders, quotes, ledger entries and delivery attempts.

Each writer takes the whole batch in one statement per table; the two
gathering helpers fold a batch's events into one row per order and quote
first. Orders and quotes are upserted (a later event can add to them); ledger
entries and delivery attempts are inserted once and never changed.

An order's ``last_activity_at`` (the orders list sorts on it) moves with
every quote and trade event 0Pools sends, but with a status read of ours
only when the read recorded a status: the beat re-polls stuck trades every
few minutes, and a read that finds what we knew already is not activity.
"""

from collections import defaultdict

from psycopg.sql import SQL, Identifier, Literal

from records.models import DeliveryAttempt, LedgerEntry, Order, Partner, Pool, Quote

from .contract import parse_amount, parse_decimal, parse_optional_time, parse_time
from .sql import Insert, Update, execute, table

# The event type names the status it brings: quote.expired brings expired.
QUOTE_STATUS = {f"quote.{status}": status for status in Quote.Status.values}
# A quote's status only climbs this order: whatever arrives after
# "accepted" leaves it accepted.
QUOTE_RANK = tuple(
    status.value
    for status in (
        Quote.Status.CREATED,
        Quote.Status.UNAVAILABLE,
        Quote.Status.EXPIRED,
        Quote.Status.ACCEPTED,
    )
)

PARTNER_INSERT = Insert(Partner, ("partner_id", "name", "first_seen"))
POOL_INSERT = Insert(Pool, ("pool_id", "sla_minutes"))
ORDER_INSERT = Insert(
    Order, ("partner_id", "partner_reference", "livemode", "first_seen_at", "last_activity_at")
)
ORDER_WIDEN = Update(
    Order,
    (
        ("first_seen_at", "LEAST(o.first_seen_at, EXCLUDED.first_seen_at)"),
        ("last_activity_at", "GREATEST(o.last_activity_at, EXCLUDED.last_activity_at)"),
    ),
)
# An order only status reads named: known, but no activity (see ``widen_activity``).
ORDER_SEEN = Update(Order, (("first_seen_at", "LEAST(o.first_seen_at, EXCLUDED.first_seen_at)"),))
ORDER_ACTIVE = Update(Order, (("last_activity_at", "GREATEST(o.last_activity_at, u.at)"),))
QUOTE_INSERT = Insert(
    Quote,
    (
        "quote_id",
        "order_id",
        "pool_id",
        "livemode",
        "status",
        "side",
        "network",
        "amount_value",
        "amount_currency",
        "available",
        "quote_type",
        "executable",
        "rate",
        "spread_bps",
        "fee_bps",
        "request_id",
        "created_at",
        "expires_at",
        "accepted_at",
        "expired_at",
    ),
)
_RANKS = SQL("ARRAY[{}]").format(SQL(", ").join(map(Literal, QUOTE_RANK)))
# A stored quote keeps its higher status, its first accepted and expired
# times, and a rate or expiry a later event leaves out.
QUOTE_MERGE = Update(
    Quote,
    (
        (
            "status",
            SQL(
                "CASE WHEN array_position({ranks}, EXCLUDED.status::text)"
                " > array_position({ranks}, q.status::text)"
                " THEN EXCLUDED.status ELSE q.status END"
            ).format(ranks=_RANKS),
        ),
        ("rate", "COALESCE(EXCLUDED.rate, q.rate)"),
        ("expires_at", "COALESCE(EXCLUDED.expires_at, q.expires_at)"),
        ("accepted_at", "COALESCE(q.accepted_at, EXCLUDED.accepted_at)"),
        ("expired_at", "COALESCE(q.expired_at, EXCLUDED.expired_at)"),
    ),
)
LEDGER_INSERT = Insert(
    LedgerEntry,
    (
        "ledger_id",
        "transact_id",
        "partner_id",
        "pool_id",
        "livemode",
        "entry_type",
        "direction",
        "amount_value",
        "amount_currency",
        "posted_at",
        "event_id",
    ),
)
DELIVERY_INSERT = Insert(
    DeliveryAttempt,
    (
        "event_id",
        "partner_id",
        "attempt",
        "response_status",
        "duration_ms",
        "outcome",
        "attempted_at",
        "reported_by_id",
    ),
)


def touch_order(orders, envelope):
    """Note the order a quote or trade event names, and the span of its activity.

    ``orders`` is ``{(partner id, partner reference): [livemode, first at, last at]}``.
    """
    data, at = envelope.data, envelope.created_at
    key = (data["partnerId"], data["partnerReference"])
    row = orders.get(key)
    if row is None:
        orders[key] = [envelope.livemode, at, at]
    else:
        row[1] = min(row[1], at)
        row[2] = max(row[2], at)


def merge_quote(quotes, envelope):
    """Fold a quote event into ``quotes`` (``{quote id: row}``), one row a quote."""
    data = envelope.data
    status = QUOTE_STATUS[envelope.type]
    row = quotes.setdefault(
        data["quoteId"],
        {"status": status, "accepted_at": None, "expired_at": None, "livemode": envelope.livemode},
    )
    row["data"] = {**row.get("data", {}), **{k: v for k, v in data.items() if v is not None}}
    if QUOTE_RANK.index(status) > QUOTE_RANK.index(row["status"]):
        row["status"] = status
    if status == Quote.Status.ACCEPTED:
        row["accepted_at"] = row["accepted_at"] or envelope.created_at
    if status == Quote.Status.EXPIRED:
        row["expired_at"] = row["expired_at"] or envelope.created_at


def upsert_partners(partner_ids):
    """Insert the partners not stored yet; return {partner id: pk}."""
    if not partner_ids:
        return {}
    partner_ids = sorted(partner_ids)
    execute(
        SQL("""
        INSERT INTO {table} ({columns}) SELECT v, '', now() FROM unnest(%b::text[]) AS v
        ON CONFLICT (partner_id) DO NOTHING
        """).format(table=PARTNER_INSERT.table, columns=PARTNER_INSERT.names),
        [partner_ids],
    )
    return _pks(Partner, "partner_id", partner_ids)


def upsert_pools(pool_ids):
    """Insert the pools not stored yet, with the model's default SLA; return {pool id: pk}."""
    if not pool_ids:
        return {}
    pool_ids = sorted(pool_ids)
    execute(
        SQL("""
        INSERT INTO {table} ({columns}) SELECT v, %b FROM unnest(%b::text[]) AS v
        ON CONFLICT (pool_id) DO NOTHING
        """).format(table=POOL_INSERT.table, columns=POOL_INSERT.names),
        [Pool._meta.get_field("sla_minutes").get_default(), pool_ids],
    )
    return _pks(Pool, "pool_id", pool_ids)


def _pks(model, column, values):
    """{public id: pk} of the rows whose ``column`` is one of ``values``."""
    return dict(
        execute(
            SQL("SELECT {column}, id FROM {table} WHERE {column} = ANY(%b)").format(
                column=Identifier(column), table=table(model)
            ),
            [values],
        )
    )


def upsert_orders(orders, partner_pk, *, activity=True):
    """Insert or widen the batch's orders (see ``touch_order``); return {(partner id, ref): pk}.

    ``activity=False`` (orders named only by status reads) inserts an order
    not seen yet but leaves a known one's ``last_activity_at`` alone.
    """
    if not orders:
        return {}
    keys = sorted(orders)
    rows = execute(
        SQL("""
        INSERT INTO {table} AS o ({columns})
        SELECT * FROM unnest(%b::bigint[], %b::text[], %b::bool[],
                             %b::timestamptz[], %b::timestamptz[])
        ON CONFLICT (partner_id, partner_reference) DO UPDATE SET {widen}
        RETURNING id, partner_id, partner_reference
        """).format(
            table=ORDER_INSERT.table,
            columns=ORDER_INSERT.names,
            widen=(ORDER_WIDEN if activity else ORDER_SEEN).set,
        ),
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


def widen_activity(orders, order_pk):
    """Move ``last_activity_at`` of the orders ``touch_order`` gathered in
    ``orders`` (known ones, see ``order_pk``) up to their last time."""
    if not orders:
        return
    keys = sorted(orders)
    execute(
        SQL("""
        UPDATE {table} o SET {active}
          FROM unnest(%b::bigint[], %b::timestamptz[]) AS u(id, at)
         WHERE o.id = u.id
        """).format(table=ORDER_ACTIVE.table, active=ORDER_ACTIVE.set),
        [[order_pk[key] for key in keys], [orders[key][2] for key in keys]],
    )


def upsert_quotes(quotes, order_pk, pool_pk):
    """Insert the batch's quotes (see ``merge_quote``), or add to the stored ones."""
    if not quotes:
        return
    cols = defaultdict(list)
    for quote_id in sorted(quotes):
        row = quotes[quote_id]
        d = row["data"]
        value, currency = parse_amount(d, "amount")
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
        cols["rate"].append(parse_decimal(d.get("rate")))
        cols["spread_bps"].append(d.get("spreadBps"))
        cols["fee_bps"].append(d.get("feeBps"))
        cols["request_id"].append(d.get("requestId", ""))
        cols["created_at"].append(parse_time(d["createdAt"]))
        cols["expires_at"].append(parse_optional_time(d.get("expiresAt")))
        cols["accepted_at"].append(row["accepted_at"])
        cols["expired_at"].append(row["expired_at"])
    execute(
        SQL("""
        INSERT INTO {table} AS q ({columns})
        SELECT * FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::bool[], %b::text[],
               %b::text[], %b::text[], %b::numeric[], %b::text[], %b::bool[], %b::text[],
               %b::bool[], %b::numeric[], %b::int[], %b::int[], %b::text[], %b::timestamptz[],
               %b::timestamptz[], %b::timestamptz[], %b::timestamptz[])
        ON CONFLICT (quote_id) DO UPDATE SET {merge}
        """).format(table=QUOTE_INSERT.table, columns=QUOTE_INSERT.names, merge=QUOTE_MERGE.set),
        [cols[column] for column in QUOTE_INSERT.columns],
    )


def insert_ledger(entries, partner_pk, pool_pk):
    """Insert ``[(Envelope, data)]`` ledger entries; a ledger id already stored
    keeps its first version (the table is append-only)."""
    if not entries:
        return
    rows = []
    for envelope, d in entries:
        value, currency = parse_amount(d, "amount")
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
    execute(
        SQL("""
        INSERT INTO {table} ({columns})
        SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::bool[],
               %b::text[], %b::text[], %b::numeric[], %b::text[], %b::timestamptz[], %b::text[])
        ON CONFLICT (ledger_id) DO NOTHING
        """).format(table=LEDGER_INSERT.table, columns=LEDGER_INSERT.names),
        [list(col) for col in zip(*rows, strict=True)],
    )


def insert_deliveries(deliveries, partner_pk):
    """Insert ``[(event pk, data)]`` delivery attempts, once per reporting event;
    return the pks of those inserted."""
    if not deliveries:
        return []
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
    inserted = execute(
        SQL("""
        INSERT INTO {table} ({columns})
        SELECT * FROM unnest(%b::text[], %b::bigint[], %b::int[], %b::int[], %b::int[],
               %b::text[], %b::timestamptz[], %b::bigint[])
        ON CONFLICT (reported_by_id) DO NOTHING
        RETURNING id
        """).format(table=DELIVERY_INSERT.table, columns=DELIVERY_INSERT.names),
        [list(col) for col in zip(*rows, strict=True)],
    )
    return [pk for (pk,) in inserted]
