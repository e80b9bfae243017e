"""The bench's data set: the sandbox network's events at scale, written
straight into PostgreSQL with COPY, as the import would have left them.

``build(conninfo, orders, seed)`` plays ``sandbox.network.generate`` (the
same envelopes ``import_events`` would read, allowlisted by the contract's
own ``parse_envelope``) and folds them in memory the way the pipeline applies
them one by one in arrival order: orders and quotes merged, each trade run
through the state machine (every observation that is not a repeat is a
``StatusChange``), ledger entries and delivery attempts once, early arrivals
linked to their order when what tells it arrives, and the identifier index.
Every table is written with COPY (bench/dataset_write.py): a row that is
final when it is made goes out at once, the rest after the stream, the
identifier index in SQL from its staged rows; secondary indexes and foreign
keys are dropped first and made again after (one sort per index instead of
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

from . import dataset_write

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


def create_database(base_url, name, *, drop=True, template=None, file_copy=False):
    admin, _ = _admin(base_url)
    with admin:
        if drop:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        if file_copy:
            statement += sql.SQL(" STRATEGY FILE_COPY")
        admin.execute(statement)


def copy_database(base_url, source, name):
    """Create ``name`` as a copy of ``source``, file by file (no WAL for its
    pages); return its URL. Nobody may be connected to ``source``: a session
    still closing is waited for, up to half a minute."""
    for attempt in range(30):
        try:
            create_database(base_url, name, template=source, file_copy=True)
            break
        except psycopg.errors.ObjectInUse:
            if attempt == 29:
                raise
            time.sleep(1)
    return database_url(base_url, name)


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
    """What the pipeline would have stored and the rest of the stream may still
    change, kept in memory until written; the rest goes out through ``write``."""

    def __init__(self, now, write):
        self.now = now
        self.write = write  # (name, row) -> None: dataset_write.copies
        self.partners = {}  # partner id -> pk
        self.pools = {}  # pool id -> pk
        self.orders = {}  # (partner id, ref) -> [pk, livemode, first, last]
        self.quotes = {}  # quote id -> row dict
        self.trades = {}  # transact id -> state dict
        self.event_pk = {}  # event id -> pk
        self.event_order = {}  # event id -> order pk, once known
        self.count = 0  # events stored
        self.relinked = {}  # event pk -> order, for events linked after they were written
        self.duplicates = {}  # pk -> count
        self.ledger = set()  # ledger ids written
        self.deliveries = 0  # rows written
        self.changes = 0  # status change rows written
        self.staged = 0  # identifier rows staged
        self.waiting_on = {}  # key (transact id or event id) -> [event ids waiting]

    def pk_of(self, table, key):
        pk = table.get(key)
        if pk is None:
            pk = table[key] = len(table) + 1
        return pk


def _fold_event(state, envelope, h):
    """Apply one stored (new) event, as the pipeline would; ``h``: ``_helpers()``."""
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
        order = _fold_order(state, envelope)
    if obj == "quote":
        _fold_quote(state, envelope, order, h)
    elif obj == "trade":
        _fold_trade(state, envelope, order, pk, h)
    elif obj == "ledger_entry":
        link = data["transactId"]
        trade = state.trades.get(link)
        order = trade["order"] if trade else None
        _fold_ledger(state, envelope)
    else:
        link = data["eventId"]
        order = state.event_order.get(link)
        _fold_delivery(state, data, pk)
    if order is not None:
        link = ""
        state.event_order[envelope.event_id] = order
    elif link:
        state.waiting_on.setdefault(link, []).append(envelope.event_id)
    state.count += 1
    state.write("WebhookEvent", dataset_write.event_row(pk, envelope, state.now, order, link))
    partner = data["partnerId"]
    for value, kind in h.identifiers(envelope):
        state.staged += 1
        state.write(dataset_write.STAGED, (state.staged, value, kind, partner, pk, order, link))
    if order is not None:
        _resolve(state, envelope.event_id, order)


def _fold_order(state, envelope):
    data = envelope.data
    key = (data["partnerId"], data["partnerReference"])
    row = state.orders.get(key)
    at = envelope.created_at
    if row is None:
        row = state.orders[key] = [len(state.orders) + 1, envelope.livemode, at, at]
    else:
        row[2] = min(row[2], at)
        row[3] = max(row[3], at)
    return row[0]


def _fold_quote(state, envelope, order, h):
    data = envelope.data
    status = h.quote_status[envelope.type]
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
        if h.rank.index(status) > h.rank.index(quote["status"]):
            quote["status"] = status
    if status == "accepted" and quote["accepted_at"] is None:
        quote["accepted_at"] = envelope.created_at
    if status == "expired" and quote["expired_at"] is None:
        quote["expired_at"] = envelope.created_at


def _fold_trade(state, envelope, order, pk, h):
    data = envelope.data
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
    key = h.static_key(envelope)
    if trade["static_key"] is None or key >= trade["static_key"]:
        key_of = {(data["partnerId"], data["partnerReference"]): order}
        trade["static_key"], trade["static"] = key, h.static(envelope, key_of, state.pools)
    row = trade["row"]
    claimed = data["status"]
    at = h.observed_at(envelope)
    reserved = h.reserved_at(envelope)
    if reserved and (row[4] is None or reserved < row[4]):
        row[4] = reserved
    outcome = h.classify(row[1], claimed)
    if outcome != "repeat":
        note = ""
        if outcome == "late":
            note = f"{claimed} arrived after {row[1]}; kept {row[1]}"
        elif outcome == "illegal":
            note = f"{row[1]} → {claimed} is not a legal move; kept {row[1]}"
        state.changes += 1
        state.write(
            "StatusChange",
            (state.changes, trade["pk"], row[1] or "", claimed, at, state.now, "import", pk,
             outcome, note),
        )  # fmt: skip
        if outcome == "applied":
            row[1], row[2] = claimed, at
            row[3] = data.get("failureCode") or ""
        if outcome != "illegal" and claimed in ("settled", "failed", "released", "returned"):
            row[5] = at if row[5] is None else min(row[5], at)
    # Records waiting for this trade join its order now.
    _resolve(state, tid, order)


def _fold_ledger(state, envelope):
    from ingest.contract import parse_amount, parse_time

    data = envelope.data
    if data["ledgerId"] in state.ledger:
        return
    state.ledger.add(data["ledgerId"])
    value, currency = parse_amount(data, "amount")
    state.write(
        "LedgerEntry",
        (len(state.ledger), data["ledgerId"], data["transactId"],
         state.partners[data["partnerId"]], state.pools[data["poolId"]], envelope.livemode,
         data["entryType"], data["direction"], value, currency, parse_time(data["postedAt"]),
         envelope.event_id),
    )  # fmt: skip


def _fold_delivery(state, d, pk):
    from ingest.contract import parse_time

    state.deliveries += 1
    state.write(
        "DeliveryAttempt",
        (state.deliveries, d["eventId"], state.partners[d["partnerId"]], d["attempt"],
         d.get("responseStatus"), d.get("durationMs"), d["outcome"],
         parse_time(d["attemptedAt"]), pk),
    )  # fmt: skip


def _resolve(state, key, order):
    """Give ``order`` to the events waiting on ``key``, and to what waits on them."""
    waiting = state.waiting_on.pop(key, None)
    if not waiting:
        return
    for event_id in waiting:
        state.event_order[event_id] = order
        state.relinked[state.event_pk[event_id]] = order
        _resolve(state, event_id, order)


def _helpers():
    from types import SimpleNamespace

    from ingest import linking, trades, upserts
    from records import states

    return SimpleNamespace(
        classify=states.classify,
        observed_at=trades._observed_at,
        reserved_at=trades._reserved_at,
        static=trades._static,
        static_key=trades._static_key,
        identifiers=linking._identifiers,
        quote_status=upserts.QUOTE_STATUS,
        rank=upserts.QUOTE_RANK,
    )


def _play(state, stream, advance):
    """Fold every envelope of ``stream``; return the number of lines."""
    from ingest.contract import parse_envelope

    helpers = _helpers()
    lines = 0
    for raw in stream:
        lines += 1
        envelope = parse_envelope(raw)
        pk = state.event_pk.get(envelope.event_id)
        if pk is not None:
            state.duplicates[pk] = state.duplicates.get(pk, 0) + 1
        else:
            _fold_event(state, envelope, helpers)
        if lines % 2000 == 0:
            advance(2000)
    advance(lines % 2000)
    return lines


def build(url, orders, seed=1, *, progress=True, envelopes=None):
    """Fill the (migrated, empty) database at ``url``; return build figures.

    ``envelopes`` (raw dicts) replaces the sandbox stream (the test feeds the
    lines it also imports)."""
    from sandbox.network import generate

    from .progress import Progress

    started = time.perf_counter()
    now = datetime.now(UTC)
    expected = int(orders * EVENTS_PER_ORDER) + 200
    stream = envelopes if envelopes is not None else generate(orders, seed, stream_start(orders))
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SET synchronous_commit = off")
    conn.execute("SET maintenance_work_mem = '512MB'")
    conn.execute("SET work_mem = '256MB'")  # the identifier index's sorts
    tables = dataset_write.tables()
    again = dataset_write.drop_secondary(conn, tables.values())
    dataset_write.create_staging(conn)

    with Progress(progress) as bar:
        task = bar.task(f"playing {orders:,} orders", expected)
        with dataset_write.copies(url, tables) as copies:
            state = _State(now, copies)
            lines = _play(state, stream, lambda n: bar.advance(task, n))
        bar.finish(task, lines)
        played = time.perf_counter() - started

        dataset_write.patch_events(conn, tables, state)
        rows_total = sum(
            map(len, (state.partners, state.pools, state.orders, state.quotes, state.trades))
        )
        records = bar.task("writing the rest (COPY)", rows_total)
        counts = {"WebhookEvent": state.count}
        counts |= dataset_write.write_records(
            conn, tables, state, lambda n: bar.advance(records, n)
        )
        bar.finish(records, rows_total)
        counts |= {
            "StatusChange": state.changes,
            "LedgerEntry": len(state.ledger),
            "DeliveryAttempt": state.deliveries,
        }
        index = bar.task("identifier index (SQL)", state.staged)
        counts["Identifier"] = dataset_write.write_identifiers(conn, tables)
        bar.finish(index, state.staged)
        dataset_write.keep_reserved_totals(conn, tables)
        copied = time.perf_counter() - started - played

        index = bar.task("indexes and constraints", len(again) + len(tables))
        dataset_write.index_again(conn, tables, again, lambda n: bar.advance(index, n))
        dataset_write.keep_newest(conn)
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


def reuse(base_url, name, *, say=print):
    """A finished build named ``name``, whatever schema built it, migrated to
    today's (``--dataset``): for a build too long to repeat for every change."""
    url = database_url(base_url, name)
    if not exists(url):
        raise SystemExit(f"no finished data set named {name}")
    migrate(url)
    built = figures(url)
    say(f"reusing data set {name} (migrated): {built['events']:,} events")
    vacuum(url, say)
    return url, built, False


