#!/usr/bin/env python
"""Page timings on an existing database (issue 14, S1-S3, S6): a scratch probe.

Unlike bench/run.py it neither creates nor imports: point DATABASE_URL at a
database already holding data (say one built once with ``import_events``)
and it migrates it, signs a support user in through the test client, and
prints p50/p99 and queries per page beside the sign-in page measured in the
same process. ``--profile URL`` prints a cProfile of that page instead.

    DATABASE_URL=postgres://.../db OPSPANEL_TESTING=1 .venv/bin/python bench/pages_probe.py
"""

import argparse
import cProfile
import os
import pstats
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import percentiles  # noqa: E402


def timed(client, urls):
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    times, cpu, queries = [], [], []
    for url in urls:
        reset_queries()
        with CaptureQueriesContext(connection) as captured:
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(url)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        assert response.status_code in (200, 302), (url, response.status_code)
        queries.append(len(captured))
    return times, cpu, queries


def urls(samples):
    from lib.listing import show_list  # noqa: F401  (import cost out of the timings)
    from records.models import Identifier, Order, Partner, Trade

    rng = random.Random(3)
    ids = list(Identifier.objects.exclude(order=None).values_list("value", flat=True)[:50_000])
    orders = list(Order.objects.select_related("partner")[:50_000])
    partner = Partner.objects.order_by("partner_id").first().partner_id
    pick = lambda seq: [seq[rng.randrange(len(seq))] for _ in range(samples)]  # noqa: E731
    prefixes = [v[:10] for v in pick([v for v in ids if v.startswith("pt_")])]
    deep = Trade.objects.filter(status="reserved").order_by("reserved_at", "id")
    cursor_row = deep[min(deep.count() - 1, 500)] if deep.exists() else None
    stuck_deep = "/queues/stuck"
    if cursor_row is not None:
        from lib.paging import make_cursor
        from queues.views import STUCK

        stuck_deep += "?after=" + make_cursor(STUCK, cursor_row)
    return [
        ("/id/<exact>", [f"/id/{v}" for v in pick(ids)]),
        ("/id/<10-char prefix>", [f"/id/{v}" for v in prefixes]),
        ("order timeline", [o.get_absolute_url() for o in pick(orders)]),
        ("/queues/stuck", ["/queues/stuck"] * samples),
        ("/queues/stuck deep", [stuck_deep] * samples),
        ("/queues/stuck?partner", [f"/queues/stuck?partner={partner}"] * samples),
        ("/orders/", ["/orders/"] * samples),
        ("/trades/?status", ["/trades/?status=settled"] * samples),
        ("/events/?partner", [f"/events/?partner={partner}"] * samples),
        ("/ledger/", ["/ledger/"] * samples),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--profile", default="", help="cProfile of one page (PROBE_SORT=tottime)")
    parser.add_argument("--only", default="")
    parser.add_argument("--sql", default="", help="print the queries of one page")
    parser.add_argument("--explain", action="store_true", help="with --sql: EXPLAIN ANALYZE each")
    args = parser.parse_args()
    os.environ.setdefault("OPSPANEL_TESTING", "1")
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1 localhost testserver")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opspanel.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from accounts.services import create_user

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username="probe-agent").first()
    user = user or create_user("probe-agent", "probe-password-123", "operations")
    client = Client()
    client.force_login(user)
    if args.sql:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        client.get(args.sql)
        with CaptureQueriesContext(connection) as captured:
            client.get(args.sql)
        for query in captured:
            print(query["time"], query["sql"][: 10_000 if args.explain else 600])
            if args.explain and query["sql"].lstrip().upper().startswith(("SELECT", "WITH")):
                with connection.cursor() as cursor:
                    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"])
                    print("\n".join("    " + row[0] for row in cursor.fetchall()))
        return
    if args.profile:
        client.get(args.profile)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.samples):
            client.get(args.profile)
        profile.disable()
        stats = pstats.Stats(profile).sort_stats(os.environ.get("PROBE_SORT", "cumulative"))
        if os.environ.get("PROBE_CALLERS"):  # who calls a function, e.g. "functional.py:276"
            stats.print_callers(os.environ["PROBE_CALLERS"])
        else:
            stats.print_stats(45)
        return
    pages = urls(args.samples)
    for _, page in pages:  # warm: templates, URL resolver, pool
        timed(client, page[:3])
    # Python's process time beside the wall clock: the machine is shared, and
    # CPU time does not count waiting for a core (nor PostgreSQL's own work).
    base, base_cpu, _ = timed(client, ["/accounts/login/"] * args.samples)
    b50, b99 = percentiles(base)
    c50, _ = percentiles(base_cpu)
    print(
        f"{'baseline: sign-in page':<24} p50 {b50 * 1000:6.2f} ms  p99 {b99 * 1000:6.2f} ms"
        f"  cpu p50 {c50 * 1000:6.2f} ms"
    )
    for label, page in pages:
        if args.only and args.only not in label:
            continue
        times, cpu, queries = timed(client, page)
        p50, p99 = percentiles(times)
        cpu50, _ = percentiles(cpu)
        print(
            f"{label:<24} p50 {p50 * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms"
            f"  cpu p50 {cpu50 * 1000:6.2f} ms"
            f"  = {p50 / b50:5.2f}x / {p99 / b99:5.2f}x / cpu {cpu50 / c50:5.2f}x;"
            f" queries {min(queries)}-{max(queries)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
