import base64
from datetime import UTC, datetime

import orjson
import pgtrigger
import pytest
import stamina
from django.test import TransactionTestCase
from standardwebhooks.webhooks import Webhook

from accounts.services import create_user
from actions.upstream import MAX_TRIES

SECRET = "whsec_" + base64.b64encode(b"panel-test-secret-0123456789abcdef").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"panel-old-secret-0123456789abcdef!").decode()
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _test_settings(settings):
    settings.OPOOLS_WEBHOOK_SECRETS = [SECRET]
    # The real hasher costs ~0.4 s a user; tests need users, not slow hashes.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True, scope="session")
def _retries_without_waiting():
    """Status reads retry as in production, but without sleeping through the
    backoff (stamina's test mode). What a 429 asks to wait is tested apart."""
    with stamina.set_testing(True, attempts=MAX_TRIES, cap=True):
        yield


def sign(body, *, secret=SECRET, event_id=None, at=None):
    """Headers for ``body`` signed the Standard Webhooks way."""
    if event_id is None:
        event_id = orjson.loads(body)["id"]
    moment = at or datetime.now(UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(
            event_id, moment, body.decode("utf-8", "replace")
        ),
    }


def post_event(client, envelope, **sign_options):
    body = orjson.dumps(envelope)
    headers = sign(body, **sign_options)
    return client.post(
        "/webhooks/0pools",
        data=body,
        content_type="application/json",
        headers=headers,
    )


@pytest.fixture
def support_user(db):
    return create_user("sam-support", PASSWORD, "support")


@pytest.fixture
def operations_user(db):
    return create_user("olga-operations", PASSWORD, "operations")


@pytest.fixture
def admin_user(db):
    return create_user("ada-admin", PASSWORD, "admin")


def _flush_with_ledger(flush):
    """pytest-django empties the database after a transactional test with
    TRUNCATE, which the append-only ledger refuses (``test_records`` shows
    it). Lift the refusal for that clean-up only, nowhere else."""

    def teardown(self):
        with pgtrigger.ignore("records.LedgerEntry:ledger_no_truncate"):
            flush(self)

    return teardown


TransactionTestCase._fixture_teardown = _flush_with_ledger(TransactionTestCase._fixture_teardown)


@pytest.fixture(scope="session")
def worker(django_db_setup, django_db_blocker):
    """A real Celery worker, in a thread, on the configured broker (Redis in CI).

    Tests using it commit (``transactional_db``) so the worker sees their rows.
    """
    from celery.contrib.testing.worker import start_worker

    from opspanel.celery import app

    with (
        django_db_blocker.unblock(),
        start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as w,
    ):
        yield w
