#!/usr/bin/env python
"""Measurements of the ingest pipeline: `make bench` (or .venv/bin/python bench/run.py).

Runs in a database of its own (created next to DATABASE_URL's, dropped at
the end) and prints numbers. This machine is noisy, so every figure comes
with a ratio against a baseline measured in the same process, right before:

import    `import_events` over N sandbox events, against COPY of the same raw
          lines into an unlogged table (the floor any importer pays).
webhook   signed new events POSTed over loopback HTTP to gunicorn, against
          GET of the sign-in page on the same server (a Django round trip
          with no database work).
pages     p50/p99 and queries of /id/<value>, the order timeline and the
          stuck queue on the imported data (in process, Django test client,
          signed in), against the sign-in page through the same client.
bulk      a bulk re-poll of every stuck trade against the sandbox upstream
          on loopback (same network, same seed), against plain GETs of the
          sandbox's /healthz over the same loopback (the HTTP floor).
close     the daily close (reconciliation) over the whole imported stream
          as one window (every trade and ledger entry of the N events), and
          each of its UTC days closed for real, against reading the same
          trade and ledger rows once (SELECT *, fetched).
verify    POST /internal/keys/verify (the network asking whether a partner
          key is good) over loopback HTTP to gunicorn with 2 workers, against
          GET /healthz (one query and a broker ping) and GET of the sign-in
          page (no database work) on the same server. Each also says the CPU
          one request cost gunicorn, PostgreSQL and the client (from /proc):
          requests/s follow whatever else the machine runs, CPU per request
          much less.
"""

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _bench_database(base_url):
    """Create a scratch database on the same server; return (its URL, drop())."""
    import dj_database_url

    name = f"opspanel_bench_{os.getpid()}"
    config = dj_database_url.parse(base_url)
    admin = psycopg.connect(
        dbname="postgres",
        user=config["USER"] or None,
        password=config["PASSWORD"] or None,
        host=config["HOST"] or None,
        port=config["PORT"] or None,
        autocommit=True,
    )
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = base_url.replace(f"/{config['NAME']}", f"/{name}", 1)

    def drop():
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.close()

    return url, drop


def say(message):
    print(message, flush=True)


def bench_import(events):
    from django.core.management import call_command
    from django.db import connection

    from sandbox.network import generate

    orders = max(1, int(events / 8.4))
    path = Path(tempfile.mkdtemp()) / "bench.ndjson"
    say(f"generating ~{events:,} sandbox events ({orders:,} orders, seed 1) ...")
    import orjson

    with path.open("wb") as out:
        count = 0
        for envelope in generate(orders, 1):
            out.write(orjson.dumps(envelope) + b"\n")
            count += 1
    say(f"  {count:,} events, {path.stat().st_size / 1e6:.0f} MB")

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("CREATE UNLOGGED TABLE bench_raw (line text)")
        with cursor.cursor.copy("COPY bench_raw (line) FROM STDIN") as copy, path.open("rb") as f:
            for line in f:
                copy.write_row((line.rstrip(b"\n").decode(),))
    baseline = time.perf_counter() - started
    say(f"baseline: COPY raw lines         {count / baseline:>10,.0f} lines/s  ({baseline:.1f}s)")

    started = time.perf_counter()
    call_command("import_events", str(path), progress="never")
    took = time.perf_counter() - started
    say(
        f"import_events                    {count / took:>10,.0f} events/s ({took:.1f}s)"
        f"  = {baseline / took:.2f}x the COPY baseline"
    )
    started = time.perf_counter()
    call_command("import_events", str(path), progress="never")
    again = time.perf_counter() - started
    say(f"re-import (all duplicates)       {count / again:>10,.0f} events/s ({again:.1f}s)")
    path.unlink()
    return count


def _percentiles(samples):
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _timed(client, urls):
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    times, queries = [], []
    for url in urls:
        reset_queries()  # the query log keeps 9000 at most
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
        assert response.status_code in (200, 302), (url, response.status_code)
        queries.append(len(captured))
    return times, queries


