import io
import itertools
import os
import time
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import orjson
import pgtrigger
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver

_keys = itertools.count(1)


def url_patterns(patterns=None, namespace=""):
    """(namespaced name, URLPattern) of every route in the URLconf."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from url_patterns(entry.url_patterns, inner)
        elif isinstance(entry, URLPattern):
            yield f"{namespace}{entry.name}", entry


def ndjson(*envelopes):
    return b"".join(orjson.dumps(e) + b"\n" for e in envelopes)


def run_import(tmp_path, content, name="events.ndjson"):
    """Run ``manage.py import_events`` on ``content``; return (exit code, stdout, stderr)."""
    path = tmp_path / name
    path.write_bytes(content)
    return run_import_file(path)


def run_import_file(path, **options):
    """Run ``manage.py import_events path`` with ``options``; return (exit
    code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        call_command("import_events", str(path), stdout=out, stderr=err, **options)
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def import_events(tmp_path, *envelopes):
    code, out, err = run_import(tmp_path, ndjson(*envelopes))
    assert code == 0, err
    return out


def import_network(sandbox_file, orders, seed):
    """Import the simulated network ``sandbox_file`` (the conftest fixture) made."""
    call_command("import_events", str(sandbox_file(orders, seed)), stdout=io.StringIO())


def subprocess_database_url():
    """The test database as a URL, for subprocesses (socket hosts included)."""
    name = settings.DATABASES["default"]["NAME"]
    return urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{name}").geturl()


def free_port():
    """A loopback port nothing listens on now (a server about to start, or a
    refused connection)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gunicorn_serving(**env):
    """The panel under gunicorn (the production server, one worker) on
    loopback and the test database; yields ``(port, process)``. ``env`` is
    added to this process's environment for it."""
    import socket
    import subprocess
    import sys
    from contextlib import suppress

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "opspanel.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--timeout",
            "30",
            "--log-level",
            "warning",
        ],
        cwd=settings.BASE_DIR,
        env={
            **os.environ,
            "DATABASE_URL": subprocess_database_url(),
            "OPSPANEL_TESTING": "1",
            **env,
        },
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.1)
        # A first request loads the URLs and views: on a loaded machine that
        # took seconds, which a test could count as a held worker.
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        yield port, server
    finally:
        server.terminate()
        server.wait(10)


def wait_for(condition, timeout=20):
    """Poll ``condition`` until true (a worker or server in another thread is at work)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def upstream_still_says_reserved(upstream, transact_id):
    """0Pools' status API answers ``reserved`` for the trade, as it did when it was made."""
    truth = httpx.get(f"{upstream.url}/_sandbox/trades/{transact_id}").json()
    history = [step for step in truth["statusHistory"] if step["status"] == "reserved"][:1]
    truth |= {"status": "reserved", "statusHistory": history, "updatedAt": history[0]["at"]}
    httpx.post(f"{upstream.url}/_sandbox/trades/{transact_id}", json=truth).raise_for_status()


def the_beat_repolls(transact_id):
    """What ``queues.tasks.repoll_stuck_trades`` does for one stuck trade."""
    from accounts.permissions import Action
    from actions import services

    run = services.start_unattended_run(
        Action.BULK_REPOLL,
        [transact_id],
        target="1 stuck trades (scheduled)",
        reason="scheduled re-poll of trades stuck past their pool SLA",
        key=f"schedule-test-{next(_keys)}",
        params={"scheduled": True},
    )
    services.carry_out(run)
    run.refresh_from_db()
    assert (run.done, run.failed) == (1, 0)


def received(upstream, partner="ptn_acme"):
    """What the sandbox partner receiver got (the ``upstream`` fixture's), oldest first."""
    return httpx.get(f"{upstream.url}/_sandbox/received", params={"partner": partner}).json()


@contextmanager
def client_side_binding():
    """Django's client-side binding cursor on the default connection for a while."""
    from django.db.backends.postgresql.base import Cursor

    connection.ensure_connection()
    raw = connection.connection
    factory, raw.cursor_factory = raw.cursor_factory, Cursor
    try:
        yield
    finally:
        raw.cursor_factory = factory


@contextmanager
def ledger_truncate_allowed():
    """The append-only ledger's refusal of TRUNCATE lifted, for emptying a
    test database (``flush``) and nothing else."""
    # pgtrigger.ignore prefixes a parameterised statement to each query,
    # which PostgreSQL refuses with server-side binding (the app's default):
    # this binds client-side.
    with client_side_binding(), pgtrigger.ignore("records.LedgerEntry:ledger_no_truncate"):
        yield


def key_paths(value, prefix=()):
    """Every key path of a decoded envelope, nested objects and lists included."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield (*prefix, key)
            yield from key_paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield (*prefix, index)
            yield from key_paths(inner, (*prefix, index))


def plans_kept(client, url, loads=14):
    """{statement (its whitespace folded): (generic plans, custom plans)} of
    every read prepared on this connection, after ``loads`` loads of ``url``.

    psycopg prepares a statement after 5 runs on a connection (the
    settings' ``prepare_threshold``); PostgreSQL then plans it 5 times
    more before it may keep the generic plan. A statement with no generic
    plan after that is planned afresh on every load."""
    for _ in range(loads):
        assert client.get(url).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        prepared = cursor.fetchall()
    return {
        " ".join(sql.split()): (generic, custom)
        for sql, generic, custom in prepared
        if sql.lstrip().startswith(("SELECT", "WITH", "("))
    }


def numbered(sql):
    """``sql`` with its ``%s`` placeholders as ``$1, $2, ...``, for PREPARE."""
    parts = sql.split("%s")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], 1)) + parts[-1]
