"""The data set's writing (bench/dataset.py folds the stream; this writes it).

While the stream plays, each row that is final when it is made goes out at
once through a COPY of its own (``copies``): the events, status changes,
ledger entries, delivery attempts, and every identifier row an event yields,
into a staging table. What the rest of the stream still changes (orders,
quotes, trades, an event's order learnt later) is written after, then the
identifier index is made from its staged rows in SQL (``write_identifiers``):
at 10 M events they are ~19 M rows, too many to fold in memory.
"""

from contextlib import ExitStack, contextmanager

import orjson
import psycopg
from psycopg import sql

EVENT_COLUMNS = (
    "id", "event_id", "type", "livemode", "created_at", "received_at", "source",
    "verified_with", "duplicate_count", "last_duplicate_at", "state", "attempts",
    "last_error", "processed_at", "dropped_keys", "payload", "partner_id", "subject_id",
    "order_id", "link_key",
)  # fmt: skip

# Each identifier row as its event was written: ``order_id`` and ``link_key``
# are the event's then (``bench_patch`` holds those learnt later).
STAGED = "bench_identifier_row"

PLAYED_COLUMNS = {
    "WebhookEvent": EVENT_COLUMNS,
    "StatusChange": (
        "id", "trade_id", "from_status", "to_status", "upstream_at", "recorded_at", "source",
        "event_id", "outcome", "note",
    ),
    "LedgerEntry": (
        "id", "ledger_id", "transact_id", "partner_id", "pool_id", "livemode", "entry_type",
        "direction", "amount_value", "amount_currency", "posted_at", "event_id",
    ),
    "DeliveryAttempt": (
        "id", "event_id", "partner_id", "attempt", "response_status", "duration_ms", "outcome",
        "attempted_at", "reported_by_id",
    ),
    STAGED: ("seq", "value", "kind", "partner", "event", "order_id", "link_key"),
}  # fmt: skip


def tables():
    from records.models import (
        DeliveryAttempt,
        Identifier,
        LedgerEntry,
        Order,
        Partner,
        Pool,
        Quote,
        StatusChange,
        Trade,
        WebhookEvent,
    )

    models = (
        Partner,
        Pool,
        Order,
        Quote,
        Trade,
        WebhookEvent,
        StatusChange,
        LedgerEntry,
        DeliveryAttempt,
        Identifier,
    )
    return {m.__name__: m._meta.db_table for m in models}


