"""POST /webhooks/0pools: every answer the issue names, and nothing stored on refusal."""

import json
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from opspanel.celery import app
from records.models import RejectedDelivery, Trade, WebhookEvent
from tests import envelopes
from tests.conftest import OLD_SECRET, SECRET, post_event, sign

pytestmark = pytest.mark.django_db


@pytest.fixture
def tasks_run(django_capture_on_commit_callbacks):
    """``with tasks_run():`` runs the tasks sent on commit inside the block, in this
    thread (the real-broker path is in test_celery_integration)."""

    @contextmanager
    def run():
        app.conf.task_always_eager = True
        try:
            with django_capture_on_commit_callbacks(execute=True) as callbacks:
                yield callbacks
        finally:
            app.conf.task_always_eager = False

    return run


def test_valid_event_is_stored_and_answered_202(client, tasks_run):
    envelope = envelopes.trade("reserved")

    with tasks_run():
        response = post_event(client, envelope)

    assert response.status_code == 202
    assert response.json() == {"id": envelope["id"], "duplicate": False}
    event = WebhookEvent.objects.get(event_id=envelope["id"])
    assert event.source == "webhook"
    assert event.verified_with.startswith("#1 sha256:")
    assert event.state == "processed"
    assert Trade.objects.get(transact_id="pt_live_9A2").status == "reserved"


def test_event_is_stored_before_the_answer_and_processing_is_left_to_the_task(client):
    # No on-commit execution here: the task is never sent, the event waits.
    envelope = envelopes.trade("reserved")

    assert post_event(client, envelope).status_code == 202

    event = WebhookEvent.objects.get(event_id=envelope["id"])
    assert event.state == "pending"
    assert not Trade.objects.exists()


def test_duplicate_event_answers_200_and_only_bumps_the_count(client, tasks_run):
    envelope = envelopes.trade("reserved")
    changed = {**envelope, "data": {**envelope["data"], "status": "reserved", "rate": "9.9"}}

    with tasks_run() as sent:
        post_event(client, envelope)
        response = post_event(client, changed)

    assert response.status_code == 200
    assert response.json() == {"id": envelope["id"], "duplicate": True}
    event = WebhookEvent.objects.get(event_id=envelope["id"])
    assert event.duplicate_count == 1
    assert event.payload["data"]["rate"] == "1.0731"
    assert len(sent) == 1  # the duplicate sends no task


def test_bad_signature_is_401_and_stores_no_event(client):
    envelope = envelopes.trade("reserved")
    wrong = "whsec_" + "QUJD" * 8

    response = post_event(client, envelope, secret=wrong)

    assert response.status_code == 401
    assert "no signature matches" in response.json()["error"]
    assert not WebhookEvent.objects.exists()
    rejected = RejectedDelivery.objects.get()
    assert rejected.status_code == 401
    assert rejected.webhook_id == envelope["id"]
    assert rejected.body_size == len(orjson.dumps(envelope))
    assert len(rejected.body_sha256) == 64


@pytest.mark.parametrize(
    "replace",
    [
        {"webhook-id": "", "webhook-timestamp": "", "webhook-signature": ""},
        {"webhook-signature": "garbage"},
        {"webhook-signature": "v1,%%%"},
        {"webhook-timestamp": "not-a-number"},
        {"webhook-timestamp": "nan"},
        {"webhook-timestamp": "1e400"},
    ],
    ids=["missing", "no-comma", "bad-base64", "word-time", "nan-time", "huge-time"],
)
def test_malformed_signature_headers_are_401_never_500(client, replace):
    body = orjson.dumps(envelopes.trade("reserved"))
    headers = {name: value for name, value in {**sign(body), **replace}.items() if value}

    response = client.post(
        "/webhooks/0pools", body, content_type="application/json", headers=headers
    )

    assert response.status_code == 401
    assert response.json()["error"]
    assert not WebhookEvent.objects.exists()


