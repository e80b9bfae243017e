#!/usr/bin/env python
"""`make bench` (ARGS="--orders 120000 ..."): the issue-14 bench.

1. The data set: ``--orders`` sandbox orders (120 k ~ 1 M events, 1.2 M ~
   10 M), built straight into PostgreSQL with COPY as the import would have
   left it (bench/dataset.py), in a database of its own named by size, seed
   and schema, and reused by the next run (``--rebuild`` to build again).
2. The operations, each beside a baseline measured in the same run:

   pages    S1 /id/<exact id> and /id/<prefix>, S2 the order timeline, S3 the
            stuck queue (first and a deep page), S6 the lists with filters, in
            process, signed in; against the sign-in page, a stock ModelAdmin
            search (changelist_view, its counts included), the tuned admin
            and the bare SQL on the index (bench/admin.py); EXPLAIN (ANALYZE,
            BUFFERS) of the S1-S3 pages' queries, Seq Scans flagged.
   webhook  S4 new events POSTed to gunicorn (2 workers), against pgbench's
            3-statement transaction and the sign-in page on the same server;
            then a Celery worker (2 processes) applies the batches the web
            sent, against the webhook's rate; then S1 over HTTP.
   import   S5 import_events of new events into the data set, against COPY of
            the same lines into an unlogged jsonb table, an ORM create loop,
            and the same import into an empty database; in one process, and
            with --jobs (--import-jobs) on a copy of the data set. S5's floor:
            the import's INSERT of the event rows alone, against the COPY.
   bulk     a bulk re-poll of the stuck trades against the sandbox upstream.
   close    the daily close over the stream, against reading its rows once.
   verify   POST /internal/keys/verify (issue 12) on gunicorn, against /healthz
            and the sign-in page on the same server, with CPU per request
            (bench/verify.py; in a scratch database of its own).

3. One table (figure, baseline, ratio, the issue's target, met or MISSED),
   the EXPLAIN plans, and the same as JSON in bench/results/<time>-<orders>.json
   (``--reference`` also writes bench/results/reference.json).

Nothing a run does stays in the data set: writes are rolled back or deleted.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OPERATIONS = ("pages", "webhook", "import", "bulk", "close", "verify")


def _bench_database(base_url):
    """A scratch database on the same server: (its URL, drop()). bench/backlog.py's."""
    from bench.dataset import scratch_database

    return scratch_database(base_url, "opspanel_bench")


def say(message):
    print(message, flush=True)