def bench_pages(samples):
    import random

    from django.test import Client

    from accounts.services import create_user
    from records.models import Identifier, Order

    rng = random.Random(3)
    user = create_user("bench-agent", "bench-password-123", "support")
    client = Client()
    client.force_login(user)
    ids = list(Identifier.objects.exclude(order=None).values_list("value", flat=True)[:50_000])
    orders = list(Order.objects.select_related("partner")[:50_000])
    id_urls = [f"/id/{value}" for value in rng.sample(ids, min(samples, len(ids)))]
    order_urls = [o.get_absolute_url() for o in rng.sample(orders, min(samples, len(orders)))]
    say(f"pages over {len(ids):,} ids and {len(orders):,} orders, {samples} samples each")

    base_times, _ = _timed(client, ["/accounts/login/"] * samples)
    b50, b99 = _percentiles(base_times)
    say(f"baseline: sign-in page       p50 {b50 * 1000:6.1f} ms  p99 {b99 * 1000:6.1f} ms")
    queue_urls = ["/queues/stuck"] * samples
    for label, urls in (
        ("/id/<value>", id_urls),
        ("order timeline", order_urls),
        ("stuck queue", queue_urls),
    ):
        times, queries = _timed(client, urls)
        p50, p99 = _percentiles(times)
        say(
            f"{label:<16}             p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms"
            f"  = {p50 / b50:.1f}x / {p99 / b99:.1f}x the baseline;"
            f" queries {min(queries)}-{max(queries)}"
        )


def bench_bulk(orders):
    import httpx
    from django.conf import settings
    from django.utils import timezone

    from accounts.permissions import Action
    from actions import services
    from queues.stuck import stuck_trades
    from sandbox.server import DEFAULT_API_KEY, start

    say(f"starting the sandbox upstream over the same network ({orders:,} orders, seed 1) ...")
    server = start(port=0, orders=orders, seed=1, log=open(os.devnull, "w"))  # noqa: SIM115
    settings.OPOOLS_API_URL, settings.OPOOLS_API_KEY = server.url, DEFAULT_API_KEY
    try:
        targets = list(stuck_trades().values_list("transact_id", flat=True))
        with httpx.Client() as client:
            started = time.perf_counter()
            for _ in targets:
                client.get(f"{server.url}/healthz")
            floor = time.perf_counter() - started
        say(f"baseline: GET sandbox /healthz   {len(targets) / floor:>10,.0f} req/s")
        run = services.start_unattended_run(
            Action.BULK_REPOLL,
            targets,
            target=f"{len(targets)} stuck trades",
            reason="bench",
            key=f"bench-{timezone.now().timestamp()}",
        )
        started = time.perf_counter()
        services.carry_out(run)
        took = time.perf_counter() - started
        run.refresh_from_db()
        say(
            f"bulk re-poll of {len(targets)} stuck trades {len(targets) / took:>8,.0f} trades/s"
            f" ({took:.1f}s; {run.done} done, {run.failed} failed)"
            f"  = {floor / took:.2f}x the baseline"
        )
        left = stuck_trades().count()
        say(f"  stuck before {len(targets)}, after {left}")
    finally:
        server.stop()


def _best_of(runs, fn):
    best, result = None, None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        took = time.perf_counter() - started
        best = took if best is None else min(best, took)
    return best, result


def bench_close(events):
    from django.db import connection
    from django.db.models import Max, Min
    from django.utils import timezone

    from reconciliation.compute import bounds, compute
    from reconciliation.services import close_day
    from records.models import Trade

    span = Trade.objects.aggregate(first=Min("status_at"), last=Max("status_at"))
    first, last = span["first"].date(), span["last"].date()
    days = (last - first).days + 1
    start, end = bounds(first, days)
    now = timezone.now()

    def read_rows():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT * FROM records_trade WHERE status_at >= %s AND status_at < %s", [start, end]
            )
            trades = len(cursor.fetchall())
            cursor.execute(
                "SELECT * FROM records_ledgerentry WHERE posted_at >= %s AND posted_at < %s",
                [start, end],
            )
            return trades, len(cursor.fetchall())

    baseline, (trades, entries) = _best_of(3, read_rows)
    say(
        f"baseline: read {trades:,} trades + {entries:,} ledger entries once"
        f"  {baseline * 1000:8.0f} ms  ({events:,} events, {first} to {last}, {days} UTC days)"
    )
    took, computed = _best_of(3, lambda: compute(first, now, days=days))
    say(
        f"close of all {events:,} events as one window {took * 1000:8.0f} ms"
        f"  = {took / baseline:.1f}x the baseline; {len(computed.exceptions):,} exceptions,"
        f" {sum(row['trades'] for row in computed.totals):,} trades in the totals"
    )
    per_day = []
    for n in range(days):
        day = first + timedelta(days=n)
        started = time.perf_counter()
        close, _ = close_day(day, by="bench", now=now)
        per_day.append((time.perf_counter() - started, day, close.exceptions.count()))
    slowest = max(per_day)
    say(
        f"close_day, each of the {days} days        slowest {slowest[0] * 1000:6.0f} ms"
        f" ({slowest[1]}, {slowest[2]} exceptions), all {sum(t for t, _, _ in per_day):.2f}s"
    )


