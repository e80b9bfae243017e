"""S1, S2, S3, S6 in process (Django test client, signed in), the admin
baselines for S1, and EXPLAIN (ANALYZE, BUFFERS) of the pages' queries."""

import gc
import random
import time
from contextlib import contextmanager

from django.db import connection, reset_queries, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from .report import Row, latency, ms

ID_KINDS = ("trade", "event", "ledger")
MIN_PREFIX_TOKEN = 6  # characters of the id's random part in a prefix search


SIGN_IN = "/accounts/login/"


def timed(client, urls, alongside=None):
    """(times, query counts, times beside) of GETs of ``urls``; with
    ``alongside``, the times beside are those of a GET of it before each: a
    baseline taken in the same moments, so a page's ratio to it holds while
    the machine's speed drifts."""
    times, queries, beside = [], [], []
    for url in urls:
        if alongside:
            started = time.perf_counter()
            client.get(alongside)
            beside.append(time.perf_counter() - started)
        counted = [0]
        # Counted by a wrapper round each statement, not Django's debug
        # cursor: that one logs and formats every statement, which cost a
        # page a few hundred microseconds the sign-in page (no statement)
        # did not pay.
        with connection.execute_wrapper(_counting(counted)):
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
        # An exact id answers with a redirect to its order; never to the sign-in page.
        assert response.status_code in (200, 302), (url, response.status_code)
        assert "/accounts/login" not in response.get("Location", ""), url
        queries.append(counted[0])
    return times, queries, beside


def _counting(counted):
    def count(execute, sql, params, many, context):
        counted[0] += 1
        return execute(sql, params, many, context)

    return count


def sample_ids(n, seed=3):
    """``n`` searchable ids of trades, events and ledger entries, spread over the table."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(id) FROM records_identifier")
        (top,) = cursor.fetchone()
        rng = random.Random(seed)
        picks = sorted(rng.sample(range(1, top + 1), min(top, n * 8)))
        cursor.execute(
            "SELECT value FROM records_identifier WHERE id = ANY(%s) AND kind = ANY(%s)"
            " AND order_id IS NOT NULL",
            [picks, list(ID_KINDS)],
        )
        values = [v for (v,) in cursor.fetchall()]
    rng.shuffle(values)
    return values[:n]


def prefix_of(value):
    """The id's type prefix (``pt_live_``, ``evt_``, ``ledger_0pools_``) and six characters."""
    head = value.rfind("_") + 1
    return value[: head + MIN_PREFIX_TOKEN]


def sample_orders(n, seed=4):
    from records.models import Order

    with connection.cursor() as cursor:
        cursor.execute("SELECT max(id) FROM records_order")
        (top,) = cursor.fetchone()
    rng = random.Random(seed)
    picks = rng.sample(range(1, top + 1), min(top, n))
    orders = list(Order.objects.filter(pk__in=picks).select_related("partner"))
    rng.shuffle(orders)
    return orders


def deep_cursor(listing, queryset, depth):
    """The ``after`` cursor of page ``depth`` of ``listing`` (keyset paging)."""
    from lib.paging import PER_PAGE, make_cursor

    oldest_first = getattr(listing, "oldest_first", False)
    field = listing.time_field
    order = (field, "pk") if oldest_first else (f"-{field}", "-pk")
    rows = list(queryset.order_by(*order)[depth * PER_PAGE - 1 : depth * PER_PAGE])
    if not rows:
        return None, 0
    return make_cursor(listing, rows[0]), depth


READS_A_DAY = 24 * 60 // 5  # the beat re-polls a stuck trade every 5 minutes