def drop_secondary(conn, tables):
    """Drop the tables' foreign keys, unique constraints and secondary indexes;
    return the statements that make them again."""
    names = list(tables)
    again = []
    constraints = conn.execute(
        """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.contype
          FROM pg_constraint c
         WHERE c.conrelid = ANY(%s::regclass[]) AND c.contype IN ('f', 'u')
         ORDER BY c.contype DESC
        """,
        [names],
    ).fetchall()
    # Foreign keys pointing INTO these tables from others must go first too.
    inbound = conn.execute(
        """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.contype
          FROM pg_constraint c
         WHERE c.confrelid = ANY(%s::regclass[]) AND c.contype = 'f'
           AND NOT c.conrelid = ANY(%s::regclass[])
        """,
        [names, names],
    ).fetchall()
    for table, name, _definition, _ in [*inbound, *constraints]:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
                sql.Identifier(table), sql.Identifier(name)
            )
        )
    indexes = conn.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
          FROM pg_index i
         WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        """,
        [names],
    ).fetchall()
    for name, definition in indexes:
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name)))
        again.append(definition)
    # Unique constraints before the foreign keys that may lean on them.
    for table, name, definition, _kind in sorted(
        [*constraints, *inbound], key=lambda c: c[3] != "u"
    ):
        again.append(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}")
            .format(sql.Identifier(table), sql.Identifier(name), sql.SQL(definition))
            .as_string(conn)
        )
    return again


def _copy_statement(table, columns):
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def copy_rows(conn, table, columns, rows, advance):
    n = 0
    with conn.cursor() as cursor, cursor.copy(_copy_statement(table, columns)) as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
            if n % 5000 == 0:
                advance(5000)
    advance(n % 5000)
    return n


def create_staging(conn):
    conn.execute(
        sql.SQL(
            'CREATE UNLOGGED TABLE {} (seq bigint, value text COLLATE "C", kind text,'
            ' partner text COLLATE "C", event bigint, order_id bigint, link_key text)'
        ).format(sql.Identifier(STAGED))
    )


@contextmanager
def copies(url, tables):
    """``write(name, row)`` for each of ``PLAYED_COLUMNS``: one COPY each, on a
    connection of its own (a connection carries one COPY at a time), finished
    when the block ends."""
    with ExitStack() as stack:
        streams = {}
        for name, columns in PLAYED_COLUMNS.items():
            conn = stack.enter_context(psycopg.connect(url, autocommit=True))
            cursor = stack.enter_context(conn.cursor())
            statement = _copy_statement(tables.get(name, name), columns)
            streams[name] = stack.enter_context(cursor.copy(statement))

        def write(name, row):
            streams[name].write_row(row)

        yield write


def event_row(pk, e, now, order, link):
    return (
        pk, e.event_id, e.type, e.livemode, e.created_at, now, "import", "", 0, None,
        "processed", 1, "", now, e.dropped, orjson.dumps(e.payload, default=str).decode(),
        e.partner_id, e.subject_id, order, link,
    )  # fmt: skip


def patch_events(conn, tables, state):
    """Events written before a later one told their order, and duplicates:
    ``bench_patch``, kept for ``write_identifiers``."""
    conn.execute("CREATE TEMP TABLE bench_patch (id bigint, order_id bigint, dup int, relink bool)")
    patches = {pk: [order, 0, True] for pk, order in state.relinked.items()}
    for pk, n in state.duplicates.items():
        patches.setdefault(pk, [None, 0, False])[1] = n
    copy_rows(
        conn,
        "bench_patch",
        ("id", "order_id", "dup", "relink"),
        ((pk, o, n, r) for pk, (o, n, r) in patches.items()),
        lambda n: None,
    )
    conn.execute("ANALYZE bench_patch")
    conn.execute(
        sql.SQL(
            """
        UPDATE {events} e SET
               order_id = CASE WHEN p.relink THEN p.order_id ELSE e.order_id END,
               link_key = CASE WHEN p.relink THEN '' ELSE e.link_key END,
               duplicate_count = p.dup,
               last_duplicate_at = CASE WHEN p.dup > 0 THEN %s END
          FROM bench_patch p WHERE e.id = p.id"""
        ).format(events=sql.Identifier(tables["WebhookEvent"])),
        [state.now],
    )


def _quote_rows(state):
    from ingest.contract import parse_amount, parse_decimal, parse_optional_time, parse_time

    for quote_id, q in state.quotes.items():
        d = q["data"]
        value, currency = parse_amount(d, "amount")
        yield (
            q["pk"], quote_id, q["order"], state.pools[d["poolId"]], q["livemode"], q["status"],
            d["side"], d["network"], value, currency, d["available"], d.get("type", ""),
            d.get("executable"), parse_decimal(d.get("rate")), d.get("spreadBps"),
            d.get("feeBps"), d.get("requestId", ""), parse_time(d["createdAt"]),
            parse_optional_time(d.get("expiresAt")), q["accepted_at"], q["expired_at"],
        )  # fmt: skip


def _trade_rows(state):
    for tid, t in state.trades.items():
        fixed = t["static"]
        row = t["row"]
        yield (
            t["pk"], tid, row[1] or "", row[2] or fixed[14], row[3], t["order"], *fixed[1:],
            row[4], row[5],
        )  # fmt: skip


def write_records(conn, tables, state, advance):
    """Partners, pools, orders, quotes and trades, as the whole stream left them;
    return their row counts."""
    from records.models import Pool

    now = state.now
    sla = Pool._meta.get_field("sla_minutes").get_default()
    counts = {}
    counts["Partner"] = copy_rows(
        conn,
        tables["Partner"],
        ("id", "partner_id", "name", "first_seen"),
        ((pk, pid, "", now) for pid, pk in state.partners.items()),
        advance,
    )
    counts["Pool"] = copy_rows(
        conn,
        tables["Pool"],
        ("id", "pool_id", "sla_minutes"),
        ((pk, pid, sla) for pid, pk in state.pools.items()),
        advance,
    )
    counts["Order"] = copy_rows(
        conn,
        tables["Order"],
        ("id", "partner_id", "partner_reference", "livemode", "first_seen_at",
         "last_activity_at"),
        (
            (row[0], state.partners[p], ref, row[1], row[2], row[3])
            for (p, ref), row in state.orders.items()
        ),
        advance,
    )  # fmt: skip
    counts["Quote"] = copy_rows(
        conn,
        tables["Quote"],
        ("id", "quote_id", "order_id", "pool_id", "livemode", "status", "side", "network",
         "amount_value", "amount_currency", "available", "quote_type", "executable", "rate",
         "spread_bps", "fee_bps", "request_id", "created_at", "expires_at", "accepted_at",
         "expired_at"),
        _quote_rows(state),
        advance,
    )  # fmt: skip
    counts["Trade"] = copy_rows(
        conn,
        tables["Trade"],
        ("id", "transact_id", "status", "status_at", "failure_code", "order_id", "pool_id",
         "quote_id", "livemode", "side", "network", "amount_value", "amount_currency",
         "deliver_value", "deliver_currency", "rate", "fee_bps", "idempotency_key",
         "request_id", "created_at", "updated_at", "reserved_at", "final_at"),
        _trade_rows(state),
        advance,
    )  # fmt: skip
    return counts


# The pipeline's rules (ingest/linking.py), on the staged rows: one row per id
# and order, the first one staged (a waiting row keeps the link key of the
# first event that named it); a waiting row (order null) gives way to a row of
# the same id with an order. Ids in the order the rows were first staged.
IDENTIFIERS = """
WITH played AS (
    SELECT s.seq, s.value, s.kind, s.partner, COALESCE(p.order_id, s.order_id) AS order_id,
           s.link_key
      FROM {staged} s LEFT JOIN bench_patch p ON p.id = s.event AND p.relink
), firsts AS (
    SELECT DISTINCT ON (value, kind, partner, order_id) *
      FROM played
     ORDER BY value, kind, partner, order_id, seq
), kept AS (
    SELECT *, bool_or(order_id IS NOT NULL) OVER (PARTITION BY value, kind, partner) AS linked
      FROM firsts
)
INSERT INTO {identifiers} (id, value, kind, partner_id, order_id, link_key)
SELECT row_number() OVER (ORDER BY seq), value, kind, partner, order_id,
       CASE WHEN order_id IS NULL THEN link_key ELSE '' END
  FROM kept
 WHERE order_id IS NOT NULL OR NOT linked
 ORDER BY seq