def bench_webhook(url, total, concurrency):
    import httpx
    import orjson
    from standardwebhooks.webhooks import Webhook

    secret = "whsec_" + __import__("base64").b64encode(secrets.token_bytes(32)).decode()
    port = 8765
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "OPOOLS_WEBHOOK_SECRETS": secret,
        "SECRET_KEY": "bench",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "opspanel.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{base}/accounts/login/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        from tests import envelopes

        signer = Webhook(secret)
        from datetime import UTC, datetime

        bodies = []
        for i in range(total):
            envelope = envelopes.trade(
                "reserved", transact_id=f"pt_live_B{i:07d}", reference=f"bench_{i}"
            )
            body = orjson.dumps(envelope)
            now = datetime.now(UTC)
            bodies.append(
                (
                    body,
                    {
                        "content-type": "application/json",
                        "webhook-id": envelope["id"],
                        "webhook-timestamp": str(int(now.timestamp())),
                        "webhook-signature": signer.sign(envelope["id"], now, body.decode()),
                    },
                )
            )

        client = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=concurrency))

        def run(fn, items):
            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                codes = list(pool.map(fn, items))
            return time.perf_counter() - started, codes

        took_base, codes = run(
            lambda _: client.get(f"{base}/accounts/login/").status_code, range(total)
        )
        assert set(codes) == {200}, set(codes)
        say(f"baseline: GET sign-in page       {total / took_base:>10,.0f} req/s")
        took, codes = run(
            lambda item: (
                client.post(f"{base}/webhooks/0pools", content=item[0], headers=item[1]).status_code
            ),
            bodies,
        )
        assert set(codes) == {202}, set(codes)
        say(
            f"POST /webhooks/0pools (new)      {total / took:>10,.0f} req/s"
            f"  = {took_base / took:.2f}x the baseline"
        )
    finally:
        server.terminate()
        server.wait(10)


def _gunicorn(url, port, **env):
    server = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "opspanel.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": url,
            "SECRET_KEY": "bench",
            "ALLOWED_HOSTS": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            **env,
        },
    )
    import httpx

    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    return server


def _raw_client(port, concurrency):
    """``run(requests)``: send each prepared HTTP/1.1 request (bytes) on its own
    connection, ``concurrency`` at a time; (seconds, [status]). Plain sockets,
    so the load generator costs little of the CPU it shares with the server
    (gunicorn's sync workers close every connection anyway)."""
    import socket

    def one(request):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(request)
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return int(b"".join(chunks)[9:12])

    def run(requests):
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            codes = list(pool.map(one, requests))
        return time.perf_counter() - started, codes

    return run


