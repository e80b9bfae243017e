"""Partners, their API keys and signing secrets (issue 12): the pages, the
services behind them, ``manage.py partners`` and ``POST /internal/keys/verify``."""

import io
import logging
from datetime import timedelta

import httpx
import orjson
import pytest
import time_machine
from django.core.checks import run_checks
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import Entry
from partners import apikeys, keys, services
from partners.models import ApiKey, Endpoint, Entitlement, SigningSecret
from records.models import DeliveryAttempt, Partner
from tests.conftest import PASSWORD
from tests.factories import UserFactory
from tests.helpers import received
from tests.test_permissions import PAGES, POSTS

pytestmark = pytest.mark.django_db

TOKEN = "verify-token-" + "t" * 40


@pytest.fixture(autouse=True)
def _verify_token(settings):
    settings.OPSPANEL_VERIFY_TOKENS = [TOKEN]


@pytest.fixture
def partner(db):
    partner = services.create_partner("ptn_globex", "Globex", "live", verified=True, reason="t")
    services.set_entitlement(partner, "EUR-USDT", "buy", max_per_quote="5000.00", reason="t")
    return partner


def verify(client, key, token=TOKEN, **headers):
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.post(
        "/internal/keys/verify",
        data=orjson.dumps({"key": key}),
        content_type="application/json",
        headers=headers,
    )


def issue(admin, partner, *, nonce="n1", password=PASSWORD):
    data = {"reason": "onboarding", "nonce": nonce}
    if password:
        data["sudo_password"] = password
    return admin.post(f"/partners/{partner.partner_id}/keys", data)


def shown_value(response):
    html = response.content.decode()
    start = html.index('id="secret-value">') + len('id="secret-value">')
    return html[start : html.index("</code>", start)]


def every_row_as_text():
    """Every row of every table, as PostgreSQL would dump it."""
    text = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT t::text FROM "{table}" t')  # noqa: S608 - our own table names
            text.extend(row[0] for row in cursor.fetchall())
    return "\n".join(text)


# --- the key format -------------------------------------------------------------


def test_a_key_carries_its_environment_a_random_body_and_a_checksum():
    made = {keys.generate("test") for _ in range(50)}

    assert len(made) == 50
    assert all(k.startswith("sk_test_") and len(k) == 46 and keys.parse(k) == "test" for k in made)
    assert keys.parse(keys.generate("live")) == "live"


def test_a_typo_or_a_truncated_paste_is_refused_before_any_lookup(client, partner):
    value = apikeys.issue_key(partner, reason="t").value
    typo = value[:20] + ("A" if value[20] != "A" else "B") + value[21:]
    swapped = value.replace("sk_live_", "sk_test_")

    with CaptureQueriesContext(connection) as queries:
        answers = [verify(client, k).status_code for k in (typo, value[:-1], swapped, "")]

    assert answers == [401, 401, 401, 401]
    assert not [q for q in queries.captured_queries if "partners_apikey" in q["sql"]]
    assert verify(client, value).status_code == 200


# --- verification -------------------------------------------------------------------


def test_verify_answers_the_partner_environment_status_and_entitlements(client, partner):
    value = apikeys.issue_key(partner, reason="t").value

    response = verify(client, value)

    assert response.status_code == 200
    assert response.json() == {
        "partnerId": "ptn_globex",
        "environment": "live",
        "status": "active",
        "entitlements": [
            {"poolId": "EUR-USDT", "side": "buy", "maxPerQuote": "5000.00", "maxPerDay": None}
        ],
    }
    assert "Set-Cookie" not in response.headers


def test_a_suspended_partner_s_key_answers_suspended_with_nothing_to_quote(client, partner):
    value = apikeys.issue_key(partner, reason="t").value
    services.set_status(partner, "suspended", reason="fraud review")

    body = verify(client, value).json()

    assert (body["status"], body["entitlements"]) == ("suspended", [])


def test_verify_refuses_a_user_session_and_a_wrong_machine_token(admin, partner, settings, caplog):
    value = apikeys.issue_key(partner, reason="t").value

    assert verify(admin, value, token=None).status_code == 401  # the admin's session
    wrong = TOKEN[:-1] + "x"
    with caplog.at_level("WARNING", logger="partners.machine"):
        assert verify(admin, value, token=wrong).status_code == 401
    assert "no valid machine token" in caplog.text and wrong not in caplog.text
    assert verify(admin, value, token=TOKEN + "x").status_code == 401
    settings.OPSPANEL_VERIFY_TOKENS = []
    assert verify(admin, value).status_code == 401
    settings.OPSPANEL_VERIFY_TOKENS = ["another-token-" + "z" * 40, TOKEN]
    assert verify(admin, value).status_code == 200
    # A machine has no CSRF token to send.
    assert verify(Client(enforce_csrf_checks=True), value).status_code == 200


