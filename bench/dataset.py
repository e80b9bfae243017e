"""The bench's data set: the sandbox network's events at scale, written
straight into PostgreSQL with COPY, as the import would have left them.

``build(conninfo, orders, seed)`` plays ``sandbox.network.generate`` (the
same envelopes ``import_events`` would read, allowlisted by the contract's
own ``parse_envelope``) and folds them in memory the way the pipeline applies
them one by one in arrival order: orders and quotes merged, each trade run
through the state machine (every observation that is not a repeat is a
``StatusChange``), ledger entries and delivery attempts once, early arrivals
linked to their order when what tells it arrives, and the identifier index.
Then every table is written with one COPY, its secondary indexes and foreign
keys dropped first and made again after (one sort per index instead of
millions of inserts into it).

What the pipeline stamps with its clock (``received_at``, ``processed_at``,
``recorded_at``) gets the build's clock. Primary keys follow arrival order,
as the import's do.

``tests/test_bench.py`` holds the builder to the real import of the same
events: the same rows in every table, the same identifier index.

``ensure(base_url, orders, seed)`` reuses a built data set: one database per
size, seed and schema (the migration files and this builder's source), kept
between runs; a build that did not finish is thrown away.
"""

import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
# Part of the data set's key: raise it whenever what ``build`` writes changes.
BUILDER_VERSION = 3
# Events per order, measured on the sandbox stream (120 k orders ~ 1 M events).
EVENTS_PER_ORDER = 8.5


def stream_start(orders):
    """Where the stream starts: so that it ends by ``sandbox.network.DEFAULT_START``
    (2026-11-20), in the past, whatever its size (the contract refuses times more
    than 30 days ahead of the clock; 1.2 M orders span 417 days)."""
    from datetime import timedelta

    from sandbox.network import DEFAULT_START
    from sandbox.plans import ORDER_SLOT, SCENARIO_SPACING

    span = timedelta(seconds=(orders * ORDER_SLOT) + 100 * SCENARIO_SPACING)
    return (DEFAULT_START - span - timedelta(days=1)).replace(hour=0, minute=0, second=0)


# --- reuse ---------------------------------------------------------------


def schema_key(orders, seed, *, data=True):
    """A short hash of the schema (every migration file) and, with ``data``, of
    what makes the data (the sandbox's generator, the contract, BUILDER_VERSION)."""
    digest = hashlib.sha256(f"{BUILDER_VERSION}:{orders}:{seed}".encode() if data else b"")
    files = sorted(ROOT.glob("*/migrations/*.py"))
    if data:
        files += [ROOT / "sandbox" / "network.py", ROOT / "sandbox" / "plans.py"]
        files += [ROOT / "sandbox" / "catalogue.py", ROOT / "sandbox" / "forbidden.py"]
        files += [ROOT / "ingest" / "contract.py"]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _admin(base_url):
    import dj_database_url

    config = dj_database_url.parse(base_url)
    conn = psycopg.connect(
        dbname="postgres",
        user=config["USER"] or None,
        password=config["PASSWORD"] or None,
        host=config["HOST"] or None,
        port=config["PORT"] or None,
        autocommit=True,
    )
    return conn, config["NAME"]


def database_url(base_url, name):
    """``base_url`` naming database ``name`` instead (a socket host, in the
    query or the netloc, is kept)."""
    from urllib.parse import urlsplit

    return urlsplit(base_url)._replace(path=f"/{name}").geturl()


def scratch_database(base_url, prefix):
    """Create an empty database ``<prefix>_<pid>`` on the same server; return
    (its URL, drop()). For the benches that measure on a database of their own."""
    name = f"{prefix}_{os.getpid()}"
    admin, _ = _admin(base_url)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop():
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.close()

    return database_url(base_url, name), drop


def dataset_name(base_url, orders, seed):
    import dj_database_url

    base = dj_database_url.parse(base_url)["NAME"]
    return f"{base}_bench_{orders}_{seed}_{schema_key(orders, seed)}"[:63]