def vacuum(url, say=print):
    """VACUUM ANALYZE a reused data set: a run's writes are rolled back or
    deleted, and their dead rows and index entries stay until a VACUUM (this
    server runs without autovacuum). Two runs' leftovers made the next run's
    pages at 10 M up to 1.8x slower."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    say(f"vacuumed in {time.perf_counter() - started:.0f} s")


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
        vacuum(url, say)
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
        SELECT p.pool_id, t.partner_id, k.livemode, k.minute, k.trades
          FROM records_reservedminute k JOIN records_pool p ON p.id = k.pool_id
          JOIN records_partner t ON t.id = k.partner_id""",
    "records_reservedtotal": """
        SELECT p.pool_id, t.partner_id, k.livemode, k.trades
          FROM records_reservedtotal k JOIN records_pool p ON p.id = k.pool_id
          JOIN records_partner t ON t.id = k.partner_id""",
    "records_tradenewest": """
        SELECT t.transact_id, e.event_id, n.poll_at, a.event_id, a.attempt, r.event_id,
               n.delivery_at
          FROM records_tradenewest n JOIN records_trade t ON t.id = n.trade_id
          LEFT JOIN records_webhookevent e ON e.id = n.poll_id
          LEFT JOIN records_deliveryattempt a ON a.id = n.delivery_id
          LEFT JOIN records_webhookevent r ON r.id = a.reported_by_id""",
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