def test_a_refusal_never_says_whether_the_key_exists_expired_or_was_revoked(client, partner):
    revoked = apikeys.issue_key(partner, reason="t")
    apikeys.revoke_key(revoked.key, reason="leak")
    expired = apikeys.issue_key(partner, reason="t")
    apikeys.roll_key(expired.key, "now", reason="t")
    unknown = keys.generate("live")

    answers = {verify(client, k).content for k in (revoked.value, expired.value, unknown)}

    assert len(answers) == 1
    assert orjson.loads(answers.pop())["error"]["code"] == "key_refused"


def test_a_rolled_key_works_until_its_expiry_and_not_a_moment_after(client, partner):
    old = apikeys.issue_key(partner, reason="t")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        new = apikeys.roll_key(old.key, "1h", reason="rotation")
    expires = start + timedelta(hours=1)

    with time_machine.travel(expires - timedelta(microseconds=1), tick=False):
        assert verify(client, old.value).status_code == 200
    with time_machine.travel(expires, tick=False):
        assert verify(client, old.value).status_code == 401
        assert verify(client, new.value).status_code == 200
    with time_machine.travel(expires + timedelta(days=30), tick=False):
        assert verify(client, old.value).status_code == 401


def test_revoke_refuses_the_key_at_once(client, partner):
    issued = apikeys.issue_key(partner, reason="t")
    assert verify(client, issued.value).status_code == 200

    apikeys.revoke_key(issued.key, reason="leaked in a ticket")

    assert verify(client, issued.value).status_code == 401


def test_last_used_is_written_at_most_once_a_minute(client, partner):
    issued = apikeys.issue_key(partner, reason="t")
    start = timezone.now()

    with time_machine.travel(start, tick=False):
        verify(client, issued.value)
    with (
        time_machine.travel(start + timedelta(seconds=59), tick=False),
        CaptureQueriesContext(connection) as queries,
    ):
        verify(client, issued.value)
    issued.key.refresh_from_db()
    assert issued.key.last_used_at == start
    assert not [q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]

    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        verify(client, issued.value)
    issued.key.refresh_from_db()
    assert issued.key.last_used_at == start + timedelta(seconds=61)


# --- keys on the page: shown once, sudo, test/live ------------------------------------


def test_a_key_is_shown_once_and_never_again(admin, partner, caplog):
    caplog.set_level(logging.DEBUG)
    response = issue(admin, partner)
    value = shown_value(response)

    assert response.status_code == 200 and keys.parse(value) == "live"
    key = ApiKey.objects.get()
    assert key.masked == f"sk_live_…{value[-4:]}" and key.digest == keys.digest(value)
    pages = [
        b"".join(admin.get(url).getvalue() for _ in [0]).decode()
        for url in ("/partners/", "/partners/ptn_globex/", "/audit/", "/audit/?format=csv")
    ]
    assert value[-4:] in pages[1]
    assert verify(admin, value).status_code == 200
    assert verify(admin, value[:-1] + "0", token="wrong").status_code == 401
    again = issue(admin, partner)  # the same form sent twice
    assert again.status_code == 409 and ApiKey.objects.count() == 1
    pages.append(again.content.decode())
    out = io.StringIO()
    call_command("partners", "show", "ptn_globex", stdout=out)
    call_command("dumpdata", "partners", "audit", "records.partner", stdout=out)
    for text in [*pages, out.getvalue(), caplog.text, every_row_as_text()]:
        assert value not in text
        assert value[8:-6] not in text  # nor its random body


def test_key_and_secret_changes_demand_the_password_and_honour_it_for_a_while(
    admin, partner, settings
):
    demanded = issue(admin, partner, password=None)
    assert demanded.status_code == 200 and b'id="sudo"' in demanded.content
    assert b'name="reason" value="onboarding"' in demanded.content  # carried along
    wrong = issue(admin, partner, password="not it")
    assert wrong.status_code == 403 and b'id="sudo-wrong"' in wrong.content
    assert ApiKey.objects.count() == 0

    assert keys.parse(shown_value(issue(admin, partner, nonce="n2"))) == "live"
    # In the window: no password asked.
    secret = admin.post(
        "/partners/ptn_globex/secrets", {"reason": "r", "nonce": "s1", "overlap": "24h"}
    )
    assert secret.content.decode().count("whsec_") == 1

    with time_machine.travel(
        timezone.now() + timedelta(seconds=settings.OPSPANEL_SUDO_SECONDS + 1)
    ):
        late = admin.post(
            f"/partners/ptn_globex/keys/{ApiKey.objects.get().pk}/revoke", {"reason": "r"}
        )
    assert b'id="sudo"' in late.content
    assert ApiKey.objects.get().revoked_at is None