def exists(url):
    """True when the database at ``url`` holds a finished build."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT to_regclass('bench_dataset') IS NOT NULL"
                " AND EXISTS (SELECT 1 FROM bench_dataset WHERE finished)"
            ).fetchone()
            return bool(row[0])
    except psycopg.OperationalError:
        return False
    except psycopg.Error:
        return False


def create_database(base_url, name, *, drop=True, template=None):
    admin, _ = _admin(base_url)
    with admin:
        if drop:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        admin.execute(statement)


def schema_template_name(base_url):
    import dj_database_url

    base = dj_database_url.parse(base_url)["NAME"]
    return f"{base}_bench_schema_{schema_key(0, 0, data=False)}"[:63]


def schema_template(base_url):
    """The name of an empty database with the product's migrations applied
    (made once per schema, kept): new databases are copies of it, no migrate."""
    name = schema_template_name(base_url)
    url = database_url(base_url, name)
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            done = conn.execute("SELECT to_regclass('bench_schema_ready') IS NOT NULL").fetchone()
        if done[0]:
            return name
    except psycopg.OperationalError:
        pass
    create_database(base_url, name)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_schema_ready ()")
    return name


def empty_database(base_url, name):
    """Create ``name`` as an empty, migrated database; return its URL."""
    create_database(base_url, name, template=schema_template(base_url))
    url = database_url(base_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE bench_schema_ready")
    return url


def drop_database(base_url, name):
    admin, _ = _admin(base_url)
    with admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# --- folding the stream ----------------------------------------------------


class _State:
    """What the pipeline would have stored, kept in memory until written."""

    def __init__(self, now):
        self.now = now
        self.partners = {}  # partner id -> pk
        self.pools = {}  # pool id -> pk
        self.orders = {}  # (partner id, ref) -> [pk, livemode, first, last]
        self.quotes = {}  # quote id -> row dict
        self.trades = {}  # transact id -> state dict
        self.event_pk = {}  # event id -> pk
        self.event_order = {}  # event id -> order pk or None (every event)
        self.count = 0  # events stored
        self.event_link = {}  # event id -> link key, while its order is unknown
        self.relinked = {}  # event pk -> order, for events linked after they were written
        self.write_event = None  # (pk, envelope, order, link) -> None
        self.duplicates = {}  # pk -> count
        self.ledger = {}  # ledger id -> row
        self.deliveries = []  # rows
        self.changes = []  # status change rows
        self.identifiers = []  # (value, kind, partner, event id)
        self.waiting_on = {}  # key (transact id or event id) -> [event ids waiting]
        self.events_seen = 0

    def pk_of(self, table, key):
        pk = table.get(key)
        if pk is None:
            pk = table[key] = len(table) + 1
        return pk


def _fold_event(state, envelope, helpers):
    """Apply one stored (new) event, as the pipeline would."""
    from ingest.contract import parse_amount, parse_time

    (classify, observed_at, reserved_at, static, static_key, identifiers, quote_status, rank) = (
        helpers
    )
    data = envelope.data
    pk = state.count + 1
    state.event_pk[envelope.event_id] = pk
    state.pk_of(state.partners, data["partnerId"])
    if "poolId" in data:
        state.pk_of(state.pools, data["poolId"])
    obj = envelope.object
    order = None
    link = ""
    if obj in ("quote", "trade"):
        key = (data["partnerId"], data["partnerReference"])
        row = state.orders.get(key)
        at = envelope.created_at
        if row is None:
            row = state.orders[key] = [len(state.orders) + 1, envelope.livemode, at, at]
        else:
            row[2] = min(row[2], at)
            row[3] = max(row[3], at)
        order = row[0]
    if obj == "quote":
        status = quote_status[envelope.type]
        quote = state.quotes.get(data["quoteId"])
        if quote is None:
            quote = state.quotes[data["quoteId"]] = {
                "pk": len(state.quotes) + 1,
                "status": status,
                "accepted_at": None,
                "expired_at": None,
                "livemode": envelope.livemode,
                "order": order,
                "data": dict(data),
            }
        else:
            merged = quote["data"]
            for k in ("rate", "expiresAt"):
                if data.get(k) is not None:
                    merged[k] = data[k]
            if rank.index(status) > rank.index(quote["status"]):
                quote["status"] = status
        if status == "accepted" and quote["accepted_at"] is None:
            quote["accepted_at"] = envelope.created_at
        if status == "expired" and quote["expired_at"] is None:
            quote["expired_at"] = envelope.created_at
    elif obj == "trade":
        tid = data["transactId"]
        trade = state.trades.get(tid)
        if trade is None:
            trade = state.trades[tid] = {
                "pk": len(state.trades) + 1,
                "order": order,
                "row": [None, None, None, "", None, None],
                "static_key": None,
                "static": None,
            }
        key = static_key(envelope)
        if trade["static_key"] is None or key >= trade["static_key"]:
            key_of = {(data["partnerId"], data["partnerReference"]): order}
            trade["static_key"], trade["static"] = key, static(envelope, key_of, state.pools)
        row = trade["row"]
        claimed = data["status"]
        at = observed_at(envelope)
        reserved = reserved_at(envelope)
        if reserved and (row[4] is None or reserved < row[4]):
            row[4] = reserved
        outcome = classify(row[1], claimed)
        if outcome != "repeat":
            note = ""
            if outcome == "late":
                note = f"{claimed} arrived after {row[1]}; kept {row[1]}"
            elif outcome == "illegal":
                note = f"{row[1]} → {claimed} is not a legal move; kept {row[1]}"
            state.changes.append(
                (trade["pk"], row[1] or "", claimed, at, state.now, "import", pk, outcome, note)
            )
            if outcome == "applied":
                row[1], row[2] = claimed, at
                row[3] = data.get("failureCode") or ""
            if outcome != "illegal" and claimed in ("settled", "failed", "released", "returned"):
                row[5] = at if row[5] is None else min(row[5], at)
        # Records waiting for this trade join its order now.
        _resolve(state, tid, order)
    elif obj == "ledger_entry":
        link = data["transactId"]
        trade = state.trades.get(link)
        order = trade["order"] if trade else None
        if data["ledgerId"] not in state.ledger:
            value, currency = parse_amount(data, "amount")
            row = (
                len(state.ledger) + 1, data["ledgerId"], link, state.partners[data["partnerId"]],
                state.pools[data["poolId"]], envelope.livemode, data["entryType"],
                data["direction"], value, currency, parse_time(data["postedAt"]),
                envelope.event_id,
            )  # fmt: skip
            state.ledger[data["ledgerId"]] = (row, None)
    else:
        link = data["eventId"]
        order = state.event_order.get(link)
        state.deliveries.append((pk, data))
    if order is not None:
        link = ""
    elif link:
        state.waiting_on.setdefault(link, []).append(envelope.event_id)
        state.event_link[envelope.event_id] = link
    state.event_order[envelope.event_id] = order
    state.count += 1
    state.write_event(pk, envelope, order, link)
    partner = data["partnerId"]
    for value, kind in identifiers(envelope):
        state.identifiers.append((value, kind, partner, envelope.event_id))
    if order is not None:
        _resolve(state, envelope.event_id, order)


def _resolve(state, key, order):
    """Give ``order`` to the events waiting on ``key``, and to what waits on them."""
    waiting = state.waiting_on.pop(key, None)
    if not waiting:
        return
    for event_id in waiting:
        state.event_order[event_id] = order
        state.event_link.pop(event_id, None)
        state.relinked[state.event_pk[event_id]] = order
        _resolve(state, event_id, order)


# --- writing -----------------------------------------------------------------


def _tables(conn):
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


def _drop_secondary(conn, tables):
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


def _copy(conn, table, columns, rows, advance):
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    n = 0
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
            if n % 5000 == 0:
                advance(5000)
    advance(n % 5000)
    return n


def _helpers():
    from ingest import linking, trades, upserts
    from records import states

    return (
        states.classify,
        trades._observed_at,
        trades._reserved_at,
        trades._static,
        trades._static_key,
        linking._identifiers,
        upserts.QUOTE_STATUS,
        upserts.QUOTE_RANK,
    )


EVENT_COLUMNS = (
    "id", "event_id", "type", "livemode", "created_at", "received_at", "source",
    "verified_with", "duplicate_count", "last_duplicate_at", "state", "attempts",
    "last_error", "processed_at", "dropped_keys", "payload", "partner_id", "subject_id",
    "order_id", "link_key",
)  # fmt: skip


def build(url, orders, seed=1, *, progress=True, envelopes=None):
    """Fill the (migrated, empty) database at ``url``; return build figures.

    ``envelopes`` (raw dicts) replaces the sandbox stream (the test feeds the
    lines it also imports)."""
    from ingest.contract import (
        parse_amount,
        parse_decimal,
        parse_envelope,
        parse_optional_time,
        parse_time,
    )
    from records.models import Pool
    from sandbox.network import generate

    from .progress import Progress

    helpers = _helpers()
    started = time.perf_counter()
    now = datetime.now(UTC)
    state = _State(now)
    expected = int(orders * EVENTS_PER_ORDER) + 200
    stream = envelopes if envelopes is not None else generate(orders, seed, stream_start(orders))
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SET synchronous_commit = off")
    conn.execute("SET maintenance_work_mem = '512MB'")
    tables = _tables(conn)
    again = _drop_secondary(conn, tables.values())
    counts = {}

    with Progress(progress) as bar:
        task = bar.task(f"playing {orders:,} orders", expected)
        lines = 0
        dumps = orjson.dumps
        with (
            conn.cursor() as cursor,
            cursor.copy(
                sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(tables["WebhookEvent"]),
                    sql.SQL(", ").join(map(sql.Identifier, EVENT_COLUMNS)),
                )
            ) as copy,
        ):

            def write_event(pk, e, order, link):
                copy.write_row(
                    (
                        pk, e.event_id, e.type, e.livemode, e.created_at, now, "import", "", 0,
                        None, "processed", 1, "", now, e.dropped,
                        dumps(e.payload, default=str).decode(), e.partner_id, e.subject_id,
                        order, link,
                    )
                )  # fmt: skip

            state.write_event = write_event
            for raw in stream:
                lines += 1
                envelope = parse_envelope(raw)
                pk = state.event_pk.get(envelope.event_id)
                if pk is not None:
                    state.duplicates[pk] = state.duplicates.get(pk, 0) + 1
                else:
                    _fold_event(state, envelope, helpers)
                if lines % 2000 == 0:
                    bar.advance(task, 2000)
        bar.advance(task, lines % 2000)
        bar.finish(task, lines)
        counts["WebhookEvent"] = state.count
        played = time.perf_counter() - started

        # Identifier rows: each with the final order of its event.
        identifiers = {}
        for value, kind, partner, event_id in state.identifiers:
            order = state.event_order[event_id]
            if order is not None:
                identifiers.setdefault((value, kind, partner, order), "")
            else:
                identifiers.setdefault((value, kind, partner, None), state.event_link[event_id])
        state.identifiers = None
        # A waiting row gives way to a row of the same id with an order (the pipeline's DELETE).
        linked = {(v, k, p) for (v, k, p, o) in identifiers if o is not None}
        identifiers = {
            key: link
            for key, link in identifiers.items()
            if key[3] is not None or key[:3] not in linked
        }

        rows_total = (
            len(state.partners) + len(state.pools) + len(state.orders) + len(state.quotes)
            + len(state.trades) + len(state.changes) + len(state.ledger) + len(state.deliveries)
            + len(identifiers)
        )  # fmt: skip
        write = bar.task("writing the rest (COPY)", rows_total)

        def advance(n):
            bar.advance(write, n)

        # Events written before a later one told their order, and duplicates.
        conn.execute(
            "CREATE TEMP TABLE bench_patch (id bigint, order_id bigint, dup int, relink bool)"
        )
        patches = {pk: [order, 0, True] for pk, order in state.relinked.items()}
        for pk, n in state.duplicates.items():
            patches.setdefault(pk, [None, 0, False])[1] = n
        _copy(
            conn,
            "bench_patch",
            ("id", "order_id", "dup", "relink"),
            ((pk, o, n, r) for pk, (o, n, r) in patches.items()),
            lambda n: None,
        )
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
            [now],
        )

        sla = Pool._meta.get_field("sla_minutes").get_default()
        counts["Partner"] = _copy(
            conn,
            tables["Partner"],
            ("id", "partner_id", "name", "first_seen"),
            ((pk, pid, "", now) for pid, pk in state.partners.items()),
            advance,
        )
        counts["Pool"] = _copy(
            conn,
            tables["Pool"],
            ("id", "pool_id", "sla_minutes"),
            ((pk, pid, sla) for pid, pk in state.pools.items()),
            advance,
        )
        counts["Order"] = _copy(
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

        def quote_rows():
            for quote_id, q in state.quotes.items():
                d = q["data"]
                value, currency = parse_amount(d, "amount")
                yield (
                    q["pk"], quote_id, q["order"], state.pools[d["poolId"]], q["livemode"],
                    q["status"], d["side"], d["network"], value, currency, d["available"],
                    d.get("type", ""), d.get("executable"), parse_decimal(d.get("rate")),
                    d.get("spreadBps"), d.get("feeBps"), d.get("requestId", ""),
                    parse_time(d["createdAt"]), parse_optional_time(d.get("expiresAt")),
                    q["accepted_at"], q["expired_at"],
                )  # fmt: skip

        counts["Quote"] = _copy(
            conn,
            tables["Quote"],
            ("id", "quote_id", "order_id", "pool_id", "livemode", "status", "side", "network",
             "amount_value", "amount_currency", "available", "quote_type", "executable", "rate",
             "spread_bps", "fee_bps", "request_id", "created_at", "expires_at", "accepted_at",
             "expired_at"),
            quote_rows(),
            advance,
        )  # fmt: skip

        def trade_rows():
            for tid, t in state.trades.items():
                fixed = t["static"]
                row = t["row"]
                yield (
                    t["pk"], tid, row[1] or "", row[2] or fixed[14], row[3], t["order"],
                    *fixed[1:], row[4], row[5],
                )  # fmt: skip

        counts["Trade"] = _copy(
            conn,
            tables["Trade"],
            ("id", "transact_id", "status", "status_at", "failure_code", "order_id", "pool_id",
             "quote_id", "livemode", "side", "network", "amount_value", "amount_currency",
             "deliver_value", "deliver_currency", "rate", "fee_bps", "idempotency_key",
             "request_id", "created_at", "updated_at", "reserved_at", "final_at"),
            trade_rows(),
            advance,
        )  # fmt: skip
        counts["StatusChange"] = _copy(
            conn,
            tables["StatusChange"],
            ("id", "trade_id", "from_status", "to_status", "upstream_at", "recorded_at",
             "source", "event_id", "outcome", "note"),
            ((n, *row) for n, row in enumerate(state.changes, start=1)),
            advance,
        )  # fmt: skip
        counts["LedgerEntry"] = _copy(
            conn,
            tables["LedgerEntry"],
            ("id", "ledger_id", "transact_id", "partner_id", "pool_id", "livemode", "entry_type",
             "direction", "amount_value", "amount_currency", "posted_at", "event_id"),
            (row for row, _ in state.ledger.values()),
            advance,
        )  # fmt: skip
        counts["DeliveryAttempt"] = _copy(
            conn,
            tables["DeliveryAttempt"],
            ("id", "event_id", "partner_id", "attempt", "response_status", "duration_ms",
             "outcome", "attempted_at", "reported_by_id"),
            (
                (n, d["eventId"], state.partners[d["partnerId"]], d["attempt"],
                 d.get("responseStatus"), d.get("durationMs"), d["outcome"],
                 parse_time(d["attemptedAt"]), pk)
                for n, (pk, d) in enumerate(state.deliveries, start=1)
            ),
            advance,
        )  # fmt: skip
        counts["Identifier"] = _copy(
            conn,
            tables["Identifier"],
            ("id", "value", "kind", "partner_id", "order_id", "link_key"),
            (
                (n, value, kind, partner, order, link)
                for n, ((value, kind, partner, order), link) in enumerate(
                    identifiers.items(), start=1
                )
            ),
            advance,
        )
        bar.finish(write, rows_total)
        # The stuck queue's kept totals (records_reservedtotal, where the schema
        # has it): its triggers counted the trades COPY wrote in reserved; every
        # trade passed through reserved in the pipeline, which leaves a row,
        # at zero, for each pool and mode that ever had one.
        if conn.execute("SELECT to_regclass('records_reservedtotal') IS NOT NULL").fetchone()[0]:
            conn.execute(
                sql.SQL(
                    "INSERT INTO records_reservedtotal (pool_id, livemode, trades)"
                    " SELECT DISTINCT pool_id, livemode, 0 FROM {}"
                    " ON CONFLICT (pool_id, livemode) DO NOTHING"
                ).format(sql.Identifier(tables["Trade"]))
            )
        copied = time.perf_counter() - started - played

        index = bar.task("indexes and constraints", len(again) + len(tables))
        for statement in again:
            conn.execute(statement)
            bar.advance(index, 1)
        for table in tables.values():
            conn.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence({t}, 'id'),"
                    " GREATEST((SELECT max(id) FROM {i}), 1))"
                ).format(t=sql.Literal(table), i=sql.Identifier(table))
            )
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
            bar.advance(index, 1)
        indexed = time.perf_counter() - started - played - copied
    figures = {
        "orders": orders,
        "seed": seed,
        "lines": lines,
        "events": state.count,
        "rows": counts,
        "seconds": {
            "play": round(played, 1),
            "copy": round(copied, 1),
            "index": round(indexed, 1),
            "total": round(time.perf_counter() - started, 1),
        },
    }
    conn.execute(
        "CREATE TABLE IF NOT EXISTS bench_dataset"
        " (finished bool, figures jsonb, built_at timestamptz)"
    )
    conn.execute(
        "INSERT INTO bench_dataset VALUES (true, %s, now())", [orjson.dumps(figures).decode()]
    )
    conn.close()
    return figures


def figures(url):
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT figures FROM bench_dataset WHERE finished LIMIT 1").fetchone()
        return row[0]


def migrate(url):
    """Run the product's migrations in the database at ``url`` (a child process:
    this one's Django may already point elsewhere)."""
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "opspanel.settings"}
    env.setdefault("OPSPANEL_TESTING", "1")
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


