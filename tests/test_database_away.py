"""PostgreSQL restarting or away (issue 15, item 3): a 503 with Retry-After in
words, never a 500; a connection the server cut is replaced, not handed out.

The real restart under load is in tests/faults/test_faults.py (make test-faults);
here the same code paths, with the server cut off by a closed port and a
terminated backend.
"""

import os
import select
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection
from django.test import Client
from psycopg_pool import ConnectionPool

from lib import database, pool
from lib.database import unavailable
from lib.pool import check_quietly
from opspanel.celery import app
from records.models import WebhookEvent
from tests import envelopes
from tests.conftest import post_event
from tests.helpers import free_port, wait_for

# These tests commit: the panel's connection is closed and reopened under them.
committing = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _tasks_in_place():
    """The webhook's task runs in the request, not on the session's worker
    thread, which would otherwise apply it while the test's tables are
    emptied after it (a deadlock with the TRUNCATE)."""
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def closed_port():
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


@contextmanager
def database_away():
    """The panel's database settings point at a closed port while inside."""
    saved = dict(connection.settings_dict)
    saved_options = dict(saved["OPTIONS"])
    connection.close()
    if connection.pool:
        connection.close_pool()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(closed_port()))
    options = connection.settings_dict["OPTIONS"] = dict(saved_options)
    if "pool" in options:
        options["pool"] = {**options["pool"], "timeout": 0.5}
    try:
        yield
    finally:
        database.forget_away()
        connection.close()
        if connection.pool:
            connection.close_pool()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved, OPTIONS=saved_options)


@committing
def test_a_webhook_while_the_database_is_away_is_a_json_503_with_retry_after():
    client = Client(raise_request_exception=False)
    envelope = envelopes.trade("reserved", transact_id="pt_live_AWAY1")

    with database_away():
        response = post_event(client, envelope)

    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert response.json()["error"].startswith("The panel cannot reach its database")
    # Back: the sender's retry is stored.
    assert post_event(client, envelope).status_code == 202
    assert WebhookEvent.objects.filter(event_id=envelope["id"]).count() == 1


@committing
def test_a_page_while_the_database_is_away_is_a_503_page_in_the_layout(support_user):
    client = Client(raise_request_exception=False)
    client.force_login(support_user)

    with database_away():
        response = client.get("/orders/")

    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    page = response.content.decode()
    assert "<title>Service Unavailable · 0Pools Ops Panel</title>" in page
    assert "cannot reach its database" in page
    assert "Traceback" not in page
    assert client.get("/orders/").status_code == 200


def plain_connection():
    """A psycopg connection of its own to the test database, outside Django's pool."""
    params = connection.get_connection_params()
    for key in ("pool", "cursor_factory", "context"):
        params.pop(key, None)
    return psycopg.connect(**params, autocommit=True)


def in_the_pool():
    """The backends of the connections idle in the panel's pool; without a
    pool, every idle backend of the test database but this one's. (The pool
    does not list its connections: ``_pool`` is its deque of idle ones.)"""
    if connection.pool:
        return [conn.info.backend_pid for conn in list(connection.pool._pool)]
    with plain_connection() as conn:
        return [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state = 'idle'"
            ).fetchall()
        ]


def terminate(pids):
    """What a PostgreSQL restart does to them: ended, and gone
    (``pg_terminate_backend`` returns before a backend has said its goodbye;
    a restart's clients come after it)."""
    with plain_connection() as killer:
        killer.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
        wait_for(
            lambda: (
                not killer.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
                ).fetchall()
            ),
            timeout=10,
        )


def connections_lost():
    """How many connections the pool found cut and replaced (none without a pool)."""
    return connection.pool.get_stats().get("connections_lost", 0) if connection.pool else 0


@committing
def test_a_connection_the_server_cut_is_not_handed_to_a_request():
    client = Client(raise_request_exception=False)
    assert post_event(client, envelopes.trade("reserved")).status_code == 202
    connection.close()  # back to the pool, which keeps it open
    lost = connections_lost()
    # Only what waits in the pool: the session's Celery worker thread shares
    # it, and a connection it holds (a task an earlier test left) is not ours.
    idle = []
    wait_for(lambda: idle.extend(in_the_pool()) or idle, timeout=10)
    terminate(idle)

    response = post_event(client, envelopes.trade("settled"))

    assert response.status_code == 202
    if connection.pool:  # it was handed a cut one first, and the check caught it
        assert connections_lost() > lost