def test_body_that_is_not_utf8_is_401(client):
    body = b'{"id": "evt_abcd1", "x": "\xff\xfe"}'

    response = client.post(
        "/webhooks/0pools",
        body,
        content_type="application/json",
        headers=sign(body, event_id="evt_abcd1"),
    )

    assert response.status_code == 401
    assert response.json() == {"error": "body is not UTF-8"}


@pytest.mark.parametrize("minutes", [-6, 6])
def test_timestamp_outside_five_minutes_is_401(client, minutes):
    envelope = envelopes.trade("reserved")

    response = post_event(client, envelope, at=datetime.now(UTC) + timedelta(minutes=minutes))

    assert response.status_code == 401
    assert "tolerance" in response.json()["error"]
    assert not WebhookEvent.objects.exists()


def test_timestamp_inside_tolerance_is_accepted(client):
    envelope = envelopes.trade("reserved")

    response = post_event(client, envelope, at=datetime.now(UTC) - timedelta(minutes=4))

    assert response.status_code == 202


def test_both_secrets_verify_during_rotation_and_the_event_records_which(client, settings):
    settings.OPOOLS_WEBHOOK_SECRETS = [SECRET, OLD_SECRET]
    signed_new = envelopes.trade("reserved")
    signed_old = envelopes.trade("settled")

    assert post_event(client, signed_new, secret=SECRET).status_code == 202
    assert post_event(client, signed_old, secret=OLD_SECRET).status_code == 202

    assert WebhookEvent.objects.get(event_id=signed_new["id"]).verified_with.startswith("#1 ")
    assert WebhookEvent.objects.get(event_id=signed_old["id"]).verified_with.startswith("#2 ")


def test_a_retired_secret_no_longer_verifies(client, settings):
    settings.OPOOLS_WEBHOOK_SECRETS = [SECRET]

    response = post_event(client, envelopes.trade("reserved"), secret=OLD_SECRET)

    assert response.status_code == 401


def test_several_signatures_in_one_header_any_match_passes(client):
    envelope = envelopes.trade("reserved")
    body = orjson.dumps(envelope)
    headers = sign(body)
    other = sign(body, secret=OLD_SECRET)["webhook-signature"]
    headers["webhook-signature"] = f"{other} {headers['webhook-signature']}"

    response = client.post(
        "/webhooks/0pools", body, content_type="application/json", headers=headers
    )

    assert response.status_code == 202


def test_body_that_is_not_json_is_400(client):
    body = b"{not json"
    headers = sign(body, event_id="evt_abcd1")

    response = client.post(
        "/webhooks/0pools", body, content_type="application/json", headers=headers
    )

    assert response.status_code == 400
    assert response.json() == {"error": "body is not valid JSON"}
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.pop("type"), "envelope.type: is required"),
        (lambda e: e.update(type="trade.exploded"), "envelope.type: expected one of"),
        (lambda e: e["data"].update(status="failed"), "data.status: trade.reserved carries"),
        (
            lambda e: e["data"]["amount"].update(value=100.0),
            "data.amount.value: expected a decimal",
        ),
        (lambda e: e["data"].update(transactId="pt_test_9A2"), "a test id in a live"),
        (lambda e: e["data"].update(createdAt="yesterday"), "data.createdAt: expected an RFC 3339"),
    ],
    ids=["no-type", "unknown-type", "status-mismatch", "float-amount", "test-in-live", "bad-time"],
)
def test_envelope_that_breaks_the_contract_is_400_with_a_reason(client, mutate, reason):
    envelope = envelopes.trade("reserved")
    mutate(envelope)

    response = post_event(client, envelope)

    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert not WebhookEvent.objects.exists()


def test_webhook_id_must_equal_the_envelope_id(client):
    envelope = envelopes.trade("reserved")

    response = post_event(client, envelope, event_id="evt_someother")

    assert response.status_code == 400
    assert "webhook-id" in response.json()["error"]


