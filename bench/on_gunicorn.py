"""The operations over HTTP, on gunicorn with 2 workers: S4 (new webhook
events, against pgbench's three-statement transaction and the sign-in page
on the same server), then those events applied by a Celery worker from the
batches the web processes sent, and S1 over HTTP (``/id/<exact id>``).

The built data set is reused between runs, so nothing here may leave a
trace in it: the webhook's rows (written by gunicorn, committed) are deleted
afterwards by id, above the high-water marks taken before.
"""

import base64
import glob
import os
import re
import secrets
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from django.db import connection, transaction

from . import load
from .ingest_speed import purge_tasks
from .net import free_port, wait_until_served
from .report import Row, latency

ROOT = Path(__file__).resolve().parent.parent


# Child tables first: deleting the webhook's rows by id in this order never
# trips a foreign key.
RECORD_TABLES = (
    "records_statuschange",
    "records_identifier",
    "records_deliveryattempt",
    "records_webhookevent",
    "records_trade",
    "records_quote",
    "records_order",
    "records_pool",
    "records_partner",
    "accounts_session",
)


def _broker():
    """The broker a webhook publishes its task to: Redis, or the database
    itself where none is configured, which cost each webhook about 2.2 ms
    more of the server's CPU on the 10 M set (docs/scaling.md)."""
    from django.conf import settings

    return settings.CELERY_BROKER_URL.split("://")[0].split("+")[0].replace("sqla", "database")


def _high_water():
    marks = {}
    with connection.cursor() as cursor:
        for table in RECORD_TABLES:
            if table == "accounts_session":
                continue
            cursor.execute(f"SELECT coalesce(max(id), 0) FROM {table}")  # noqa: S608
            marks[table] = cursor.fetchone()[0]
    return marks