def test_test_keys_only_for_test_partners_and_live_only_once_verified(admin):
    test = services.create_partner("ptn_sandbox", "", "test", reason="t")
    unverified = services.create_partner("ptn_new", "", "live", reason="t")

    assert shown_value(issue(admin, test)).startswith("sk_test_")
    refused = issue(admin, unverified, nonce="n2")
    assert refused.status_code == 400 and b"verified" in refused.content
    assert not ApiKey.objects.filter(partner=unverified).exists()
    with pytest.raises(services.Refused):
        services.update_partner(test, name="", tier="standard", verified=False, mode="live")


def test_rolling_from_the_page_shows_the_new_key_once_and_keeps_the_old_one_until_chosen(
    admin, partner, client
):
    old = apikeys.issue_key(partner, reason="t")
    admin.post(
        "/partners/ptn_globex/keys", {"reason": "x", "nonce": "z", "sudo_password": PASSWORD}
    )
    response = admin.post(
        f"/partners/ptn_globex/keys/{old.key.pk}/roll",
        {"reason": "yearly", "nonce": "roll1", "overlap": "7d"},
    )

    new = shown_value(response)
    old.key.refresh_from_db()
    assert old.key.expires_at - timezone.now() > timedelta(days=6, hours=23)
    assert verify(client, new).status_code == verify(client, old.value).status_code == 200
    actions = list(Entry.objects.filter(target="ptn_globex").values_list("action", "reason"))
    assert ("partner.key_roll", "yearly") in actions


# --- secrets ---------------------------------------------------------------------------


def test_a_signing_secret_is_absent_in_clear_from_every_table(admin, partner):
    admin.post(
        "/partners/ptn_globex/keys", {"reason": "x", "nonce": "z", "sudo_password": PASSWORD}
    )
    first = shown_value(
        admin.post("/partners/ptn_globex/secrets", {"reason": "r", "nonce": "a", "overlap": "24h"})
    )
    second = shown_value(
        admin.post("/partners/ptn_globex/secrets", {"reason": "r", "nonce": "b", "overlap": "1h"})
    )

    assert {s.secret for s in SigningSecret.objects.active()} == {first, second}
    dump = every_row_as_text()
    page = admin.get("/partners/ptn_globex/").content.decode()
    for value in (first, second):
        assert value not in dump and value[6:] not in dump and value not in page
        assert SigningSecret.objects.get(
            fingerprint=f"sha256:{__import__('hashlib').sha256(value.encode()).hexdigest()[:8]}"
        )


def test_rotation_overlaps_then_retire_now_stops_the_old_secret(partner):
    first = services.rotate_secret(partner, reason="t")
    second = services.rotate_secret(partner, overlap="7d", reason="t")
    old = SigningSecret.objects.active().get(
        fingerprint__in=[s.fingerprint for s in SigningSecret.objects.all()],
        ciphertext__isnull=False,
        retires_at__isnull=False,
    )

    assert old.secret == first
    with pytest.raises(services.Refused):
        services.retire_secret(
            SigningSecret.objects.active().get(retires_at__isnull=True), reason="t"
        )
    assert services.retire_secret(old, reason="leaked")
    assert [s.secret for s in SigningSecret.objects.active()] == [second]


def test_clear_secrets_from_before_are_encrypted_by_the_migration(transactional_db):
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("partners", "0001_initial")])
    partner = Partner.objects.create(partner_id="ptn_old")
    clear = "whsec_" + "b2xkLWNsZWFyLXNlY3JldC0wMTIzNDU2Nzg5YWI="
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO partners_signingsecret (partner_id, secret, created_at)"
            " VALUES (%s, %s, now())",
            [partner.pk, clear],
        )
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    stored = SigningSecret.objects.get()
    assert stored.secret == clear and clear not in every_row_as_text()


# --- endpoint and test event -------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8001/hook",
        "http://169.254.169.254/latest/meta-data",
        "https://user:pass@hooks.example/x",
        "ftp://hooks.example/x",
        "http://[::ffff:10.0.0.1]/x",
    ],
)
def test_the_endpoint_is_checked_for_ssrf_when_it_is_set(admin, partner, url, settings):
    settings.OPOOLS_OUTBOUND_ALLOW_PRIVATE = False

    response = admin.post(
        "/partners/ptn_globex/endpoint", {"url": url, "reason": "setup", "sudo_password": PASSWORD}
    )

    assert response.status_code == 400
    assert b"Endpoint refused" in response.content and b"user:pass" not in response.content
    assert not Endpoint.objects.exists()
    assert not Entry.objects.filter(action="partner.set_endpoint").exists()


