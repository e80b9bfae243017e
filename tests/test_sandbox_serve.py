"""``manage.py sandbox serve``: the simulated 0Pools upstream, over loopback HTTP."""

import base64
import io
import time
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from standardwebhooks.webhooks import Webhook

from ingest.contract import parse_envelope
from ingest.signatures import SignatureRejected, verify
from sandbox.forbidden import FORBIDDEN_KEYS, FORBIDDEN_MARKERS
from sandbox.network import generate
from sandbox.server import DEFAULT_API_KEY, start
from tests.helpers import wait_for

AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
PARTNER_SECRET = "whsec_" + base64.b64encode(b"partner-secret-0123456789abcdef").decode()
OLD_PARTNER_SECRET = "whsec_" + base64.b64encode(b"partner-old-secret-0123456789ab").decode()
TRADE_FIELDS = (
    *("object", "transactId", "quoteId", "partnerId", "partnerReference", "poolId", "side"),
    *("network", "amount", "deliverAmount", "rate", "feeBps", "idempotencyKey", "requestId"),
    *("status", "failureCode", "statusHistory", "createdAt", "updatedAt"),
)
LOG = io.StringIO()
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 - what the sandbox must refuse


@pytest.fixture(scope="module")
def sandbox():
    server = start(port=0, orders=20, seed=5, log=LOG)
    yield server
    server.stop()


@pytest.fixture
def upstream(sandbox):
    sandbox.state.reset()
    with httpx.Client(base_url=sandbox.url, timeout=5, trust_env=False) as client:
        yield client


def trade_of(sandbox, reference):
    """The transactId of the trade made for a partner order (a scenario name)."""
    (transact_id,) = (
        transact_id
        for transact_id, trade in sandbox.state.trades.items()
        if trade["partnerReference"] == reference
    )
    return transact_id


def has_marker(value):
    return any(marker in orjson.dumps(value).decode() for marker in FORBIDDEN_MARKERS)


def signed(body, secret, event_id="evt_sandboxdelivery1"):
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, datetime.now(UTC), body.decode()),
        "content-type": "application/json",
    }


def ingest_reason(response, secrets):
    """Why ingest's own signature check refuses the request behind ``response``."""
    request = response.request
    with pytest.raises(SignatureRejected) as rejected:
        verify(request.content, request.headers, secrets)
    return str(rejected.value)


def test_a_known_trade_answers_the_contract_fields_with_internal_detail_to_drop(sandbox, upstream):
    transact_id = trade_of(sandbox, "scn_settled_ok")

    response = upstream.get(f"/v1/trades/{transact_id}", headers=AUTH)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    trade = response.json()
    assert set(TRADE_FIELDS) <= set(trade)
    assert (trade["object"], trade["transactId"], trade["status"]) == (
        "trade",
        transact_id,
        "settled",
    )
    # Internal detail at the top, inside an amount and inside a history entry.
    assert FORBIDDEN_KEYS & set(trade)
    assert any(FORBIDDEN_KEYS & set(trade[key]) for key in ("amount", "deliverAmount"))
    assert any(FORBIDDEN_KEYS & set(entry) for entry in trade["statusHistory"])
    # ...all of which the panel's allowlist drops.
    envelope = {
        "id": "evt_sandboxpoll1",
        "type": f"trade.{trade['status']}",
        "createdAt": trade["updatedAt"],
        "livemode": True,
        "data": trade,
    }
    parsed = parse_envelope(envelope)
    assert parsed.dropped > 0
    assert not has_marker(parsed.payload)
    assert set(parsed.data) == set(TRADE_FIELDS)


def test_every_forbidden_marker_turns_up_in_some_status_answer(sandbox):
    answers = orjson.dumps(list(sandbox.state.trades.values())).decode()

    assert all(marker in answers for marker in FORBIDDEN_MARKERS)