def _delete_since(marks, session_keys=()):
    """Delete every row above the high-water marks, in every record table.

    The foreign-key checks are off for it (``session_replication_role``):
    the rows go together, and the product never deletes an order, so
    ``records_identifier.order_id`` has no index and each deleted order
    would cost a scan of the whole identifier index (minutes at 1 M).
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        for table in RECORD_TABLES:
            if table == "accounts_session":
                cursor.execute(
                    "DELETE FROM accounts_session WHERE session_key = ANY(%s)", [list(session_keys)]
                )
                continue
            cursor.execute(f"DELETE FROM {table} WHERE id > %s", [marks[table]])  # noqa: S608


def pgbench_tps(base_url, seconds, clients):
    """pgbench's built-in simple-update (BEGIN; UPDATE; SELECT; INSERT; END: three
    statements in a transaction), initialised in a scratch database of its own."""
    from . import dataset

    binary = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    if not binary:
        return None
    name = f"{dataset.dataset_name(base_url, 0, 0).rsplit('_bench_', 1)[0]}_pgbench"
    url = dataset.database_url(base_url, name)
    dataset.create_database(base_url, name)
    try:
        subprocess.run([binary[-1], "-i", "-s", "1", "-q", url], check=True, capture_output=True)
        out = subprocess.run(
            [binary[-1], "-b", "simple-update", "-n", "-c", str(clients), "-j", "2",
             "-T", str(seconds), url],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
    finally:
        dataset.drop_database(base_url, name)
    match = re.search(r"tps = ([\d.]+)", out)
    return float(match.group(1)) if match else None


def _server_env(url, **extra):
    from django.conf import settings

    return {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "opspanel.settings",
        # The same key as this process: the session made here must be valid there.
        "SECRET_KEY": settings.SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def _applied_by_a_worker(url, event_ids):
    """Start a Celery worker (2 processes, as production and the fault suite
    run it) on the batches the webhook sent; wait until every event is
    processed. Returns (events processed, seconds from the first batch's
    transaction to the last's, the batches' sizes)."""
    from django.db.models import Count, Max, Min

    from records.models import WebhookEvent

    worker = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "celery"), "-A", "opspanel", "worker",
         "--concurrency", "2", "-l", "warning", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-n", f"bench-{os.getpid()}@%h"],
        cwd=ROOT, env=_server_env(url),
    )  # fmt: skip
    events = WebhookEvent.objects.filter(event_id__in=event_ids)
    try:
        # At least 20 events/s (one event a task managed 35-39 at 10 M).
        deadline = time.monotonic() + max(120, len(event_ids) / 20)
        while events.filter(state="processed").count() < len(event_ids):
            if worker.poll() is not None:
                raise RuntimeError(f"the Celery worker exited ({worker.returncode})")
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(30)
    done = events.filter(state="processed")
    span = done.aggregate(first=Min("processed_at"), last=Max("processed_at"))
    # Events processed in one transaction share its time: one group a batch.
    batches = sorted(
        n for n in done.values("processed_at").annotate(n=Count("id")).values_list("n", flat=True)
    )
    seconds = (span["last"] - span["first"]).total_seconds() if span["first"] else 0.0
    return done.count(), seconds, batches


def _gunicorn(url, secret, port):
    env = _server_env(url, OPOOLS_WEBHOOK_SECRETS=secret)
    return subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "gunicorn"), "opspanel.wsgi", "--bind",
         f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip


def bench_http(report, url, base_url, total, concurrency, ids, pgbench_seconds):
    """S4 (new events POSTed to gunicorn) and S1 over HTTP, on 2 workers."""
    from django.conf import settings
    from standardwebhooks.webhooks import Webhook

    from ingest.pipeline import apply_stored
    from records.models import StatusChange, WebhookEvent

    from .pages import signed_in_client

    tps = pgbench_tps(base_url, pgbench_seconds, concurrency)
    purge_tasks()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    marks = _high_water()
    client_django, _ = signed_in_client()
    session = client_django.cookies[settings.SESSION_COOKIE_NAME].value
    port = free_port()
    server = _gunicorn(url, secret, port)
    base = f"http://127.0.0.1:{port}"
    run_tag = secrets.token_hex(3)
    try:
        wait_until_served(f"{base}/accounts/login/", 200)
        from tests import envelopes

        signer = Webhook(secret)
        bodies, event_ids = [], []
        for i in range(total):
            envelope = envelopes.trade(
                "reserved",
                transact_id=f"pt_live_B{run_tag}{i:06d}",
                reference=f"bench_{run_tag}_{i}",
            )
            body = orjson.dumps(envelope)
            event_ids.append(envelope["id"])
            bodies.append((body, envelope["id"]))

        host = "127.0.0.1"

        def signed(body, event_id):
            now = datetime.now(UTC)
            headers = [
                ("Content-Type", "application/json"),
                ("webhook-id", event_id),
                ("webhook-timestamp", str(int(now.timestamp()))),
                ("webhook-signature", signer.sign(event_id, now, body.decode())),
            ]
            return load.request("POST", "/webhooks/0pools", host, headers, body)

        def measure(requests, check=None):
            # bench/load.py: kept connections, requests built beforehand; the
            # client costs tens of microseconds a request, not httpx's ~2 ms.
            return load.measure(server, url, port, requests, concurrency, check)

        sign_in = [load.request("GET", "/accounts/login/", host)] * total
        measure(sign_in[:200])  # both workers warm
        base_run = measure(sign_in)
        assert base_run.statuses == [200], base_run.statuses
        base_rate = base_run.rate
        posts = [signed(*item) for item in bodies]
        hook = measure(posts)
        assert hook.statuses == [202], hook.statuses
        rate = hook.rate
        p50, p99, text = latency(hook.times)
        # The same events again: duplicates, answered and counted, never applied.
        again = measure([signed(*item) for item in bodies[: max(1, total // 10)]])
        # The web processes sent their batches as they went; the worker
        # starts now that the webhook is measured, and applies them.
        applied, apply_seconds, batches = _applied_by_a_worker(url, event_ids)
        # Then once more, twice, as a redelivered task and the sweep would
        # (nothing left to apply); then count.
        pks = list(WebhookEvent.objects.filter(event_id__in=event_ids).values_list("pk", flat=True))
        reapplied = apply_stored(pks) + apply_stored(pks)
        stored = len(pks)
        changes = StatusChange.objects.filter(event__event_id__in=event_ids).count()
        lost, twice = total - stored, changes - stored
        ratio = rate / tps if tps else None
        report.add(
            Row(
                "S4",
                f"webhook, {total:,} new events, gunicorn 2 workers, {concurrency} clients,"
                f" broker {_broker()}",
                f"{rate:,.0f} req/s, {text}; lost {lost}, applied twice {max(0, twice)}",
                f"pgbench simple-update {tps:,.0f} tps; sign-in page {base_rate:,.0f} req/s"
                if tps
                else f"sign-in page {base_rate:,.0f} req/s (no pgbench)",
                (f"{ratio:.2f}x pgbench; " if ratio else "") + f"{rate / base_rate:.2f}x sign-in",
                ">=500 req/s, p99 <=30 ms, 0 lost, 0 twice, >=0.3x pgbench",
                rate >= 500 and p99 <= 0.030 and lost == 0 and twice == 0 and (ratio or 0) >= 0.3,
                {
                    "rate": rate,
                    "p50": p50,
                    "p99": p99,
                    "pgbench_tps": tps,
                    "signin_rate": base_rate,
                    "lost": lost,
                    "twice": twice,
                    "duplicates_posted": len(again.answers),
                    "duplicate_codes": again.statuses,
                    "cpu_ms": hook.cpu(),
                    "signin_cpu_ms": base_run.cpu(),
                },
            )
        )
        apply_rate = applied / apply_seconds if apply_seconds else None
        report.add(
            Row(
                "S4",
                f"the same events applied by a Celery worker (2 processes) from the web's"
                f" batches ({len(batches):,} tasks, {min(batches, default=0)}-"
                f"{max(batches, default=0)} events each)",
                f"{apply_rate:,.0f} events/s; {applied:,} of {stored:,} applied"
                if apply_rate
                else f"{applied:,} of {stored:,} applied",
                f"the webhook {rate:,.0f} req/s",
                f"{apply_rate / rate:.2f}x" if apply_rate else "",
                "none in the issue (>=1x keeps up with the webhook)",
                None,
                {
                    "rate": apply_rate,
                    "applied": applied,
                    "seconds": apply_seconds,
                    "tasks": len(batches),
                    "batch_sizes": batches,
                    "applied_again": reapplied,
                },
            )
        )
        # S1 over HTTP, signed in (the session made in process, stored in the database).
        cookie = [("Cookie", f"{settings.SESSION_COOKIE_NAME}={session}")]
        paths = [f"/id/{v}" for v in (ids * (1 + total // max(1, len(ids))))[:total]]

        def not_signed_out(answer):
            # An exact id answers with a redirect to its order; never to the sign-in page.
            assert "/accounts/login" not in answer.headers.get("location", ""), answer.headers

        found = measure(
            [load.request("GET", path, host, cookie) for path in paths], check=not_signed_out
        )
        assert set(found.statuses) <= {200, 302}, found.statuses
        s1_rate = found.rate
        t50, t99, ttext = latency(found.times)
        report.add(
            Row(
                "S1",
                f"/id/<exact id> over HTTP (its answer: a redirect to the order),"
                f" gunicorn 2 workers, {concurrency} clients",
                f"{s1_rate:,.0f} req/s, {ttext}",
                f"sign-in page {base_rate:,.0f} req/s",
                f"{s1_rate / base_rate:.2f}x",
                ">=1,000 req/s",
                s1_rate >= 1000,
                {
                    "rate": s1_rate,
                    "p50": t50,
                    "p99": t99,
                    "codes": found.statuses,
                    "cpu_ms": found.cpu(),
                },
            )
        )
        for label, measured in (
            ("sign-in page", base_run),
            ("webhook (S4)", hook),
            ("/id/<exact id> (S1)", found),
        ):
            report.notes.append(f"over HTTP, {label}: {measured.cpu_text()}")
    finally:
        server.terminate()
        server.wait(10)
        purge_tasks()  # whatever the worker left, if it timed out
        _delete_since(marks, [session])
    return total