def test_setting_the_endpoint_asks_for_the_password_again(admin, partner, upstream):
    # Replays send the partner's events, signed, wherever the endpoint says.
    url = f"{upstream.url}/partners/ptn_globex/webhooks"

    demanded = admin.post("/partners/ptn_globex/endpoint", {"url": url, "reason": "setup"})

    assert demanded.status_code == 200 and b'id="sudo"' in demanded.content
    assert not Endpoint.objects.exists()
    done = admin.post(
        "/partners/ptn_globex/endpoint", {"url": url, "reason": "setup", "sudo_password": PASSWORD}
    )
    assert done.status_code == 302
    assert Endpoint.objects.get(partner=partner).url == url


def test_a_test_event_is_a_signed_ping_recorded_as_a_delivery_attempt(admin, partner, upstream):
    admin.post(
        "/partners/ptn_globex/endpoint",
        {
            "url": f"{upstream.url}/partners/ptn_globex/webhooks",
            "reason": "setup",
            "sudo_password": PASSWORD,
        },
    )
    value = shown_value(
        admin.post(
            "/partners/ptn_globex/secrets",
            {"reason": "r", "nonce": "a", "overlap": "24h", "sudo_password": PASSWORD},
        )
    )
    httpx.post(
        f"{upstream.url}/_sandbox/partners/ptn_globex", json={"secrets": [value], "respond": 200}
    )

    response = admin.post("/partners/ptn_globex/test-event", {"reason": "check"}, follow=True)

    got = received(upstream, "ptn_globex")
    assert [(r["verified"], r["event"]["type"]) for r in got] == [(True, "ping")]
    attempt = DeliveryAttempt.objects.get(partner=partner)
    assert (attempt.event_id, attempt.outcome, attempt.response_status) == (
        got[0]["webhook_id"],
        "succeeded",
        200,
    )
    assert b"answered 200" in response.content
    assert Entry.objects.filter(action="partner.test_event", result="ok").count() == 1


# --- partners: create, edit, suspend, entitlements, the command ---------------------------


def test_an_admin_creates_edits_and_suspends_a_partner_each_change_audited(admin):
    created = admin.post(
        "/partners/new",
        {
            "partner_id": "ptn_initech",
            "name": "Initech",
            "mode": "test",
            "tier": "growth",
            "reason": "signed",
        },
    )
    assert created.status_code == 302
    admin.post(
        "/partners/ptn_initech/edit",
        {"name": "Initech Ltd", "mode": "test", "tier": "enterprise", "reason": "upgrade"},
    )
    admin.post(
        "/partners/ptn_initech/entitlements",
        {"pool_id": "EUR-USDT", "side": "sell", "max_per_day": "100", "reason": "contract"},
    )
    admin.post("/partners/ptn_initech/status", {"status": "suspended", "reason": "unpaid"})
    page = admin.get("/partners/ptn_initech/").content.decode()

    assert "Initech Ltd" in page and 'id="network-refuses"' in page and "enterprise" in page
    assert Entitlement.objects.get().max_per_day == 100
    assert list(Entry.objects.order_by("id").values_list("action", "reason")) == [
        ("partner.create", "signed"),
        ("partner.edit", "upgrade"),
        ("partner.entitlement", "contract"),
        ("partner.status", "unpaid"),
    ]
    refused = admin.post("/partners/ptn_initech/status", {"status": "active"})
    assert refused.status_code == 400 and Entry.objects.count() == 4  # a reason is required


def test_the_command_lists_shows_and_creates_through_the_same_services(partner):
    out = io.StringIO()
    call_command(
        "partners", "create", "ptn_hooli", "--mode", "test", "--reason", "pilot", stdout=out
    )
    apikeys.issue_key(partner, reason="t")
    call_command("partners", "list", stdout=out)
    call_command("partners", "show", "ptn_globex", stdout=out)

    text = out.getvalue()
    assert "created ptn_hooli" in text
    assert "ptn_hooli\ttest\tactive" in text and "ptn_globex\tlive\tactive" in text
    assert "entitled EUR-USDT buy: per quote 5000.00" in text and "key sk_live_…" in text
    assert Entry.objects.filter(action="partner.create", actor_name="cli", reason="pilot").exists()