def test_the_stuck_scenario_has_settled_upstream_since_the_stream_ended(sandbox, upstream):
    transact_id = trade_of(sandbox, "scn_stuck_reserved")
    envelopes = list(generate(20, 5))
    stream_end = max(envelope["createdAt"] for envelope in envelopes)
    in_stream = {
        envelope["data"]["status"]
        for envelope in envelopes
        if envelope["data"].get("transactId") == transact_id
        and envelope["data"]["object"] == "trade"
    }

    trade = upstream.get(f"/v1/trades/{transact_id}", headers=AUTH).json()

    assert in_stream == {"reserved"}
    assert trade["status"] == "settled"
    assert [entry["status"] for entry in trade["statusHistory"]] == ["reserved", "settled"]
    assert trade["updatedAt"] == trade["statusHistory"][-1]["at"] > stream_end


def test_the_truth_is_the_last_trade_the_network_made_not_the_last_delivered(sandbox):
    late = sandbox.state.trade(trade_of(sandbox, "scn_late_reserved"))
    illegal = sandbox.state.trade(trade_of(sandbox, "scn_illegal_move"))

    assert late["status"] == "settled"
    assert [entry["status"] for entry in illegal["statusHistory"]] == [
        "reserved",
        "failed",
        "settled",
    ]


def test_an_unknown_trade_is_404_not_found(upstream):
    response = upstream.get("/v1/trades/pt_live_doesnotexist", headers=AUTH)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {"code": "not_found"}}


def test_a_missing_or_wrong_key_is_401(sandbox, upstream):
    path = f"/v1/trades/{trade_of(sandbox, 'scn_settled_ok')}"

    missing = upstream.get(path)
    wrong = upstream.get(path, headers={"Authorization": "Bearer sk_test_not_the_key"})
    not_bearer = upstream.get(path, headers={"Authorization": DEFAULT_API_KEY})

    assert [r.status_code for r in (missing, wrong, not_bearer)] == [401, 401, 401]
    assert wrong.json() == {"error": {"code": "unauthorized"}}
    seen = upstream.get("/_sandbox/requests").json()
    assert [(r["auth_ok"], r["status"]) for r in seen] == [(False, 401)] * 3


def test_a_429_with_retry_after_is_used_up_then_the_trade_answers(sandbox, upstream):
    transact_id = trade_of(sandbox, "scn_settled_ok")
    fault = {"match": transact_id, "status": 429, "retry_after": 1, "times": 2}
    assert upstream.post("/_sandbox/faults", json=fault).status_code == 201

    other = upstream.get(f"/v1/trades/{trade_of(sandbox, 'scn_expired_reask')}", headers=AUTH)
    answers = [upstream.get(f"/v1/trades/{transact_id}", headers=AUTH) for _ in range(3)]

    assert other.status_code == 200  # the fault matches its own trade only
    assert [r.status_code for r in answers] == [429, 429, 200]
    assert answers[0].headers["retry-after"] == "1"
    assert answers[0].json() == {"error": {"code": "rate_limited"}}
    assert upstream.get("/_sandbox/faults").json() == {"faults": []}
    seen = upstream.get("/_sandbox/requests").json()
    assert [(r["transact_id"], r["status"], r["fault"]) for r in seen[1:]] == [
        (transact_id, 429, "status"),
        (transact_id, 429, "status"),
        (transact_id, 200, None),
    ]


def test_queued_faults_are_taken_in_order_and_a_503_comes_once(sandbox, upstream):
    path = f"/v1/trades/{trade_of(sandbox, 'scn_settled_ok')}"
    upstream.post(
        "/_sandbox/faults",
        json=[{"match": "*", "status": 503}, {"match": "*", "status": 500, "times": 5}],
    )

    first, second = (upstream.get(path, headers=AUTH) for _ in range(2))
    cleared = upstream.delete("/_sandbox/faults")
    third = upstream.get(path, headers=AUTH)

    assert [first.status_code, second.status_code, third.status_code] == [503, 500, 200]
    assert cleared.json() == {"faults": []}