def ensure(base_url, orders, seed=1, *, progress=True, rebuild=False, say=print):
    """The URL of a finished build for this size, seed and schema; built if needed."""
    name = dataset_name(base_url, orders, seed)
    url = database_url(base_url, name)
    if not rebuild and exists(url):
        built = figures(url)
        say(
            f"reusing data set {name}: {built['events']:,} events, built in"
            f" {built['seconds']['total']:.0f}s"
        )
        return url, built, False
    say(f"building data set {name} ({orders:,} orders, seed {seed}) ...")
    empty_database(base_url, name)
    built = build(url, orders, seed, progress=progress)
    say(
        f"built {built['events']:,} events in {built['seconds']['total']:.0f}s"
        f" (play {built['seconds']['play']:.0f}s, COPY {built['seconds']['copy']:.0f}s,"
        f" indexes {built['seconds']['index']:.0f}s)"
    )
    return url, built, True


# --- comparing with the import ---------------------------------------------------

SNAPSHOT_QUERIES = {
    "identifiers": """
        SELECT i.value, i.kind, i.partner_id, p.partner_id, o.partner_reference, i.link_key
          FROM records_identifier i
          LEFT JOIN records_order o ON o.id = i.order_id
          LEFT JOIN records_partner p ON p.id = o.partner_id""",
    "trades": """
        SELECT t.transact_id, t.status, t.status_at, t.failure_code, t.reserved_at, t.final_at,
               o.partner_reference, t.deliver_value
          FROM records_trade t JOIN records_order o ON o.id = t.order_id""",
    "events": """
        SELECT e.event_id, e.duplicate_count, e.state, e.link_key, o.partner_reference,
               e.payload::text, e.dropped_keys
          FROM records_webhookevent e LEFT JOIN records_order o ON o.id = e.order_id""",
    "changes": """
        SELECT t.transact_id, c.from_status, c.to_status, c.upstream_at, c.outcome, c.note,
               e.event_id
          FROM records_statuschange c JOIN records_trade t ON t.id = c.trade_id
          JOIN records_webhookevent e ON e.id = c.event_id""",
    "quotes": """
        SELECT quote_id, status, rate, expires_at, accepted_at, expired_at FROM records_quote""",
    "orders": """
        SELECT p.partner_id, o.partner_reference, o.livemode, o.first_seen_at, o.last_activity_at
          FROM records_order o JOIN records_partner p ON p.id = o.partner_id""",
    "ledger": "SELECT ledger_id, transact_id, amount_value, event_id FROM records_ledgerentry",
    "deliveries": """
        SELECT d.event_id, d.attempt, d.outcome, e.event_id
          FROM records_deliveryattempt d JOIN records_webhookevent e ON e.id = d.reported_by_id""",
}


KEPT_QUERIES = {
    "records_reservedminute": """
        SELECT p.pool_id, k.livemode, k.minute, k.trades
          FROM records_reservedminute k JOIN records_pool p ON p.id = k.pool_id""",
    "records_reservedtotal": """
        SELECT p.pool_id, k.livemode, k.trades
          FROM records_reservedtotal k JOIN records_pool p ON p.id = k.pool_id""",
}


def snapshot(url):
    """Row counts of every table of the product's apps, and the rows by their
    public ids (not pks)."""
    with psycopg.connect(url) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename NOT IN ('bench_dataset', 'bench_schema_ready')"
                # Not the pipeline's: users, groups (a flushed test database
                # has none), sessions, sign-in attempts, Django's own.
                " AND tablename !~ '^(auth|django|axes)_' ORDER BY 1"
            )
        ]
        counts = {
            t: conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))
            ).fetchone()[0]
            for t in tables
        }
        queries = dict(SNAPSHOT_QUERIES)
        queries.update({t: q for t, q in KEPT_QUERIES.items() if t in tables})
        rows = {
            name: sorted(conn.execute(query).fetchall(), key=repr)
            for name, query in queries.items()
        }
    return counts, rows
