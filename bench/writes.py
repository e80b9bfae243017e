"""The operations that write in process: S5 (import_events, against COPY and
an ORM create loop), the bulk re-poll and the daily close. The ones over HTTP
(S4, S1 on gunicorn) are ``bench.on_gunicorn``.

The built data set is reused between runs, so nothing here may leave a
trace in it: the import, the ORM loop, the bulk run and the close run in a
transaction that is rolled back.
"""

import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from django.db import connection, transaction

from .report import Row, latency, ms

ROOT = Path(__file__).resolve().parent.parent


class Rollback(Exception):
    pass


def rolled_back(fn):
    """Run ``fn`` in a transaction that is rolled back; return what it returned."""
    box = {}
    try:
        with transaction.atomic():
            box["value"] = fn()
            raise Rollback
    except Rollback:
        pass
    return box["value"]


# --- S5 ----------------------------------------------------------------------


def import_lines(orders, seed):
    """NDJSON lines of a stream that starts after the data set's (new orders, new ids;
    the data set ends by ``DEFAULT_START``)."""
    from sandbox.network import DEFAULT_START, generate

    path = Path(tempfile.mkdtemp(prefix="bench-import-")) / "events.ndjson"
    count = 0
    with path.open("wb") as out:
        for envelope in generate(orders, seed, DEFAULT_START + timedelta(days=1)):
            data = envelope["data"]
            # The sandbox numbers references per partner from 1: make them new orders.
            for key in ("partnerReference",):
                if key in data:
                    data[key] = data[key] + "-s5"
            if data.get("idempotencyKey"):
                data["idempotencyKey"] = "s5-" + data["idempotencyKey"]
            out.write(orjson.dumps(envelope) + b"\n")
            count += 1
    return path, count


def time_import(path, **options):
    """Seconds of ``import_events path`` (``options`` passed on), quiet."""
    from django.core.management import call_command

    with open(os.devnull, "w") as quiet:
        started = time.perf_counter()
        call_command("import_events", str(path), progress="never", stdout=quiet, **options)
        return time.perf_counter() - started


def events_alone(path, batch_size=2000):
    """Seconds of the import's own INSERT of the event rows
    (``ingest.events.insert_applied``), in the import's batches, and nothing
    else: no other table, no identifiers, no state machine, no check at
    commit. The lines are parsed and their ids drawn before the clock
    starts. The least any import pays that stores each event where the
    pages find it (its row, logged, and its indexes): S5's floor.

    Each new order gets a new pk after the table's last, as the import's
    new orders do, so ``event_order_time_idx`` grows where it would. Each
    event id is written backwards after its ``evt_`` (as random, and new):
    the import timed before this left its own ids in the unique index, dead
    once rolled back, which this insert would otherwise step over."""
    from django.utils import timezone

    from ingest.contract import parse_envelope
    from ingest.events import insert_applied
    from ingest.linking import Placed
    from ingest.sql import next_ids
    from records.models import Order, WebhookEvent

    first = {}  # a line sent twice is stored once
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                decoded = orjson.loads(line)
                decoded["id"] = "evt_" + decoded["id"][4:][::-1]
                envelope = parse_envelope(decoded)
                first.setdefault(envelope.event_id, envelope)
    envelopes = list(first.values())
    if not envelopes:
        return 0.0
    ids = next_ids(WebhookEvent, len(envelopes))
    last = Order.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    orders = {}
    placed = [
        Placed(pk, e, orders.setdefault((e.partner_id, e.data.get("partnerReference")),
                                        last + len(orders) + 1), "")
        for pk, e in zip(ids, envelopes, strict=True)
    ]  # fmt: skip
    times = dict.fromkeys(first, 1)
    now = timezone.now()
    started = time.perf_counter()
    for start in range(0, len(placed), batch_size):
        insert_applied(placed[start : start + batch_size], "import", times, now)
    return time.perf_counter() - started


def _copy_lines(path, kind):
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE UNLOGGED TABLE bench_raw_{kind} (line {kind})")
        started = time.perf_counter()
        with (
            cursor.cursor.copy(f"COPY bench_raw_{kind} (line) FROM STDIN") as copy,
            path.open("rb") as f,
        ):
            for line in f:
                copy.write_row((line.rstrip(b"\n").decode(),))
        took = time.perf_counter() - started
        cursor.execute(f"DROP TABLE bench_raw_{kind}")
    return took