"""


def write_identifiers(conn, tables):
    """The identifier index from the staged rows (then dropped); its row count."""
    staged = sql.Identifier(STAGED)
    conn.execute(sql.SQL("ANALYZE {}").format(staged))
    inserted = conn.execute(
        sql.SQL(IDENTIFIERS).format(staged=staged, identifiers=sql.Identifier(tables["Identifier"]))
    ).rowcount
    conn.execute(sql.SQL("DROP TABLE {}").format(staged))
    return inserted


def keep_reserved_totals(conn, tables):
    """The stuck queue's kept totals (records_reservedtotal, where the schema
    has it): its triggers counted the trades COPY wrote in reserved; every
    trade passed through reserved in the pipeline, which leaves a row, at
    zero, for each pool, partner and mode that ever had one."""
    if conn.execute("SELECT to_regclass('records_reservedtotal') IS NOT NULL").fetchone()[0]:
        conn.execute(
            sql.SQL(
                "INSERT INTO records_reservedtotal (pool_id, partner_id, livemode, trades)"
                " SELECT DISTINCT t.pool_id, o.partner_id, t.livemode, 0"
                " FROM {} t JOIN {} o ON o.id = t.order_id"
                " ON CONFLICT (pool_id, partner_id, livemode) DO NOTHING"
            ).format(sql.Identifier(tables["Trade"]), sql.Identifier(tables["Order"]))
        )


def keep_newest(conn):
    """What the stuck queue shows beside each trade (records_tradenewest, where
    the schema has it), which the pipeline keeps as it goes: from every event
    and attempt written, once the indexes are back."""
    if conn.execute("SELECT to_regclass('records_tradenewest') IS NOT NULL").fetchone()[0]:
        from ingest.newest import EVERY_TRADE_SQL

        conn.execute(EVERY_TRADE_SQL)
        conn.execute("ANALYZE records_tradenewest")


def index_again(conn, tables, again, advance):
    """Make the dropped indexes and constraints again; the sequences past the
    ids written; VACUUM ANALYZE, and ANALYZE of everything else."""
    for statement in again:
        conn.execute(statement)
        advance(1)
    for table in tables.values():
        conn.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence({t}, 'id'),"
                " GREATEST((SELECT max(id) FROM {i}), 1))"
            ).format(t=sql.Literal(table), i=sql.Identifier(table))
        )
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
        advance(1)
    # And every other table: the stuck queue's kept counts were filled by
    # triggers, not COPY, and with no statistics the planner read a whole
    # pool's minutes instead of the histogram's window (4.8 ms at 10 M,
    # against 0.1 ms once analysed) until autovacuum came by.
    conn.execute("ANALYZE")
