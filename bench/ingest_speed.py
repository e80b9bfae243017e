#!/usr/bin/env python
"""How fast events get in (issue 14, S4 and S5), each figure beside a
baseline measured in the same process, right before it.

    .venv/bin/python bench/ingest_speed.py import --events 100000
    .venv/bin/python bench/ingest_speed.py import --events 1000000 --step 100000
    .venv/bin/python bench/ingest_speed.py webhook --requests 3000

import   ``manage.py import_events`` over sandbox events, a step of lines at
         a time (the rate of each step is the rate at that table size),
         against a COPY of the same lines into one unlogged jsonb table
         (the floor: PostgreSQL parses the JSON, nothing is checked or
         indexed) and an ORM create loop (parse, check, then
         ``WebhookEvent.objects.get_or_create`` per line: storing only, no
         records; rolled back).
webhook  signed new events POSTed to gunicorn (2 workers) over loopback,
         p50/p99 per request, against GET /healthz and the sign-in page
         on the same server; then every event is applied as the Celery
         task would, and the store is checked: none lost, none applied twice.

Runs in a database of its own next to DATABASE_URL's (dropped at the end).
The functions return plain dicts, for bench/run.py to call:
``measure_import(path, step)`` and ``measure_webhook(url, requests,
concurrency)`` expect Django set up on the database to measure.
"""

import argparse
import io
import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ORM_SAMPLE = 2_000


def generate(events, path):
    """Write ~``events`` sandbox envelopes (seed 1) to ``path``; return the count."""
    import orjson

    from sandbox.network import generate as network

    count = 0
    with open(path, "wb") as out:
        for envelope in network(max(1, int(events / 8.4)), 1):
            out.write(orjson.dumps(envelope) + b"\n")
            count += 1
    return count


def copy_jsonb(lines):
    """COPY ``lines`` (bytes, one JSON document each) into an unlogged jsonb table."""
    from django.db import connection

    connection.ensure_connection()
    raw = connection.connection
    with raw.transaction():
        raw.execute("CREATE UNLOGGED TABLE ingest_speed_copy (doc jsonb)")
        started = time.perf_counter()
        # CSV with a quote and a delimiter JSON never holds raw: each line is
        # one jsonb value, read as is.
        with raw.cursor().copy(
            "COPY ingest_speed_copy (doc) FROM STDIN"
            " (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
        ) as copy:
            for start in range(0, len(lines), 5_000):
                copy.write(b"".join(lines[start : start + 5_000]))
        took = time.perf_counter() - started
        raw.execute("DROP TABLE ingest_speed_copy")
    return {"lines": len(lines), "seconds": took, "per_second": len(lines) / took}


def orm_loop(lines):
    """Parse, check and ``WebhookEvent.objects.create`` each line; rolled back."""
    import orjson
    from django.db import transaction
    from django.utils import timezone

    from ingest.contract import parse_envelope
    from records.models import WebhookEvent

    started = time.perf_counter()
    with transaction.atomic():
        now = timezone.now()
        for line in lines:
            envelope = parse_envelope(orjson.loads(line))
            # get_or_create: the stream has duplicates, as any real one.
            WebhookEvent.objects.get_or_create(
                event_id=envelope.event_id,
                defaults={
                    "type": envelope.type,
                    "livemode": envelope.livemode,
                    "created_at": envelope.created_at,
                    "received_at": now,
                    "source": "import",
                    "dropped_keys": envelope.dropped,
                    "payload": envelope.payload,
                    "partner_id": envelope.partner_id,
                    "subject_id": envelope.subject_id,
                },
            )
        took = time.perf_counter() - started
        transaction.set_rollback(True)
    return {"lines": len(lines), "seconds": took, "per_second": len(lines) / took}


def _import(path):
    from django.core.management import call_command

    out = io.StringIO()
    started = time.perf_counter()
    # Exit status 1 (SystemExit): lines were rejected (the far end of a big
    # sandbox stream lies beyond the 30 days ahead a time may be); the rest
    # imported, and the command said how many.
    with redirect_stdout(out), suppress(SystemExit):
        call_command("import_events", str(path), progress="never", stdout=out)
    return time.perf_counter() - started, out.getvalue().strip()