def test_body_over_256_kib_is_413_before_anything_is_read(client):
    body = b"{" + b" " * (256 * 1024) + b"}"

    response = client.post(
        "/webhooks/0pools",
        body,
        content_type="application/json",
        headers=sign(body, event_id="evt_big1"),
    )

    assert response.status_code == 413
    assert not WebhookEvent.objects.exists()
    assert RejectedDelivery.objects.get().status_code == 413


def test_error_answers_never_echo_unknown_fields(client):
    envelope = envelopes.trade("reserved")
    envelope["data"]["venue"] = "VENUE-binance-7"
    envelope["data"]["amount"]["value"] = "not money"

    response = post_event(client, envelope)

    assert response.status_code == 400
    assert b"VENUE" not in response.content
    assert b"venue" not in response.content


def test_webhook_needs_no_session_and_no_csrf_token(client):
    client.handler.enforce_csrf_checks = True

    response = post_event(client, envelopes.trade("reserved"))

    assert response.status_code == 202
    assert "sessionid" not in response.cookies


def test_a_signed_in_browsers_cookie_costs_the_webhook_no_session_or_user_read(
    client, support_user, django_assert_num_queries
):
    """lib.middleware.MachineEndpointsMiddleware: the page middleware read the
    session and the user of any cookie sent (to decide on Cache-Control)."""
    client.force_login(support_user)

    # The event's INSERT goes to psycopg itself (ingest/sql.py), unseen here:
    # any query Django sees would be the session's or the user's.
    with django_assert_num_queries(0):
        response = post_event(client, envelopes.trade("reserved"))

    assert response.status_code == 202


def test_machine_answers_keep_the_security_headers_not_the_pages(client):
    response = post_event(client, envelopes.trade("reserved"))

    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Length"] == str(len(response.content))
    # A JSON answer to a sender is no page to frame or to give a script policy.
    assert "Content-Security-Policy" not in response
    assert "X-Frame-Options" not in response


def test_get_is_405(client):
    assert client.get("/webhooks/0pools").status_code == 405


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
trade_fields = st.sampled_from(sorted(envelopes.trade("reserved")["data"]))


def _dumps(value):
    return json.dumps(value).encode()


@hsettings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        json_values.map(_dumps),
        # A valid envelope with one data field replaced by anything.
        st.tuples(trade_fields, json_values).map(
            lambda change: _dumps(
                (lambda e: e["data"].update({change[0]: change[1]}) or e)(
                    envelopes.trade("reserved")
                )
            )
        ),
    )
)
def test_no_signed_body_gets_a_500(client, body):
    event_id = "evt_fuzz1"
    with suppress(ValueError, TypeError, KeyError):
        event_id = json.loads(body)["id"]

    response = client.post(
        "/webhooks/0pools",
        body,
        content_type="application/json",
        headers=sign(body, event_id=event_id),
    )

    assert response.status_code in (200, 202, 400, 401, 411)


def test_deeply_nested_unknown_fields_are_dropped_not_a_500(client, tasks_run):
    envelope = envelopes.trade("reserved")
    envelope["data"]["routing"] = "DEEP"
    # 900 levels (the JSON parser takes up to 1024), written out by hand:
    # Python's own encoders would refuse to nest that deep.
    deep = b'{"x":' * 900 + b'"VENUE-deep"' + b"}" * 900
    body = orjson.dumps(envelope).replace(b'"DEEP"', deep)

    with tasks_run():
        response = client.post(
            "/webhooks/0pools", body, content_type="application/json", headers=sign(body)
        )

    assert response.status_code == 202
    event = WebhookEvent.objects.get(event_id=envelope["id"])
    assert event.dropped_keys == 901
    assert "VENUE" not in str(event.payload)


def test_a_body_without_content_length_is_411(client):
    body = orjson.dumps(envelopes.trade("reserved"))

    response = client.post(
        "/webhooks/0pools",
        body,
        content_type="application/json",
        headers=sign(body),
        CONTENT_LENGTH="",
    )

    assert response.status_code == 411
    assert not WebhookEvent.objects.exists()