def _orm_loop(path, limit):
    """The first ``limit`` lines stored and applied one event at a time through the ORM
    (``WebhookEvent.objects.create`` per line), the way a first importer is written."""
    from ingest.contract import parse_envelope
    from records.models import WebhookEvent

    now = datetime.now(UTC)
    n = 0
    started = time.perf_counter()
    with path.open("rb") as f:
        for line in f:
            envelope = parse_envelope(orjson.loads(line))
            if WebhookEvent.objects.filter(event_id=envelope.event_id).exists():
                continue
            WebhookEvent.objects.create(
                event_id=envelope.event_id,
                type=envelope.type,
                livemode=envelope.livemode,
                created_at=envelope.created_at,
                received_at=now,
                source="import",
                payload=envelope.payload,
                partner_id=envelope.partner_id,
                subject_id=envelope.subject_id,
            )
            n += 1
            if n >= limit:
                break
    return n, time.perf_counter() - started


def bench_import(report, base_url, dataset_name, orders, seed, orm_limit, jobs, empty_db=True):
    """S5: the import in one process (rolled back), against COPY and an ORM
    loop; then in ``jobs`` lanes on a copy of the data set, and the same into
    an empty database (``bench.import_copy``)."""
    from . import dataset

    path, count = import_lines(orders, seed)
    took = rolled_back(lambda: time_import(path))
    jsonb = rolled_back(lambda: _copy_lines(path, "jsonb"))
    text = rolled_back(lambda: _copy_lines(path, "text"))
    orm_n, orm_took = rolled_back(lambda: _orm_loop(path, orm_limit))
    alone = rolled_back(lambda: events_alone(path))
    rate, jsonb_rate, text_rate = count / took, count / jsonb, count / text
    orm_rate = orm_n / orm_took
    copy_figure = f"COPY into unlogged jsonb {jsonb_rate:,.0f}/s (text {text_rate:,.0f}/s)"
    report.add(
        Row(
            "S5",
            f"import_events, {count:,} new events into the data set, one process",
            f"{rate:,.0f} events/s ({took:.1f} s)",
            copy_figure,
            f"{rate / jsonb_rate:.2f}x COPY jsonb",
            ">=25k events/s and >=0.2x COPY jsonb",
            rate >= 25_000 and rate / jsonb_rate >= 0.2,
            {"rate": rate, "copy_jsonb": jsonb_rate, "copy_text": text_rate, "events": count},
        )
    )
    in_copy = _lanes_in(base_url, f"{dataset_name[:50]}_s5copy", path, jobs, copy_of=dataset_name)
    lanes_rate = count / in_copy["lanes"]
    report.add(
        Row(
            "S5",
            f"import_events --jobs {jobs}, the same into a copy of the data set",
            f"{lanes_rate:,.0f} events/s ({in_copy['lanes']:.1f} s);"
            f" {lanes_rate * in_copy['one'] / count:.2f}x one process in the copy",
            copy_figure,
            f"{lanes_rate / jsonb_rate:.2f}x COPY jsonb",
            ">=25k events/s and >=0.2x COPY jsonb",
            lanes_rate >= 25_000 and lanes_rate / jsonb_rate >= 0.2,
            {
                "rate": lanes_rate,
                "jobs": jobs,
                "one_in_copy": count / in_copy["one"],
                "copy_jsonb": jsonb_rate,
                "events": count,
            },
        )
    )
    best = max(rate, lanes_rate)
    report.add(
        Row(
            "S5",
            "import_events against an ORM create loop",
            f"{best:,.0f} events/s ({f'--jobs {jobs}' if lanes_rate > rate else 'one process'})",
            f"ORM create loop {orm_rate:,.0f} events/s ({orm_n:,} events, store only)",
            f"{best / orm_rate:.1f}x",
            ">=10x an ORM create loop",
            best / orm_rate >= 10,
            {"rate": best, "orm_rate": orm_rate},
        )
    )
    report.add(
        Row(
            "S5 floor",
            f"the import's INSERT of the event rows alone ({count:,} lines; their"
            " indexes, no other table)",
            f"{count / alone:,.0f} events/s ({alone:.1f} s);"
            f" {alone / took:.0%} of the import's time",
            copy_figure,
            f"{count / alone / jsonb_rate:.2f}x COPY jsonb",
            "",
            None,
            {"rate": count / alone, "copy_jsonb": jsonb_rate, "share_of_import": alone / took},
        )
    )
    if empty_db:
        name = f"{dataset.dataset_name(base_url, 0, 0).rsplit('_bench_', 1)[0]}_bench_empty"
        empty = _lanes_in(base_url, name, path, jobs)
        one_ratio = took / empty["one"]
        lanes_ratio = in_copy["lanes"] / empty["lanes"]
        report.add(
            Row(
                "S5",
                "import_events at scale against an empty database",
                f"{rate:,.0f} events/s one process; {lanes_rate:,.0f} --jobs {jobs}",
                f"same lines into an empty database {count / empty['one']:,.0f} events/s;"
                f" {count / empty['lanes']:,.0f} --jobs {jobs}",
                f"{1 / one_ratio:.2f}x; {1 / lanes_ratio:.2f}x",
                "flat: within 1.5x",
                one_ratio <= 1.5 and lanes_ratio <= 1.5,
                {
                    "rate": rate,
                    "empty_rate": count / empty["one"],
                    "lanes_rate": lanes_rate,
                    "empty_lanes_rate": count / empty["lanes"],
                },
            )
        )
    path.unlink()
    return count