@contextmanager
def re_polled(trade_pks, reads):
    """Within the block, ``reads`` status reads of ours (poll events, one every
    5 minutes back from now) for each trade of ``trade_pks``; rolled back after."""
    from ingest.newest import keep as keep_newest

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO records_webhookevent
                       (event_id, type, livemode, created_at, received_at, source,
                        verified_with, duplicate_count, state, attempts, last_error,
                        dropped_keys, payload, partner_id, subject_id, link_key, order_id)
                SELECT 'evt_poll_bench_' || t.id || '_' || g, 'trade.' || t.status, t.livemode,
                       now() - g * interval '5 minutes', now(), 'poll', '', 0, 'processed', 0,
                       '', 0, '{}'::jsonb, p.partner_id, t.transact_id, '', t.order_id
                  FROM records_trade t
                  JOIN records_order o ON o.id = t.order_id
                  JOIN records_partner p ON p.id = o.partner_id
                 CROSS JOIN generate_series(1, %s) AS g
                 WHERE t.id = ANY(%s)
                RETURNING id
                """,
                [reads, list(trade_pks)],
            )
            polls = [pk for (pk,) in cursor.fetchall()]
            cursor.execute("ANALYZE records_webhookevent")
        # As the pipeline would: the newest read kept beside each trade.
        keep_newest(polls=polls)
        yield
        transaction.set_rollback(True)


def signed_in_client():
    from accounts.services import create_user

    user = create_user("bench-agent", "bench-password-123", "support")
    client = Client()
    client.force_login(user)
    return client, user


def explain(client, label, url, report):
    """EXPLAIN (ANALYZE, BUFFERS) every SELECT one request of ``url`` runs."""
    reset_queries()
    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    for query in captured.captured_queries:
        text = query["sql"]
        if not text.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + text)
            plan = [line for (line,) in cursor.fetchall()]
        seq = [line.strip() for line in plan if "Seq Scan" in line]
        report.plans.append(
            {"page": label, "url": url, "sql": text, "plan": plan, "seq_scans": seq}
        )


def print_plans(report, out):
    print("\nEXPLAIN (ANALYZE, BUFFERS) of the S1-S3 pages' queries", file=out)
    for entry in report.plans:
        flag = "  <-- SEQ SCAN: " + "; ".join(entry["seq_scans"]) if entry["seq_scans"] else ""
        sql = " ".join(entry["sql"].split())
        print(f"\n[{entry['page']}] {sql[:230]}{'...' if len(sql) > 230 else ''}{flag}", file=out)
        for line in entry["plan"]:
            print("    " + line, file=out)


def seq_scan_note(report):
    flagged = [e for e in report.plans if e["seq_scans"]]
    if not flagged:
        return f"EXPLAIN: {len(report.plans)} queries of the S1-S3 pages, no Seq Scan."
    where = sorted(
        {(e["page"], s.split(" on ")[-1].split()[0]) for e in flagged for s in e["seq_scans"]}
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reltuples::bigint FROM pg_class WHERE relname = ANY(%s)",
            [sorted({table for _, table in where})],
        )
        rows = dict(cursor.fetchall())
    big = sorted({t for _, t in where if rows.get(t, 0) > 1000})
    return (
        f"EXPLAIN: {len(report.plans)} queries of the S1-S3 pages; Seq Scan in {len(flagged)}: "
        + ", ".join(f"{page}: {t} (~{max(0, rows.get(t, 0))} rows)" for page, t in where)
        + (
            f". On a table of more than 1,000 rows: {', '.join(big)}."
            if big
            else ". Only on tables of at most 1,000 rows (partners, pools, groups)."
        )
    )


def run(report, samples, admin_samples):
    from django.db.models import Count

    from browse import listings
    from lib.paging import PER_PAGE
    from queues.stuck import stuck_trades
    from queues.views import STUCK
    from records.models import WebhookEvent

    from . import admin

    client, _ = signed_in_client()
    ids = sample_ids(samples)
    prefixes = [prefix_of(v) for v in ids]
    orders = sample_orders(samples)

    # Warm: one pass over a few of each, so the first samples do not pay imports.
    timed(client, [SIGN_IN] * 20 + [f"/id/{v}" for v in ids[:5]])
    # As every gunicorn worker does once it has loaded the app (gunicorn.conf.py).
    gc.freeze()

    def page_row(rid, name, urls, target, limits, extra=""):
        # Each page beside a sign-in page timed just before it: a baseline
        # from the same seconds (this machine's speed drifts within a run).
        times, queries, beside = timed(client, urls, alongside=SIGN_IN)
        p50, p99, text = latency(times)
        s50, s99, _ = latency(beside)
        met = None if limits is None else (p50 <= limits[0] and p99 <= limits[1])
        return report.add(
            Row(
                rid,
                name,
                f"{text}, {min(queries)}-{max(queries)} q{extra}",
                f"sign-in page alongside p50 {ms(s50)} / p99 {ms(s99)}",
                f"{p50 / s50:.1f}x / {p99 / s99:.1f}x",
                target,
                met,
                {
                    "p50": p50,
                    "p99": p99,
                    "queries": [min(queries), max(queries)],
                    "n": len(urls),
                    "sign_in_p50": s50,
                    "sign_in_p99": s99,
                },
            )
        )

    # S1 and its admin baselines.
    user = admin.superuser()
    admin_values = ids[:admin_samples]
    stock = {}
    for name, model_admin in admin.ADMINS.items():
        runs = admin.time_changelist(model_admin, admin_values if "stock" in name else ids, user)
        stock[name] = runs
    from lookup.search import lookup

    # lookup() and the bare statement alternate, id by id: each beside a
    # baseline from the same moment (as the pages beside the sign-in page).
    # Which of the two goes first alternates too: the first to read an id's
    # index and heap pages reads them from disk or the OS's cache, the
    # second finds them in shared buffers. With lookup() always first, at
    # 10 M (the pages mostly out of the 128 MB buffers) that alone made it
    # 2.2x the bare statement; first half the time each, 1.3-1.4x.
    own, bare = [], []
    for n, value in enumerate(ids):
        if n % 2:
            bare.append(admin.bare_sql(value))
        started = time.perf_counter()
        lookup(value)
        own.append(time.perf_counter() - started)
        if not n % 2:
            bare.append(admin.bare_sql(value))
    bare50, bare99, bare_text = latency(bare)
    tight50 = latency([t for t, _ in admin.time_bare_sql_back_to_back(ids)])[0]
    stock_name = "stock Trade admin (6 fields, icontains)"
    stock50 = latency([t for t, _ in stock[stock_name]])[0]

    exact = page_row(
        "S1", "/id/<exact trade, event or ledger id>", [f"/id/{v}" for v in ids], "", None
    )
    p50, p99 = exact.values["p50"], exact.values["p99"]
    s50 = exact.values["sign_in_p50"]
    exact.baseline = f"stock Trade admin p50 {ms(stock50)}; {exact.baseline}"
    exact.ratio = f"{stock50 / p50:,.0f}x faster than the stock admin; {p50 / s50:.1f}x sign-in"
    exact.target = "<=1.5 ms p50 / <=4 ms p99; >=1,000x stock admin"
    exact.met = p50 <= 0.0015 and p99 <= 0.004 and stock50 / p50 >= 1000

    own50, own99, own_text = latency(own)
    report.add(
        Row(
            "S1",
            "lookup() itself (its SQL, no page)",
            own_text,
            f"bare SQL on identifier_unique, alternated with it, {bare_text}"
            f" (back to back on one cursor: p50 {ms(tight50)})",
            f"{own50 / bare50:.1f}x ({own50 / tight50:.1f}x back to back)",
            "within 2x of the tuned admin's bare SQL",
            own50 / bare50 <= 2,
            {
                "p50": own50,
                "p99": own99,
                "bare_p50": bare50,
                "bare_p99": bare99,
                "bare_back_to_back_p50": tight50,
            },
        )
    )
    for name, runs in stock.items():
        t50, t99, text = latency([t for t, _ in runs])
        queries = sorted({q for _, q in runs})
        report.add(
            Row(
                "S1 base",
                f"{name}, changelist_view",
                f"{text}, {queries[0]}-{queries[-1]} q (n={len(runs)})",
                f"bare SQL {bare_text}",
                f"{t50 / bare50:,.0f}x",
                values={"p50": t50, "p99": t99, "queries": queries, "n": len(runs)},
            )
        )
    page_row(
        "S1",
        "/id/<6-char prefix> (type prefix + 6)",
        [f"/id/{p}" for p in prefixes],
        "<=3 ms p50",
        (0.003, float("inf")),
    )

    # S2.
    page_row(
        "S2",
        "order timeline",
        [o.get_absolute_url() for o in orders],
        "<=5 ms p50 / <=15 ms p99",
        (0.005, 0.015),
    )

    # S3: the first page and a deep one.
    stuck = stuck_trades()
    stuck_count = stuck.count()
    cursor, depth = deep_cursor(STUCK, stuck, max(1, stuck_count // 50 // 2))
    page_row(
        "S3",
        f"stuck queue, first page ({stuck_count:,} stuck)",
        ["/queues/stuck"] * samples,
        "<=5 ms p50",
        (0.005, float("inf")),
    )
    deep_url = f"/queues/stuck?after={cursor}" if cursor else "/queues/stuck"
    page_row(
        "S3",
        f"stuck queue, page {depth + 1}",
        [deep_url] * samples,
        "<=5 ms p50",
        (0.005, float("inf")),
    )
    # Filtered by the partner with the most stuck trades: its histogram is
    # kept per partner too, so this must not grow with them either.
    most_stuck = (
        stuck.order_by()
        .values("order__partner__partner_id")
        .annotate(n=Count("id"))
        .order_by("-n")
        .values_list("order__partner__partner_id", flat=True)[:1]
    )
    for stuck_partner in most_stuck:
        page_row(
            "S3",
            f"stuck queue, partner filter ({stuck_partner})",
            [f"/queues/stuck?partner={stuck_partner}"] * samples,
            "<=5 ms p50",
            (0.005, float("inf")),
        )

    # The same first page after a day of the 5-minute re-poll: every trade on
    # it has 288 status reads of ours (rolled back after).
    first_page = list(stuck.values_list("id", flat=True)[:PER_PAGE])
    with re_polled(first_page, READS_A_DAY):
        page_row(
            "S3",
            f"stuck queue, first page, its trades re-polled for a day ({READS_A_DAY} reads each)",
            ["/queues/stuck"] * samples,
            "<=5 ms p50",
            (0.005, float("inf")),
        )

    # S6: lists with filters, the first page and a deep one.
    busiest = (
        WebhookEvent.objects.values("partner_id")
        .annotate(n=Count("id"))
        .order_by("-n")
        .values_list("partner_id", flat=True)[:1]
    )
    partner = list(busiest)[0]
    events = WebhookEvent.objects.filter(partner_id=partner)
    ev_cursor, ev_depth = deep_cursor(listings.EVENTS, events, 100)
    lists = [
        f"/events/?partner={partner}",
        f"/events/?partner={partner}&type=trade.settled",
        f"/trades/?partner={partner}&status=settled",
        "/trades/?status=reserved",
        f"/orders/?partner={partner}&status=failed",
        f"/ledger/?partner={partner}&type=fee",
    ]
    for url in lists:
        page_row(
            "S6", url, [url] * max(10, samples // 3), "<=10 ms p50 / <=50 ms p99", (0.01, 0.05)
        )
    if ev_cursor:
        url = f"/events/?partner={partner}&after={ev_cursor}"
        page_row(
            "S6",
            f"/events/?partner={partner}, page {ev_depth + 1}",
            [url] * max(10, samples // 3),
            "<=10 ms p50 / <=50 ms p99",
            (0.01, 0.05),
        )

    # EXPLAIN of the S1-S3 pages' queries.
    explain(client, "S1 exact", f"/id/{ids[0]}", report)
    explain(client, "S1 prefix", f"/id/{prefixes[0]}", report)
    explain(client, "S2 timeline", orders[0].get_absolute_url(), report)
    explain(client, "S3 first page", "/queues/stuck", report)
    explain(client, "S3 deep page", deep_url, report)
    report.notes.append(seq_scan_note(report))
    return {"ids": ids, "orders": [o.get_absolute_url() for o in orders]}