def measure_import(path, step=None):
    """Import ``path`` ``step`` lines at a time; each step beside the COPY
    baseline of the same lines and, for the first, the ORM loop."""
    from records.models import WebhookEvent

    lines = Path(path).read_bytes().splitlines(keepends=True)
    step = step or len(lines)
    steps = []
    orm = orm_loop(lines[:ORM_SAMPLE])
    for start in range(0, len(lines), step):
        chunk = lines[start : start + step]
        part = Path(tempfile.mkdtemp()) / "step.ndjson"
        part.write_bytes(b"".join(chunk))
        baseline = copy_jsonb(chunk)
        took, said = _import(part)
        part.unlink()
        steps.append(
            {
                "events_before": start,
                "events_after": start + len(chunk),
                "stored": WebhookEvent.objects.count(),
                "lines": len(chunk),
                "seconds": took,
                "per_second": len(chunk) / took,
                "copy_jsonb_per_second": baseline["per_second"],
                "ratio_to_copy": baseline["seconds"] / took,
                "ratio_to_orm": (len(chunk) / took) / orm["per_second"],
                "import_said": said,
            }
        )
        say(
            f"  {start + len(chunk):>10,} events: import {len(chunk) / took:>8,.0f}/s,"
            f" COPY jsonb {baseline['per_second']:>8,.0f}/s"
            f" = {baseline['seconds'] / took:.2f}x COPY,"
            f" {len(chunk) / took / orm['per_second']:.1f}x ORM"
        )
    rates = [s["per_second"] for s in steps]
    return {
        "events": len(lines),
        "step": step,
        "orm_loop": orm,
        "steps": steps,
        "flatness": max(rates) / min(rates),
    }


def _percentile(ordered, q):
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _load(fn, items, concurrency):
    """Run ``fn`` over ``items`` on ``concurrency`` threads: (req/s, p50 ms, p99 ms, results)."""

    def timed(item):
        started = time.perf_counter()
        result = fn(item)
        return time.perf_counter() - started, result

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(timed, items))
    took = time.perf_counter() - started
    times = sorted(t for t, _ in done)
    return (
        {
            "requests": len(items),
            "per_second": len(items) / took,
            "p50_ms": _percentile(times, 0.5) * 1000,
            "p99_ms": _percentile(times, 0.99) * 1000,
        },
        [r for _, r in done],
    )