def test_deploy_checks_refuse_the_development_encryption_key(settings):
    from partners.crypto import DEV_KEY

    settings.OPSPANEL_SECRET_KEYS = [DEV_KEY]
    assert "partners.E001" in {m.id for m in run_checks(include_deployment_checks=True)}
    settings.OPSPANEL_SECRET_KEYS = ["not-a-key"]
    assert "partners.E002" in {m.id for m in run_checks()}


ADMIN_PAGES = [url for url in PAGES if url.startswith(("/partners", "/team"))]
ADMIN_POSTS = [url for url in POSTS if url.startswith(("/partners", "/team"))]


@pytest.mark.parametrize("role", ["support", "operations"])
def test_everyone_but_an_admin_gets_403_on_every_partner_and_team_page_and_post(
    client, partner, role
):
    client.force_login(UserFactory(role=role))
    apikeys.issue_key(partner, reason="t")
    services.rotate_secret(partner, reason="t")
    key, secret = ApiKey.objects.get(), SigningSecret.objects.get()

    def real(url):
        return (
            url.replace("ptn_acme", "ptn_globex")
            .replace("keys/1", f"keys/{key.pk}")
            .replace("secrets/1", f"secrets/{secret.pk}")
        )

    gets = {url: client.get(real(url)).status_code for url in ADMIN_PAGES}
    posts = {
        url: client.post(real(url), {"reason": "r", "sudo_password": "x"}).status_code
        for url in ADMIN_POSTS
    }

    assert set(gets.values()) == set(posts.values()) == {403}
    assert len(ADMIN_PAGES) >= 5 and len(ADMIN_POSTS) >= 14
    assert Entry.objects.filter(actor__isnull=False).count() == 0
    assert ApiKey.objects.get().revoked_at is None


def test_the_partner_list_reads_in_the_same_queries_for_three_partners_or_six(
    admin, partner, django_assert_max_num_queries
):
    for n in range(2):
        apikeys.issue_key(services.create_partner(f"ptn_few_{n}", "", "test", reason="t"))
    with CaptureQueriesContext(connection) as few:
        assert admin.get("/partners/").status_code == 200
    for n in range(3):
        apikeys.issue_key(services.create_partner(f"ptn_more_{n}", "", "test", reason="t"))
    Partner.objects.create(partner_id="ptn_from_0pools")  # no profile yet: defaults

    with django_assert_max_num_queries(len(few)):
        page = admin.get("/partners/").content.decode()

    assert page.count("<tr data-partner=") == 7


def test_partner_changes_are_rate_limited_per_user(admin, partner, settings):
    settings.OPSPANEL_ACTIONS_PER_MINUTE = 1
    first = admin.post("/partners/ptn_globex/status", {"status": "suspended", "reason": "a"})
    second = admin.post("/partners/ptn_globex/status", {"status": "active", "reason": "b"})

    assert first.status_code == 302
    assert second.status_code == 429 and b"Rate limit" in second.content
    assert services.profile_of(Partner.objects.get(pk=partner.pk)).status == "suspended"


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"[]", {}, 400),
        (b'{"nokey": 1}', {}, 400),
        (b"not json", {}, 400),
        (b'{"key": 42}', {}, 401),
        (b'{"key": "' + b"x" * 2000 + b'"}', {}, 413),
        (b'{"key": "sk_live_"}', {"Content-Length": "1e3"}, 413),
    ],
)
def test_a_malformed_verification_is_a_4xx_never_a_500(client, body, headers, status):
    response = client.post(
        "/internal/keys/verify",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {TOKEN}", **headers},
    )

    assert response.status_code == status


def test_a_new_encryption_key_first_then_reencrypt_and_the_old_key_can_go(partner, settings):
    from cryptography.fernet import Fernet

    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.OPSPANEL_SECRET_KEYS = [old_key]
    value = services.rotate_secret(partner, reason="t")
    settings.OPSPANEL_SECRET_KEYS = [new_key, old_key]
    assert SigningSecret.objects.get().secret == value  # the old key still decrypts

    out = io.StringIO()
    call_command("partners", "reencrypt", stdout=out)
    settings.OPSPANEL_SECRET_KEYS = [new_key]

    assert "re-encrypted 1 signing secrets" in out.getvalue()
    assert SigningSecret.objects.get().secret == value


def test_a_partner_with_live_keys_in_use_is_not_unverified_behind_their_back(client, partner):
    issued = apikeys.issue_key(partner, reason="t")

    with pytest.raises(services.Refused, match="live keys are in use"):
        services.update_partner(
            partner, name=partner.name, tier="standard", verified=False, reason="audit"
        )

    assert services.profile_of(Partner.objects.get(pk=partner.pk)).verified
    assert verify(client, issued.value).status_code == 200