def _lanes_in(base_url, name, path, jobs, copy_of=None):
    """``bench.import_copy`` in a child on database ``name``: a copy of
    ``copy_of``, or empty; dropped after. Returns its {"warm_up", "one",
    "lanes"} seconds."""
    from django.db import connections

    from . import dataset

    if copy_of:
        # Nobody may be connected to the data set while it is copied: the
        # bench's own connections (and their pool) go, and come back on use.
        for connection_ in connections.all(initialized_only=True):
            connection_.close()
            if hasattr(connection_, "close_pool"):
                connection_.close_pool()
        url = dataset.copy_database(base_url, copy_of, name)
    else:
        url = dataset.empty_database(base_url, name)
    try:
        env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "opspanel.settings"}
        done = subprocess.run(
            [sys.executable, "-m", "bench.import_copy", str(path), str(jobs)],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
    finally:
        dataset.drop_database(base_url, name)
    return orjson.loads(done.stdout.strip().splitlines()[-1])


# --- bulk and close ----------------------------------------------------------------


def bench_bulk(report, orders, seed, limit):
    """A bulk re-poll of the stuck trades (at most ``limit``) against the sandbox
    upstream on loopback, against plain GETs of its /healthz; rolled back."""
    import httpx
    from django.conf import settings
    from django.utils import timezone

    from accounts.permissions import Action
    from actions import services
    from queues.stuck import stuck_trades
    from sandbox.server import DEFAULT_API_KEY, start

    started = time.perf_counter()
    from .dataset import stream_start

    server = start(
        port=0, orders=orders, seed=seed, start=stream_start(orders),
        log=open(os.devnull, "w"),  # noqa: SIM115
    )  # fmt: skip
    upstream = time.perf_counter() - started
    settings.OPOOLS_API_URL, settings.OPOOLS_API_KEY = server.url, DEFAULT_API_KEY
    try:
        targets = list(stuck_trades().values_list("transact_id", flat=True)[:limit])
        with httpx.Client() as client:
            started = time.perf_counter()
            for _ in targets:
                client.get(f"{server.url}/healthz")
            floor = time.perf_counter() - started

        def bulk():
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
            return took, run.done, run.failed

        took, done, failed = rolled_back(bulk)
    finally:
        server.stop()
    report.add(
        Row(
            "bulk",
            f"bulk re-poll of {len(targets):,} stuck trades",
            f"{len(targets) / took:,.0f} trades/s ({took:.1f} s; {done} done, {failed} failed)",
            f"GET sandbox /healthz {len(targets) / floor:,.0f} req/s",
            f"{floor / took:.2f}x",
            values={
                "rate": len(targets) / took,
                "floor": len(targets) / floor,
                "upstream_start_s": upstream,
            },
        )  # fmt: skip
    )


def bench_close(report, days_limit):
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
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT * FROM records_trade WHERE status_at >= %s AND status_at < %s", [start, end]
            )
            trades = len(cursor.fetchall())
            cursor.execute(
                "SELECT * FROM records_ledgerentry WHERE posted_at >= %s AND posted_at < %s",
                [start, end],
            )
            entries = len(cursor.fetchall())
        return time.perf_counter() - started, trades, entries

    baseline, trades, entries = read_rows()
    started = time.perf_counter()
    computed = compute(first, now, days=days)
    took = time.perf_counter() - started
    report.add(
        Row(
            "close",
            f"close of the whole stream as one window ({days} days)",
            f"{ms(took)}; {len(computed.exceptions):,} exceptions",
            f"read {trades:,} trades + {entries:,} ledger entries once {ms(baseline)}",
            f"{took / baseline:.1f}x",
            values={"seconds": took, "baseline": baseline},
        )
    )

    def close_days():
        per_day = []
        for n in range(min(days, days_limit)):
            day = first + timedelta(days=n)
            started = time.perf_counter()
            close, _ = close_day(day, by="bench", now=now)
            per_day.append(time.perf_counter() - started)
        return per_day

    per_day = rolled_back(close_days)
    p50, p99, text = latency(per_day)
    report.add(
        Row(
            "close",
            f"close_day, {len(per_day)} of the {days} UTC days (rolled back)",
            f"{text}; slowest {ms(max(per_day))}",
            f"read once {ms(baseline)} (all days)",
            f"{max(per_day) / baseline:.2f}x (slowest day)",
            values={"p50": p50, "p99": p99, "max": max(per_day)},
        )
    )