def _request(method, path, headers=(), body=b""):
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    if body:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _cpu_seconds(pids):
    """User + system CPU the processes have used so far (Linux /proc), by pid."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def _server_pids(server, url):
    """The gunicorn workers and the PostgreSQL backends serving the bench database."""
    import dj_database_url

    try:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    except OSError:
        children = []
    name = dj_database_url.parse(url)["NAME"]
    try:
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as conn:
            backends = [
                row[0]
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    [name],
                )
            ]
    except psycopg.Error:
        backends = []
    return [int(pid) for pid in children], backends


def _cpu_per_request(server, url, run, requests):
    """(seconds, codes, and the CPU milliseconds one request cost gunicorn's
    workers, PostgreSQL and this client): what a request costs whatever else
    the machine is doing, where requests per second depend on it."""
    import resource

    def client_cpu():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    workers, backends = _server_pids(server, url)
    before = _cpu_seconds(workers + backends)
    client_before = client_cpu()
    took, codes = run(requests)
    client_ms = (client_cpu() - client_before) * 1000 / len(requests)
    workers, backends = _server_pids(server, url)  # the pool may have opened more
    after = _cpu_seconds(workers + backends)

    def spent(pids):
        return sum(after.get(p, 0) - before.get(p, 0) for p in pids) * 1000 / len(requests)

    return took, codes, spent(workers), spent(backends), client_ms


def bench_verify(url, total, concurrency):
    import random

    import orjson

    from partners import services

    token = secrets.token_urlsafe(32)
    partners = [
        services.create_partner(f"ptn_bench_{n}", "", "live", verified=True, actor_name="bench")
        for n in range(5)
    ]
    for partner in partners:
        services.set_entitlement(partner, "EUR-USDT", "buy", max_per_quote="5000", reason="bench")
        services.set_entitlement(partner, "EUR-USDT", "sell", reason="bench")
    values = [services.issue_key(p, actor_name="bench").value for p in partners for _ in range(10)]
    port = 8766
    server = _gunicorn(url, port, OPSPANEL_VERIFY_TOKENS=token)
    headers = (f"Authorization: Bearer {token}", "Content-Type: application/json")
    verifications = [
        _request(
            "POST", "/internal/keys/verify", headers, orjson.dumps({"key": random.choice(values)})
        )
        for _ in range(total)
    ]
    run = _raw_client(port, concurrency)
    try:
        run(verifications[:200])  # both workers warm
        lines = []
        results = {}
        for label, requests in (
            ("baseline: GET /healthz        ", [_request("GET", "/healthz")] * total),
            ("baseline: GET sign-in page    ", [_request("GET", "/accounts/login/")] * total),
            ("POST /internal/keys/verify    ", verifications),
        ):
            took, codes, web_ms, db_ms, client_ms = _cpu_per_request(server, url, run, requests)
            assert set(codes) == {200}, set(codes)
            results[label] = took
            line = f"{label}{total / took:>8,.0f} req/s"
            if web_ms:
                line += (
                    f"; CPU per request: gunicorn {web_ms:.2f} ms, PostgreSQL {db_ms:.2f} ms,"
                    f" this client {client_ms:.2f} ms: 2 idle cores would serve at most"
                    f" ~{2000 / (web_ms + db_ms + client_ms):,.0f}/s with this client,"
                    f" ~{2000 / (web_ms + db_ms):,.0f}/s without"
                )
            lines.append(line)
        for line in lines:
            say(line)
        health, sign_in, took = results.values()
        say(
            f"verify = {health / took:.2f}x /healthz, {sign_in / took:.2f}x the sign-in page"
            f" (2 gunicorn workers, {concurrency} clients, same run)"
        )
    finally:
        server.terminate()
        server.wait(10)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--webhooks", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--verifications", type=int, default=5_000)
    parser.add_argument("--only", choices=["import", "webhook", "pages", "bulk", "close", "verify"])
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL")
    if not base_url:
        sys.exit("DATABASE_URL is not set (make bench sets it)")
    url, drop = _bench_database(base_url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("OPSPANEL_TESTING", "1")
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1 localhost testserver")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opspanel.settings")
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from django.conf import settings

        say(
            f"broker: {settings.CELERY_BROKER_URL.split('://')[0]}; "
            f"python {sys.version.split()[0]}; {os.cpu_count()} cores"
        )
        if args.only in (None, "import", "pages", "bulk", "close"):
            count = bench_import(args.events)
        if args.only in (None, "pages"):
            bench_pages(args.samples)
        if args.only in (None, "bulk"):
            bench_bulk(max(1, int(args.events / 8.4)))
        if args.only in (None, "close"):
            bench_close(count)
        if args.only in (None, "webhook"):
            bench_webhook(url, args.webhooks, args.concurrency)
        if args.only in (None, "verify"):
            bench_verify(url, args.verifications, args.concurrency)
    finally:
        from django.db import connections

        connections.close_all()
        drop()


if __name__ == "__main__":
    main()
