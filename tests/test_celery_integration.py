"""The webhook path on a real broker with a real Celery worker.

The broker is whatever CELERY_BROKER_URL names (Redis in CI; on a laptop
the SQLAlchemy transport on the embedded PostgreSQL). The worker runs in a
thread of this process against the same test database, so these tests
commit (transactional_db).
"""

from contextlib import contextmanager

import pytest

from ingest import tasks
from lib.tasks import broker_known_down, broker_recovered
from opspanel.celery import app
from records.models import Trade, WebhookEvent
from tests import envelopes
from tests.conftest import SECRET, post_event, sign
from tests.helpers import gunicorn_serving, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _set_broker(url, write_url):
    app.conf.broker_url, app.conf.broker_write_url = url, write_url
    app._pool = None
    app.amqp._producer_pool = None


@contextmanager
def broker_at(url):
    """Point the app's broker at ``url`` for the block, then back (its
    connection pools made afresh each way)."""
    saved = app.conf.broker_url, app.conf.broker_write_url
    _set_broker(url, url)
    try:
        yield
    finally:
        _set_broker(*saved)
        broker_recovered()  # the next test's sends are not skipped


@contextmanager
def broker_unreachable():
    """Point the app at a port where no broker listens (the broker is "down")."""
    with broker_at("redis://127.0.0.1:9/0"):
        yield


@pytest.fixture
def batches(monkeypatch, settings):
    """The webhook's batches made afresh for the test (nothing an earlier
    test added), gathering until flushed (a linger that does not end here)."""
    from lib.tasks import Batches

    settings.OPOOLS_WEBHOOK_LINGER_SECONDS = 60
    fresh = Batches(tasks.process_events, linger=lambda: settings.OPOOLS_WEBHOOK_LINGER_SECONDS)
    monkeypatch.setattr(tasks, "apply_batches", fresh)
    return fresh


def test_a_webhook_event_is_applied_by_the_worker(client, worker):
    envelope = envelopes.trade("reserved", transact_id="pt_live_WORKER1")

    response = post_event(client, envelope)

    assert response.status_code == 202
    assert wait_for(lambda: WebhookEvent.objects.get(event_id=envelope["id"]).state == "processed")
    assert Trade.objects.get(transact_id="pt_live_WORKER1").status == "reserved"


def test_with_the_broker_down_the_webhook_still_answers_and_the_sweep_applies_it(
    client, worker, settings, batches
):
    envelope = envelopes.trade("settled", transact_id="pt_live_SWEPT1")

    with broker_unreachable():
        response = post_event(client, envelope)
        assert batches.flush() == 1  # its send, to the broker that is away
        assert broker_known_down()

    assert response.status_code == 202
    event = WebhookEvent.objects.get(event_id=envelope["id"])
    assert event.state == "pending"

    settings.OPOOLS_SWEEP_GRACE_SECONDS = 0
    tasks.sweep_pending_events.delay()

    assert wait_for(lambda: WebhookEvent.objects.get(pk=event.pk).state == "processed")
    assert Trade.objects.get(transact_id="pt_live_SWEPT1").status == "settled"


def test_an_event_handled_twice_is_applied_once(client, worker):
    first = envelopes.trade("reserved", transact_id="pt_live_TWICE1")
    post_event(client, first)
    event = WebhookEvent.objects.get(event_id=first["id"])
    assert wait_for(lambda: WebhookEvent.objects.get(pk=event.pk).state == "processed")

    # A redelivered task message and a sweep both find it done.
    tasks.process_event.delay(event.pk)
    tasks.sweep_pending_events.delay()
    late = envelopes.trade("reserved", transact_id="pt_live_TWICE1")  # new id, same status
    post_event(client, late)
    assert wait_for(lambda: WebhookEvent.objects.get(event_id=late["id"]).state == "processed")

    trade = Trade.objects.get(transact_id="pt_live_TWICE1")
    assert trade.status_changes.count() == 1
    assert WebhookEvent.objects.get(pk=event.pk).attempts == 1