def measure_webhook(url, requests, concurrency=8, gunicorn_args=()):
    """POST ``requests`` new signed events to gunicorn (2 workers) on ``url``'s
    database; ``gunicorn_args`` go after ours (``--worker-class sync``: no threads)."""
    from datetime import UTC, datetime

    import httpx
    import orjson
    from standardwebhooks.webhooks import Webhook

    from ingest import pipeline
    from records.models import StatusChange, WebhookEvent
    from tests import envelopes

    secret = "whsec_" + __import__("base64").b64encode(secrets.token_bytes(32)).decode()
    from bench.net import free_port, wait_until_served

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "OPOOLS_WEBHOOK_SECRETS": secret,
        "SECRET_KEY": "bench",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    gunicorn = [str(ROOT / ".venv" / "bin" / "gunicorn"), "opspanel.wsgi"]
    gunicorn += ["--bind", f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning"]
    gunicorn += list(gunicorn_args)
    server = subprocess.Popen(gunicorn, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    signer = Webhook(secret)
    tag = secrets.token_hex(3)
    bodies = []
    for i in range(requests):
        envelope = envelopes.trade(
            "reserved", transact_id=f"pt_live_W{tag}{i:07d}", reference=f"bench_{tag}_{i}"
        )
        body = orjson.dumps(envelope)
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": envelope["id"],
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(envelope["id"], now, body.decode()),
        }
        bodies.append((body, headers))
    result = {
        "requests": requests,
        "concurrency": concurrency,
        "workers": 2,
        "gunicorn_args": list(gunicorn_args),
    }
    try:
        wait_until_served(f"{base}/healthz", 200, answers=(200, 503))
        limits = httpx.Limits(max_connections=concurrency)
        with httpx.Client(timeout=30, limits=limits) as client:
            # Warm both workers (imports, pools) before anything is timed.
            for _ in range(20):
                client.get(f"{base}/accounts/login/")
            result["healthz"], codes = _load(
                lambda _: client.get(f"{base}/healthz").status_code, range(requests), concurrency
            )
            result["healthz"]["codes"] = sorted(set(codes))
            result["sign_in_page"], codes = _load(
                lambda _: client.get(f"{base}/accounts/login/").status_code,
                range(requests),
                concurrency,
            )
            result["webhook"], codes = _load(
                lambda item: (
                    client.post(
                        f"{base}/webhooks/0pools", content=item[0], headers=item[1]
                    ).status_code
                ),
                bodies,
                concurrency,
            )
            result["webhook"]["codes"] = sorted(set(codes))
            again = [
                client.post(f"{base}/webhooks/0pools", content=b, headers=h) for b, h in bodies[:50]
            ]
            result["resent_answered_200"] = sum(r.status_code == 200 for r in again)
    finally:
        server.terminate()
        server.wait(10)
    for key in ("healthz", "sign_in_page"):
        base_rate = result[key]["per_second"]
        result["webhook"][f"ratio_to_{key}"] = result["webhook"]["per_second"] / base_rate

    # None lost, none applied twice: every event stored once, then applied
    # as the task does (twice over: the second pass must apply nothing).
    ids = [orjson.loads(b)["id"] for b, _ in bodies]
    pks = list(WebhookEvent.objects.filter(event_id__in=ids).values_list("pk", flat=True))
    applied = sum(pipeline.apply_stored(pks[i : i + 500]) for i in range(0, len(pks), 500))
    applied_again = sum(pipeline.apply_stored(pks[i : i + 500]) for i in range(0, len(pks), 500))
    result["check"] = {
        "stored": len(pks),
        "lost": requests - len(pks),
        "applied": applied,
        "applied_twice": applied_again,
        "status_changes": StatusChange.objects.filter(event_id__in=pks).count(),
        "duplicates_counted": sum(
            WebhookEvent.objects.filter(pk__in=pks).values_list("duplicate_count", flat=True)
        ),
    }
    purge_tasks()
    return result


def purge_tasks():
    """Drop the task messages waiting in this run's queue (the webhook's,
    with no worker to take them; or an earlier run's, with another
    database's ids)."""
    from opspanel.celery import app

    try:
        app.control.purge()
    except Exception as exc:  # noqa: BLE001 - only tidying up
        say(f"  (could not purge the broker: {type(exc).__name__})")


def say(message):
    print(message, flush=True)


def _scratch_database(base_url):
    from bench.dataset import scratch_database

    return scratch_database(base_url, "opspanel_ingest_speed")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["import", "webhook"])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--step", type=int, help="lines per import step (default: all)")
    parser.add_argument("--file", help="an NDJSON file to import instead of generating one")
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--gunicorn-args", default="", help='e.g. "--worker-class sync"')
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL")
    if not base_url:
        sys.exit("DATABASE_URL is not set")
    url, drop = _scratch_database(base_url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("OPSPANEL_TESTING", "1")
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1 localhost testserver")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opspanel.settings")
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        if args.what == "import":
            path = args.file
            if path is None:
                path = Path(tempfile.mkdtemp()) / "events.ndjson"
                say(f"generating ~{args.events:,} sandbox events ...")
                generate(args.events, path)
            say(f"importing {path}")
            result = measure_import(path, args.step)
            orm = result["orm_loop"]
            say(
                f"ORM create loop {orm['per_second']:,.0f}/s over {orm['lines']:,} lines;"
                f" flatness (fastest/slowest step) {result['flatness']:.2f}"
            )
        else:
            result = measure_webhook(
                url, args.requests, args.concurrency, args.gunicorn_args.split()
            )
            for key in ("healthz", "sign_in_page", "webhook"):
                r = result[key]
                say(
                    f"{key:<13} {r['per_second']:>7,.0f} req/s  p50 {r['p50_ms']:5.1f} ms"
                    f"  p99 {r['p99_ms']:5.1f} ms"
                )
            say(
                f"check: {result['check']},"
                f" re-sent answered 200: {result['resent_answered_200']}/50"
            )
        if args.json:
            import orjson

            Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    finally:
        from django.db import connections

        connections.close_all()
        drop()


if __name__ == "__main__":
    main()