def test_refusals_are_recorded_up_to_a_cap_per_sender(client, settings):
    settings.OPOOLS_REJECTED_PER_MINUTE = 2
    wrong = "whsec_" + "QUJD" * 8

    codes = [
        post_event(client, envelopes.trade("reserved"), secret=wrong).status_code for _ in range(4)
    ]

    assert codes == [401, 401, 401, 401]
    assert RejectedDelivery.objects.count() == 2


# --- times are RFC 3339 UTC, strictly, and stored in one spelling ---------------


@pytest.mark.parametrize(
    "at",
    [
        "2026-06-28\x0020:15:03Z",  # a NUL for the T: PostgreSQL cannot store it
        "2026-06-28 20:15:03Z",
        "2026-W26-7T20:15:03Z",
        "2026-06-28T20:15:03+00:00:00",
        "2026-06-28T20:15:03+02:00",
        "2026-06-28T20:15:03",
        "20260628T201503Z",
        "9999-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
    ],
)
def test_a_time_that_is_not_rfc3339_utc_is_400_and_nothing_is_stored(client, at):
    response = post_event(client, envelopes.trade("reserved", at=at))

    assert response.status_code == 400
    assert "expected an RFC 3339 UTC time" in response.json()["error"]
    assert not WebhookEvent.objects.exists()


def test_an_accepted_time_is_stored_and_replayed_in_one_spelling(client):
    envelope = envelopes.trade("reserved", at="2026-06-28t20:15:03.1234567+00:00")

    assert post_event(client, envelope).status_code == 202

    stored = WebhookEvent.objects.get().payload
    assert stored["data"]["statusHistory"] == [
        {"status": "reserved", "at": "2026-06-28T20:15:03.123456Z"}
    ]


def test_one_malformed_signature_does_not_void_a_valid_one_beside_it(client):
    body = orjson.dumps(envelopes.trade("reserved"))
    headers = sign(body)
    for junk in ("garbage", "v1,%%%", "v2,abc", "v1,"):
        headers_with_junk = {
            **headers,
            "webhook-signature": f"{junk} {headers['webhook-signature']}",
        }
        response = client.post(
            "/webhooks/0pools", body, content_type="application/json", headers=headers_with_junk
        )
        assert response.status_code in (200, 202), junk


def test_a_body_that_is_not_declared_json_is_415_and_nothing_is_stored(client):
    body = orjson.dumps(envelopes.trade("reserved"))

    response = client.post("/webhooks/0pools", body, content_type="text/plain", headers=sign(body))

    assert response.status_code == 415
    assert response.json()["error"] == "Content-Type must be application/json"
    assert not WebhookEvent.objects.exists()


@pytest.fixture
def gunicorn(transactional_db):
    """The panel under gunicorn (the production server) on loopback, on the test database."""
    from tests.helpers import gunicorn_serving

    with gunicorn_serving(OPOOLS_WEBHOOK_SECRETS=SECRET, OPOOLS_WEBHOOK_READ_SECONDS="0.5") as (
        port,
        _,
    ):
        yield port


def test_a_body_shorter_than_its_content_length_is_408_at_once_not_a_held_worker(gunicorn):
    import socket
    import time

    body = orjson.dumps(envelopes.trade("reserved"))
    head = "".join(f"{name}: {value}\r\n" for name, value in sign(body).items())
    request = (
        f"POST /webhooks/0pools HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
        f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n\r\n"
    ).encode() + body

    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gunicorn), timeout=10) as conn:
        conn.sendall(request)  # and then nothing more: 100 bytes short
        answer = conn.recv(4096).decode()
    took = time.monotonic() - started

    assert answer.startswith("HTTP/1.1 408"), answer[:80]
    assert took < 5, f"the worker was held {took:.1f} s"
    assert not WebhookEvent.objects.exists()