@contextmanager
def broker_on_loopback(*, holds):
    """A "broker" on loopback that accepts every connection, then closes it
    at once (``holds=False``: a Redis going away) or holds it open and never
    answers (``holds=True``: a Redis gone in a failover, or a NAT entry
    dropped: the socket stays open and nothing comes back); yields the
    connections it got."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            if not holds:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    with broker_at(f"redis://127.0.0.1:{port}/0"):
        broker_recovered()
        try:
            yield accepted
        finally:
            listener.close()
            for conn in accepted:
                conn.close()  # a send still waiting on one gets its EOF


def test_with_the_broker_down_a_webhook_tries_it_once_then_not_at_all_for_a_while(client, batches):
    # Issue 15 item 4: each webhook used to retry the publish (~0.9 s) while
    # the broker was down. Counted here as connections the broker got, with
    # each event sent alone (flushed at once).
    first, second, third = (envelopes.trade("reserved") for _ in range(3))

    def post_and_send(envelope):
        response = post_event(client, envelope)
        assert batches.flush() == 1
        return response

    with broker_on_loopback(holds=False) as connections:
        assert post_and_send(first).status_code == 202
        after_first = len(connections)
        assert post_and_send(second).status_code == 202
        assert post_and_send(third).status_code == 202
        after_three = len(connections)

    # One publish, no retry policy on top of the client's own reconnects...
    assert 1 <= after_first <= 3
    # ...and the next requests do not try a broker known to be down.
    assert after_three == after_first
    assert WebhookEvent.objects.filter(state="pending").count() == 3


def test_a_send_that_fails_for_a_bug_is_an_error_and_does_not_pause_other_sends(caplog):
    # Wrong arguments are a bug, not the broker being away: other sends go on.
    from lib.tasks import broker_known_down, send_on_commit

    broker_recovered()
    with caplog.at_level("WARNING", logger="lib.tasks"):
        send_on_commit(tasks.process_event, 1, "one too many")

    assert not broker_known_down()
    assert [r.levelname for r in caplog.records if r.name == "lib.tasks"] == ["ERROR"]
    assert "not a broker problem" in caplog.text


redis_broker_only = pytest.mark.skipif(
    not app.conf.broker_url.startswith("redis://"), reason="kombu's Redis transport only"
)


@redis_broker_only
def test_a_broker_that_stops_answering_holds_a_send_seconds_not_forever(client, batches, settings):
    # A publish waited on a silent broker forever, and with it the thread
    # that sends this process's batches: every later webhook's event would
    # have waited for the sweep. The settings bound a command's wait; here
    # a shorter bound than production's 5 s keeps the test quick.
    import threading
    import time

    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    assert options.get("socket_timeout")
    envelope = envelopes.trade("reserved", transact_id="pt_live_SILENT1")

    app.conf.broker_transport_options = {**options, "socket_timeout": 0.5}
    try:
        with broker_on_loopback(holds=True) as held:
            response = post_event(client, envelope)
            flushed = []
            sender = threading.Thread(target=lambda: flushed.append(batches.flush()), daemon=True)
            started = time.monotonic()
            sender.start()
            sender.join(timeout=15)
            took = time.monotonic() - started
            assert not sender.is_alive(), "the send still waits on a broker that does not answer"
            assert held  # it did reach the broker
            assert broker_known_down()  # later sends skip it for a while
    finally:
        app.conf.broker_transport_options = options

    assert response.status_code == 202
    assert flushed == [1]
    assert took < 5  # two tries (a connect's check and its one retry), 0.5 s each
    assert WebhookEvent.objects.get(event_id=envelope["id"]).state == "pending"  # for the sweep


@redis_broker_only
def test_publishing_reuses_the_channels_redis_client(client, worker, monkeypatch, batches):
    """lib/broker.py: kombu built a new Redis client for every publish."""
    import threading

    import redis

    built = []
    init = redis.Redis.__init__

    def counting(self, *args, **kwargs):
        # The publishing threads: this one (flush) and the batches' own.
        if threading.current_thread() is threading.main_thread() or (
            threading.current_thread().name.startswith("batches of")
        ):
            built.append(self)
        init(self, *args, **kwargs)

    def post_and_send(envelope):
        response = post_event(client, envelope)
        assert batches.flush() == 1  # each event sent alone
        return response.status_code

    monkeypatch.setattr(redis.Redis, "__init__", counting)
    sent = [envelopes.trade("reserved", transact_id=f"pt_live_REUSE{n}") for n in range(4)]
    assert post_and_send(sent[0]) == 202  # the channel's own client
    built.clear()

    assert [post_and_send(envelope) for envelope in sent[1:]] == [202] * 3
    assert built == []
    assert wait_for(lambda: WebhookEvent.objects.filter(state="processed").count() == len(sent))


def test_webhook_events_stored_close_together_go_to_the_worker_as_one_task(client, worker, batches):
    """Issue 14: a publish for each event cost the webhook more CPU than
    everything else it does; a web process now sends what it stored within
    the linger as one ``process_events``."""
    from celery.signals import task_prerun

    ran = []

    def count(sender=None, args=(), **extra):
        if sender.name == tasks.process_events.name:
            ran.append(list(args[0]))

    task_prerun.connect(count, weak=False)
    try:
        sent = [envelopes.trade("reserved", transact_id=f"pt_live_BATCH{n}") for n in range(12)]
        assert [post_event(client, envelope).status_code for envelope in sent] == [202] * 12
        assert not WebhookEvent.objects.filter(state="processed").exists()  # none sent yet

        assert batches.flush() == 12
        assert wait_for(lambda: WebhookEvent.objects.filter(state="processed").count() == 12)
    finally:
        task_prerun.disconnect(count)

    stored = list(WebhookEvent.objects.order_by("pk").values_list("pk", flat=True))
    assert [pks for pks in ran if set(pks) & set(stored)] == [stored]
    assert sorted(Trade.objects.values_list("transact_id", flat=True)) == sorted(
        f"pt_live_BATCH{n}" for n in range(12)
    )


def test_the_batch_is_sent_when_the_linger_ends(client, worker, settings, batches):
    settings.OPOOLS_WEBHOOK_LINGER_SECONDS = 0.05
    envelope = envelopes.trade("reserved", transact_id="pt_live_LINGER1")

    assert post_event(client, envelope).status_code == 202

    assert wait_for(lambda: WebhookEvent.objects.get(event_id=envelope["id"]).state == "processed")
    assert batches.flush() == 0  # the thread had sent it


def test_a_web_process_that_stops_sends_what_it_gathered(worker):
    """gunicorn stopping a worker (a deploy, a restart) does not leave its
    gathered events to the sweep: they are sent as it exits."""
    import httpx
    import orjson

    envelope = envelopes.trade("reserved", transact_id="pt_live_EXIT1")
    body = orjson.dumps(envelope)
    with gunicorn_serving(
        OPOOLS_WEBHOOK_SECRETS=SECRET,
        OPOOLS_WEBHOOK_LINGER_SECONDS="60",
        CELERY_BROKER_URL=app.conf.broker_url,  # the worker's, whatever the default
    ) as (port, server):
        response = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/0pools",
            content=body,
            headers={**sign(body), "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 202
        assert WebhookEvent.objects.get(event_id=envelope["id"]).state == "pending"

        server.terminate()  # SIGTERM: gunicorn's graceful stop
        assert server.wait(20) == 0

    assert wait_for(lambda: WebhookEvent.objects.get(event_id=envelope["id"]).state == "processed")
