import socket
import threading
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

import pytest

from opspanel.celery import app
from tests.conftest import PASSWORD
from tests.test_celery_integration import broker_at, broker_unreachable

pytestmark = pytest.mark.django_db


def test_healthz_reports_database_and_broker(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_healthz_is_503_when_the_broker_is_down(client):
    with broker_unreachable():
        response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["database"] == "ok"
    assert body["broker"].startswith("down")


class Forwarder:
    """A TCP relay to the broker that can be cut off and started again on its port."""

    def __init__(self, target):
        self.target = target
        self.port = 0
        self.connections = 0
        self.sockets = []

    def start(self):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self.sockets = [listener]
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self):
        for each in self.sockets:
            with suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)
            each.close()

    def _accept(self, listener):
        while True:
            try:
                near, _ = listener.accept()
            except OSError:
                return
            far = socket.create_connection(self.target)
            self.connections += 1
            self.sockets += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)


@contextmanager
def broker_through(relay):
    url = urlsplit(app.conf.broker_url)
    relay.target = (url.hostname, url.port or 6379)
    relay.start()
    try:
        with broker_at(url._replace(netloc=f"127.0.0.1:{relay.port}").geturl()):
            yield relay
    finally:
        relay.stop()


@pytest.mark.skipif(
    not app.conf.broker_url.startswith("redis://"), reason="kombu's Redis transport only"
)
def test_healthz_keeps_its_broker_connection_and_still_asks_the_broker_each_time(client):
    with broker_through(Forwarder(None)) as relay:
        assert client.get("/healthz").status_code == 200
        connected = relay.connections
        assert [client.get("/healthz").status_code for _ in range(3)] == [200] * 3
        assert relay.connections == connected  # no new connection per check

        relay.stop()  # the broker goes away (its connections cut)
        down = client.get("/healthz")
        relay.start()  # and comes back on the same address
        back = client.get("/healthz")

    assert down.status_code == 503
    assert down.json()["broker"].startswith("down")
    assert back.status_code == 200


def test_every_page_asks_for_sign_in(client):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_login_page_renders(client):
    response = client.get("/accounts/login/")

    assert response.status_code == 200
    assert b"Sign in" in response.content


@pytest.mark.parametrize("role", ["support", "operations", "admin"])
def test_each_role_signs_in_and_sees_the_panel(client, role, request):
    user = request.getfixturevalue(f"{role}_user")

    response = client.post(
        "/accounts/login/", {"username": user.username, "password": PASSWORD}, follow=True
    )

    assert response.status_code == 200
    assert response.context["user"] == user
    assert b"Trades by status" in response.content


def test_logout_is_a_post(client, support_user):
    client.force_login(support_user)

    assert client.get("/accounts/logout/").status_code == 405
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_createuser_command_reads_the_password_from_the_environment(monkeypatch):
    from django.contrib.auth import authenticate
    from django.core.management import call_command

    monkeypatch.setenv("OPSPANEL_PASSWORD", PASSWORD)
    call_command("createuser", "nina", "--role", "operations")

    user = authenticate(username="nina", password=PASSWORD)
    assert user is not None
    assert list(user.groups.values_list("name", flat=True)) == ["operations"]


def test_repeated_wrong_passwords_lock_the_sign_in_out_with_429(client, support_user, settings):
    settings.AXES_ENABLED = True
    wrong = {"username": support_user.username, "password": "not it"}

    codes = [client.post("/accounts/login/", wrong).status_code for _ in range(5)]
    locked = client.post(
        "/accounts/login/", {"username": support_user.username, "password": PASSWORD}
    )

    assert codes[:4] == [200, 200, 200, 200]
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


def test_pages_carry_a_strict_content_security_policy(client, support_user):
    client.force_login(support_user)

    policy = client.get("/")["Content-Security-Policy"]

    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert "frame-ancestors 'none'" in policy


def test_the_policy_header_is_written_once_per_process_not_built_per_response(
    client, support_user, monkeypatch
):
    """lib.middleware.ContentSecurityPolicyMiddleware: django-csp's own
    middleware built the same string from the settings on every response."""
    import csp.middleware
    from csp.utils import build_policy

    built = []
    monkeypatch.setattr(
        csp.middleware, "build_policy", lambda **kw: built.append(kw) or build_policy(**kw)
    )
    client.force_login(support_user)

    policies = {client.get(url)["Content-Security-Policy"] for url in ("/", "/", "/search")}

    assert policies == {build_policy()}
    assert built == []


def test_a_changed_policy_setting_is_written_at_the_next_response(client, settings):
    client.get("/accounts/login/")
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'none'"]}}

    assert client.get("/accounts/login/")["Content-Security-Policy"] == "default-src 'none'"


def test_htmx_polling_does_not_keep_an_idle_session_alive(client, support_user, time_machine):
    from accounts.models import Session

    time_machine.move_to("2026-11-25 12:00:00Z", tick=False)
    client.force_login(support_user)
    client.get("/")
    key = client.session.session_key

    def expiry():
        return Session.objects.get(session_key=key).expire_date

    first = expiry()
    time_machine.move_to("2026-11-25 12:10:00Z", tick=False)
    client.get("/", headers={"HX-Request": "true", "HX-Trigger": "timeline-live"})
    assert expiry() == first  # a poll is not activity

    client.get("/")
    assert expiry() > first  # a person's request is


def test_staying_signed_in_writes_the_session_at_most_once_a_minute(
    client, support_user, time_machine
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    time_machine.move_to("2026-11-25 12:00:00Z", tick=False)
    client.force_login(support_user)
    client.get("/")

    def session_writes(url):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        return [
            q["sql"]
            for q in queries
            if q["sql"].startswith("UPDATE") and "accounts_session" in q["sql"]
        ]

    time_machine.move_to("2026-11-25 12:00:59Z", tick=False)
    assert session_writes("/") == []
    assert session_writes("/orders/") == []

    time_machine.move_to("2026-11-25 12:01:00Z", tick=False)
    assert len(session_writes("/orders/")) == 1
    assert session_writes("/") == []


def test_nothing_a_signed_in_person_sees_is_cached(client, support_user):
    client.force_login(support_user)

    for url in ("/", "/orders/", "/orders/?format=csv", "/audit/?format=csv"):
        cache_control = client.get(url)["Cache-Control"]
        assert "no-store" in cache_control and "private" in cache_control, url