def parse(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--orders", type=int, default=120_000, help="sandbox orders (~8.5 events each)"
    )
    parser.add_argument("--events", type=int, help="roughly this many events (sets --orders)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--samples", type=int, default=300, help="requests per page figure")
    parser.add_argument("--admin-samples", type=int, default=5, help="stock admin searches")
    parser.add_argument("--webhooks", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--import-orders", type=int, help="orders in the S5 import (orders/20)")
    parser.add_argument("--orm-events", type=int, default=2_000)
    parser.add_argument(
        "--import-jobs", type=int, default=2, help="S5's lanes (import_events --jobs)"
    )
    parser.add_argument("--verifications", type=int, default=5_000)
    parser.add_argument("--bulk-limit", type=int, default=500, help="stuck trades re-polled")
    parser.add_argument("--close-days", type=int, default=5, help="days closed one by one")
    parser.add_argument("--only", action="append", choices=OPERATIONS, help="repeatable")
    parser.add_argument("--skip", action="append", choices=OPERATIONS, default=[])
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--dataset",
        help="reuse this finished data set by name (built by an earlier schema or contract;"
        " its migrations are brought up to date first)",
    )
    parser.add_argument(
        "--drop", action="store_true", help="drop the data set (and the schema template) at the end"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-empty-import", action="store_true", help="skip S5's empty database")
    parser.add_argument("--out", help="the JSON file (default bench/results/<time>-<orders>.json)")
    parser.add_argument(
        "--reference", action="store_true", help="also bench/results/reference.json"
    )
    parser.add_argument("--quiet-plans", action="store_true", help="no EXPLAIN text on stdout")
    args = parser.parse_args(argv)
    if args.events:
        from bench.dataset import EVENTS_PER_ORDER

        args.orders = max(1, int(args.events / EVENTS_PER_ORDER))
    return args


SERVER_SETTINGS = (
    "server_version",
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "synchronous_commit",
    "effective_cache_size",
)


def main(argv=None, out=None):
    args = parse(argv)
    out = out or sys.stdout
    base_url = os.environ.get("DATABASE_URL")
    if not base_url:
        sys.exit("DATABASE_URL is not set (make bench sets it)")
    os.environ.setdefault("OPSPANEL_TESTING", "1")
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1 localhost testserver")
    # The run's own queue, for it and the servers it starts (their env is
    # this one): a test process's Celery worker on the same broker (the
    # smoke run in make test) must not take the webhook's batches.
    os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", f"opspanel-bench-{os.getpid()}")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ["BENCH_BASE_DATABASE_URL"] = base_url
    chosen = [op for op in (args.only or OPERATIONS) if op not in args.skip]

    import django

    from bench import dataset

    # Django needs a database named before setup; the data set's is known first.
    started = time.perf_counter()
    name = args.dataset or dataset.dataset_name(base_url, args.orders, args.seed)
    os.environ["DATABASE_URL"] = dataset.database_url(base_url, name)
    django.setup()
    if args.dataset:
        url, built, fresh = dataset.reuse(base_url, name, say=say)
        args.orders, args.seed = built["orders"], built["seed"]
    else:
        url, built, fresh = dataset.ensure(
            base_url, args.orders, args.seed, progress=not args.no_progress,
            rebuild=args.rebuild, say=say,
        )  # fmt: skip

    if args.import_orders is None:
        args.import_orders = max(20, args.orders // 20)

    from django.conf import settings

    from bench import on_gunicorn, pages, writes
    from bench.report import Report, Row, git_commit

    report = Report(
        {
            "dataset": name,
            "orders": args.orders,
            "seed": args.seed,
            "events": built["events"],
            "lines": built["lines"],
            "rows": built["rows"],
            "build_seconds": built["seconds"],
            "built_this_run": fresh,
            "operations": chosen,
            "args": vars(args),
            "commit": git_commit(),
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "broker": settings.CELERY_BROKER_URL.split("://")[0],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        size = cursor.fetchone()[0]
        # The server's settings that move the figures at scale (S5 above all:
        # with max_wal_size at its 1 GB default a 10 M import checkpoints
        # every few hundred thousand events, see docs/scaling.md).
        cursor.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
            [list(SERVER_SETTINGS)],
        )
        server = dict(cursor.fetchall())
    report.meta["database_bytes"] = size
    report.meta["server"] = server
    report.notes.append(
        "PostgreSQL " + ", ".join(f"{name} {server.get(name, '?')}" for name in SERVER_SETTINGS)
    )
    seconds = built["seconds"]
    report.add(
        Row(
            "data",
            f"{built['events']:,} events ({args.orders:,} orders), COPY build",
            f"built in {seconds['total']:.0f} s (play {seconds['play']:.0f}, COPY"
            f" {seconds['copy']:.0f}, indexes {seconds['index']:.0f})"
            + f"; {size / 1e9:.2f} GB"
            + ("" if fresh else "; reused"),
            values={"build_seconds": seconds, "rows": built["rows"]},
        )
    )
    ids = None
    if "pages" in chosen:
        say("pages (S1, S2, S3, S6) and the admin baselines ...")
        ids = pages.run(report, args.samples, args.admin_samples)["ids"]
    if "webhook" in chosen:
        say("webhook (S4) and S1 over HTTP ...")
        ids = ids or pages.sample_ids(args.samples)
        on_gunicorn.bench_http(
            report, url, base_url, args.webhooks, args.concurrency, ids, args.pgbench_seconds
        )
    if "import" in chosen:
        say("import (S5) ...")
        writes.bench_import(
            report, base_url, name, args.import_orders, args.seed + 100, args.orm_events,
            args.import_jobs, empty_db=not args.no_empty_import,
        )  # fmt: skip
    if "bulk" in chosen:
        say("bulk re-poll (the sandbox upstream builds its network first) ...")
        writes.bench_bulk(report, args.orders, args.seed, args.bulk_limit)
    if "close" in chosen:
        say("close ...")
        writes.bench_close(report, args.close_days)
    if "verify" in chosen:
        say("verify (key verification, in a scratch database) ...")
        from bench import verify

        verify.run(report, base_url, args.verifications, args.concurrency)

    report.meta["seconds"] = round(time.perf_counter() - started, 1)
    if report.plans and not args.quiet_plans:
        pages.print_plans(report, out)
    print(file=out)
    report.print(out)
    path = report.write(args.out)
    say(f"\nwritten {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if args.reference:
        report.write(Path(__file__).resolve().parent / "results" / "reference.json")
    from django.db import connections

    connections.close_all()
    if args.drop:
        dataset.drop_database(base_url, name)
        dataset.drop_database(base_url, dataset.schema_template_name(base_url))
    return report


if __name__ == "__main__":
    main()