def test_a_slow_answer_takes_its_delay_then_answers_normally(sandbox, upstream):
    path = f"/v1/trades/{trade_of(sandbox, 'scn_settled_ok')}"
    upstream.post("/_sandbox/faults", json={"match": "*", "delay": 1.0})

    began = time.monotonic()
    response = upstream.get(path, headers=AUTH)
    took = time.monotonic() - began

    assert response.status_code == 200
    assert took >= 1.0
    assert upstream.get(path, headers=AUTH).status_code == 200


def test_a_dropped_connection_gets_no_answer(sandbox, upstream):
    path = f"/v1/trades/{trade_of(sandbox, 'scn_settled_ok')}"
    upstream.post("/_sandbox/faults", json={"match": "*", "drop": True})

    with pytest.raises(httpx.RemoteProtocolError):
        upstream.get(path, headers=AUTH)

    assert upstream.get(path, headers=AUTH).status_code == 200
    seen = upstream.get("/_sandbox/requests").json()
    assert [(r["status"], r["fault"]) for r in seen] == [(None, "drop"), (200, None)]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"match": "*"}',
        b'{"match": "*", "status": 302}',
        b'{"match": "*", "drop": true, "times": 0}',
        b'{"match": "*", "delay": "slow"}',
        b"[1, 2]",
    ],
)
def test_a_malformed_fault_is_a_400_with_a_reason(upstream, body):
    response = upstream.post("/_sandbox/faults", content=body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert upstream.get("/_sandbox/faults").json() == {"faults": []}


def test_the_control_api_moves_and_creates_a_trades_truth(sandbox, upstream):
    transact_id = trade_of(sandbox, "scn_settled_ok")
    made = {**sandbox.state.trade(transact_id), "transactId": "pt_live_handmade1"}

    moved = upstream.post(f"/_sandbox/trades/{transact_id}", json={"status": "returned"})
    created = upstream.post("/_sandbox/trades/pt_live_handmade1", json=made)
    unknown = upstream.post("/_sandbox/trades/pt_live_nothere", json={"status": "settled"})
    bad = upstream.post(f"/_sandbox/trades/{transact_id}", json={"status": "lost"})

    assert moved.status_code == created.status_code == 200
    trade = upstream.get(f"/v1/trades/{transact_id}", headers=AUTH).json()
    assert trade["status"] == "returned"
    assert trade["statusHistory"][-1]["status"] == "returned"
    assert trade["updatedAt"] == trade["statusHistory"][-1]["at"]
    handmade = upstream.get("/v1/trades/pt_live_handmade1", headers=AUTH)
    assert handmade.json() == made
    assert (unknown.status_code, bad.status_code) == (404, 400)


def test_the_receiver_verifies_a_signed_delivery_and_records_a_bad_one(upstream):
    registered = upstream.post(
        "/_sandbox/partners/ptn_acme", json={"secrets": [OLD_PARTNER_SECRET, PARTNER_SECRET]}
    )
    body = orjson.dumps({"id": "evt_sandboxdelivery1", "type": "trade.settled", "data": {}})

    good = upstream.post(
        "/partners/ptn_acme/webhooks", content=body, headers=signed(body, PARTNER_SECRET)
    )
    wrong_secret = "whsec_" + base64.b64encode(b"somebody-else-0123456789abcdef").decode()
    bad = upstream.post(
        "/partners/ptn_acme/webhooks", content=body, headers=signed(body, wrong_secret)
    )
    garbage = upstream.post(
        "/partners/ptn_acme/webhooks",
        content=body,
        headers={**signed(body, PARTNER_SECRET), "webhook-signature": "garbage"},
    )
    unknown = upstream.post(
        "/partners/ptn_nobody/webhooks", content=body, headers=signed(body, PARTNER_SECRET)
    )

    assert registered.json() == {"partner": "ptn_acme", "secrets": 2, "respond": [200]}
    assert [r.status_code for r in (good, bad, garbage, unknown)] == [200, 400, 400, 404]
    received = upstream.get("/_sandbox/received", params={"partner": "ptn_acme"}).json()
    assert [(r["verified"], r["answered"], r["secret_position"]) for r in received] == [
        (True, 200, 2),
        (False, 400, None),
        (False, 400, None),
    ]
    assert received[0]["event"] == orjson.loads(body)
    assert received[0]["webhook_id"] == "evt_sandboxdelivery1"
    assert received[0]["reason"] is None
    # The receiver checks with ingest's code, so it gives ingest's reasons.
    secrets = [OLD_PARTNER_SECRET, PARTNER_SECRET]
    assert received[1]["reason"] == ingest_reason(bad, secrets)
    assert received[2]["reason"] == ingest_reason(garbage, secrets)
    assert received[1]["reason"] != received[2]["reason"]
    assert len(upstream.get("/_sandbox/received").json()) == 4


def test_the_receiver_answers_what_the_partner_was_set_to_answer(upstream):
    upstream.post(
        "/_sandbox/partners/ptn_globex", json={"secrets": [PARTNER_SECRET], "respond": [500, 410]}
    )
    body = orjson.dumps({"id": "evt_sandboxdelivery2"})

    answers = [
        upstream.post(
            "/partners/ptn_globex/webhooks",
            content=body,
            headers=signed(body, PARTNER_SECRET, "evt_sandboxdelivery2"),
        ).status_code
        for _ in range(3)
    ]
    redirect = upstream.post(
        "/_sandbox/partners/ptn_globex", json={"secrets": [PARTNER_SECRET], "respond": 301}
    )

    assert answers == [500, 410, 410]
    assert redirect.status_code == 400


def test_the_same_seed_gives_the_same_trade_bytes(sandbox, upstream):
    transact_id = trade_of(sandbox, "scn_returned_with_reversal")
    ours = upstream.get(f"/v1/trades/{transact_id}", headers=AUTH)

    with (
        start(port=0, orders=20, seed=5, log=io.StringIO()) as other,
        httpx.Client(base_url=other.url, timeout=5, trust_env=False) as client,
    ):
        theirs = client.get(f"/v1/trades/{transact_id}", headers=AUTH)

    assert ours.status_code == theirs.status_code == 200
    assert ours.content == theirs.content


def test_healthz_answers_ok(upstream):
    response = upstream.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_a_host_that_is_not_loopback_is_refused():
    with pytest.raises(ValueError, match="loopback"):
        start(host=EVERY_INTERFACE, port=0, orders=0)
    with pytest.raises(CommandError, match="--allow-remote"):
        call_command("sandbox", "serve", "--host", EVERY_INTERFACE, "--port", "0")


def test_the_log_has_one_line_per_request_and_never_a_body_or_key(sandbox, upstream):
    upstream.post("/_sandbox/partners/ptn_hooli", json={"secrets": [PARTNER_SECRET]})
    body = orjson.dumps({"id": "evt_sandboxdelivery3", "note": "SECRET-BODY-TEXT"})
    before = LOG.getvalue().count("\n")
    asked_before = LOG.getvalue().count("/v1/trades/pt_live_doesnotexist")

    upstream.post(
        "/partners/ptn_hooli/webhooks",
        content=body,
        headers=signed(body, PARTNER_SECRET, "evt_sandboxdelivery3"),
    )
    upstream.get("/v1/trades/pt_live_doesnotexist", headers=AUTH)
    # Each line is written in the server's thread as its answer goes out:
    # wait for the last one, and leave out the control calls' lines.
    wait_for(
        lambda: LOG.getvalue().count("/v1/trades/pt_live_doesnotexist") > asked_before, timeout=5
    )

    lines = [line for line in LOG.getvalue().splitlines()[before:] if "/_sandbox/" not in line]
    assert [line.split()[3:6] for line in lines] == [
        ["POST", "/partners/ptn_hooli/webhooks", "200"],
        ["GET", "/v1/trades/pt_live_doesnotexist", "404"],
    ]
    everything = LOG.getvalue()
    assert "SECRET-BODY-TEXT" not in everything
    assert DEFAULT_API_KEY not in everything
    assert PARTNER_SECRET not in everything
