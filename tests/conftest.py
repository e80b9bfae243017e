import base64
import io
import os
from datetime import UTC, datetime

import httpx
import orjson
import pytest
import stamina
from django.core.management import call_command
from django.test import TransactionTestCase
from standardwebhooks.webhooks import Webhook

from accounts.services import create_user
from actions.upstream import MAX_TRIES
from partners.services import rotate_secret, set_endpoint
from records.models import Partner
from tests.helpers import import_network, ledger_truncate_allowed

# The fault suite (tests/faults) starts its own servers and takes minutes:
# only `make test-faults` (OPSPANEL_FAULTS=1) collects it, never `make test`.
if not os.environ.get("OPSPANEL_FAULTS"):
    collect_ignore = ["faults"]

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


@pytest.fixture
def support(client, support_user):
    """The test client, signed in as the support agent."""
    client.force_login(support_user)
    return client


@pytest.fixture
def ops(client, operations_user):
    """The test client, signed in as operations."""
    client.force_login(operations_user)
    return client


@pytest.fixture
def admin(client, admin_user):
    """The test client, signed in as an admin."""
    client.force_login(admin_user)
    return client


def _flush_with_ledger(flush):
    """pytest-django empties the database after a transactional test with
    TRUNCATE, which the append-only ledger refuses (``test_records`` shows
    it). Lift the refusal for that clean-up only, nowhere else."""

    def teardown(self):
        with ledger_truncate_allowed():
            flush(self)

    return teardown


TransactionTestCase._fixture_teardown = _flush_with_ledger(TransactionTestCase._fixture_teardown)


@pytest.fixture(scope="session")
def _worker_thread(django_db_setup, django_db_blocker):
    """A real Celery worker, in a thread, on the configured broker (Redis in CI),
    started once for the whole run."""
    from celery.contrib.testing.worker import start_worker

    from opspanel.celery import app

    app.control.purge()  # what an earlier run left in this process's queue
    with (
        django_db_blocker.unblock(),
        start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as w,
    ):
        yield w


@pytest.fixture
def worker(_worker_thread, transactional_db):
    """The worker, for a test that commits (``transactional_db``) so that the
    worker sees its rows. Only such tests pay for emptying the tables after."""
    return _worker_thread


# --- the sandbox network, generated once per run -----------------------------


@pytest.fixture(scope="session")
def sandbox_file(tmp_path_factory):
    """``sandbox_file(orders, seed)``: the NDJSON of a simulated network, made
    once per run and shared by every test that imports the same one."""
    made = {}

    def make(orders, seed):
        if (orders, seed) not in made:
            path = tmp_path_factory.mktemp("sandbox") / f"network-{orders}-{seed}.ndjson.gz"
            call_command(
                "sandbox",
                "generate",
                "--orders",
                str(orders),
                "--seed",
                str(seed),
                "--out",
                str(path),
            )
            made[orders, seed] = path
        return made[orders, seed]

    return make


@pytest.fixture
def network(sandbox_file):
    """The scenario network (every named scenario and 20 random orders), imported."""
    import_network(sandbox_file, 20, 5)


@pytest.fixture(scope="session")
def sandbox_server():
    """The simulated 0Pools upstream on loopback, over the same network as ``network``."""
    from sandbox.server import start

    server = start(port=0, orders=20, seed=5, log=io.StringIO())
    yield server
    server.stop()


@pytest.fixture
def upstream(sandbox_server, settings):
    """The upstream, reset, with the panel pointed at it (status reads and replays)."""
    from sandbox.server import DEFAULT_API_KEY

    settings.OPOOLS_API_URL = sandbox_server.url
    settings.OPOOLS_API_KEY = DEFAULT_API_KEY
    settings.OPOOLS_API_TIMEOUT = 1.0
    settings.OPOOLS_OUTBOUND_ALLOW_PRIVATE = True
    sandbox_server.state.reset()
    return sandbox_server


@pytest.fixture
def receiving_partner(upstream):
    """ptn_acme's endpoint is the sandbox receiver, which knows its secret."""
    partner = Partner.objects.get(partner_id="ptn_acme")
    set_endpoint(partner, f"{upstream.url}/partners/ptn_acme/webhooks")
    secret = rotate_secret(partner)
    httpx.post(
        f"{upstream.url}/_sandbox/partners/ptn_acme", json={"secrets": [secret], "respond": 200}
    )
    return partner


@pytest.fixture(scope="session")
def exceptions_file(tmp_path_factory):
    """The named scenarios and one order per reconciliation exception kind, no random order."""
    path = tmp_path_factory.mktemp("recon") / "exceptions.ndjson"
    call_command(
        "sandbox", "generate", "--orders", "0", "--seed", "7", "--exceptions", "all",
        "--out", str(path), stdout=io.StringIO(),
    )  # fmt: skip
    return path


@pytest.fixture
def exceptions_network(exceptions_file):
    """``exceptions_file`` imported: every order plays on 2026-11-20 (UTC)."""
    call_command("import_events", str(exceptions_file), stdout=io.StringIO())