def test_only_a_database_out_of_reach_counts_as_unavailable():
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(host="127.0.0.1", port=closed_port(), connect_timeout=2)
    assert unavailable(refused.value)

    with plain_connection() as conn:
        pid = conn.info.backend_pid
        with plain_connection() as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(psycopg.OperationalError) as shut_down:
            conn.execute("SELECT 1")
    assert unavailable(shut_down.value)  # AdminShutdown, or the cut connection

    with plain_connection() as conn:
        with pytest.raises(psycopg.Error) as bad_query:
            conn.execute("SELECT * FROM no_such_table")
        assert not unavailable(bad_query.value)
        with pytest.raises(psycopg.OperationalError) as cancelled:
            conn.execute("SET statement_timeout = 1; SELECT pg_sleep(1)")
        assert not unavailable(cancelled.value)  # 57014: a query, not the server


@committing
def test_while_the_database_is_known_away_requests_answer_without_waiting_on_the_pool():
    client = Client(raise_request_exception=False)
    with database_away():
        assert post_event(client, envelopes.trade("reserved")).status_code == 503
        pool = connection.pool
        if pool is None:
            pytest.skip("DATABASE_POOL_DISABLED: no pool to wait on")
        asked = pool.get_stats().get("requests_num", 0)
        assert asked >= 1

        webhook = post_event(client, envelopes.trade("settled"))
        page = client.get("/accounts/login/")

        # Both answered 503 at once: neither asked the pool for a connection.
        assert (webhook.status_code, page.status_code) == (503, 503)
        assert webhook["Retry-After"] == page["Retry-After"] == "2"
        assert pool.get_stats().get("requests_num", 0) == asked


# --- the pool's check: a round trip only when the server spoke --------------------


@pytest.fixture
def raw_connection():
    with plain_connection() as conn:
        yield conn


def _round_trips(monkeypatch):
    calls = []
    real = ConnectionPool.check_connection
    monkeypatch.setattr(
        ConnectionPool, "check_connection", staticmethod(lambda c: calls.append(c) or real(c))
    )
    return calls


@pytest.mark.django_db
def test_the_pools_check_is_the_quiet_one():
    connection.ensure_connection()
    if connection.pool is None:
        pytest.skip("DATABASE_POOL_DISABLED: no pool to check")

    assert connection.pool._check is check_quietly


def test_a_quiet_connection_in_use_a_moment_ago_goes_out_without_a_round_trip(
    raw_connection, monkeypatch
):
    check_quietly(raw_connection)  # handed out: new to the check, so checked
    calls = _round_trips(monkeypatch)

    check_quietly(raw_connection)

    assert calls == []


def test_a_connection_idle_for_a_while_is_checked_for_real(raw_connection, monkeypatch):
    # A NAT or firewall drops an idle flow without a word: only sending finds it.
    check_quietly(raw_connection)
    pool._handed_out[raw_connection] -= pool.RECENT_SECONDS + 1
    calls = _round_trips(monkeypatch)

    check_quietly(raw_connection)

    assert calls == [raw_connection]


def test_a_connection_the_server_spoke_on_is_checked_for_real(raw_connection, monkeypatch):
    check_quietly(raw_connection)
    raw_connection.execute("LISTEN opspanel_check")
    with psycopg.connect(raw_connection.info.dsn, autocommit=True) as other:
        other.execute("NOTIFY opspanel_check")
    select.select([raw_connection.fileno()], [], [], 5)
    calls = _round_trips(monkeypatch)

    check_quietly(raw_connection)  # a notification: alive, and said so

    assert calls == [raw_connection]


def test_a_connection_the_server_ended_fails_the_check(raw_connection):
    check_quietly(raw_connection)
    pid = raw_connection.info.backend_pid
    with psycopg.connect(raw_connection.info.dsn, autocommit=True) as killer:
        killer.execute("SELECT pg_terminate_backend(%s)", [pid])
    # What a restart's clients find: the backend's goodbye and a closed socket.
    select.select([raw_connection.fileno()], [], [], 5)

    with pytest.raises(psycopg.OperationalError):
        check_quietly(raw_connection)


def test_a_connection_on_a_descriptor_above_1023_is_checked(raw_connection):
    # select() cannot watch descriptors past FD_SETSIZE; a busy worker has them.
    spare = []
    try:
        while len(spare) < 1100 and (not spare or spare[-1] < 1100):
            spare.append(os.open(os.devnull, os.O_RDONLY))
        with psycopg.connect(raw_connection.info.dsn, autocommit=True) as high:
            assert high.fileno() > 1023
            check_quietly(high)
            check_quietly(high)
            assert high.execute("SELECT 1").fetchone() == (1,)
    finally:
        for fd in spare:
            os.close(fd)
