"""``manage.py sandbox generate``: the simulated 0Pools network's NDJSON stream."""

import gzip
import io
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ingest.contract import parse_envelope
from records import ids
from sandbox.catalogue import SCENARIOS
from sandbox.forbidden import FORBIDDEN_KEYS, FORBIDDEN_MARKERS

BASE_DIR = Path(__file__).resolve().parent.parent

ENVELOPE_KEYS = ("id", "type", "createdAt", "livemode", "data")
EVENT_OBJECTS = ids.EVENT_OBJECTS
# Every key the contract names, at any depth.
CONTRACT_KEYS = {
    *ENVELOPE_KEYS,
    *("object", "quoteId", "partnerId", "partnerReference", "poolId", "side", "network"),
    *("amount", "value", "currency", "available", "executable", "rate", "spreadBps"),
    *("feeBps", "requestId", "expiresAt", "transactId", "deliverAmount", "idempotencyKey"),
    *("status", "failureCode", "statusHistory", "at", "updatedAt", "ledgerId", "entryType"),
    *("direction", "postedAt", "eventId", "attempt", "responseStatus", "durationMs"),
    *("outcome", "attemptedAt"),
}
TRADE_TYPES = tuple(t for t, kind in EVENT_OBJECTS.items() if kind == "trade")
ID_SHAPES = {
    "partnerId": re.compile(r"ptn_[a-z0-9_]{1,40}"),
    "poolId": re.compile(r"[A-Z0-9]{2,10}-[A-Z0-9]{2,10}"),
    "quoteId": re.compile(r"pq_(test|live)_[A-Za-z0-9]{4,40}"),
    "transactId": re.compile(r"pt_(test|live)_[A-Za-z0-9]{3,40}"),
    "requestId": re.compile(r"req_[A-Za-z0-9]{4,40}"),
    "eventId": re.compile(r"evt_[A-Za-z0-9]{4,40}"),
    "ledgerId": re.compile(r"ledger_[A-Za-z0-9_]{3,40}"),
    "partnerReference": re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?"),
    "idempotencyKey": re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?"),
}
EVENT_ID = re.compile(r"evt_[A-Za-z0-9]{4,40}")
UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
DECIMAL = re.compile(r"[0-9]+\.[0-9]+")
TIME_KEYS = ("createdAt", "expiresAt", "updatedAt", "at", "postedAt", "attemptedAt")
SLA = timedelta(minutes=15)


def generate(*args):
    out = io.StringIO()
    call_command("sandbox", "generate", *args, stdout=out)
    return out.getvalue().encode()


def envelopes(raw):
    return [orjson.loads(line) for line in raw.splitlines()]


def walk(node, path=()):
    """(path, key, value) of every dict item, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, (*path, "[]"))


def legit(node):
    """``node`` with every key the contract does not name removed, at any depth."""
    if isinstance(node, dict):
        return {k: legit(v) for k, v in node.items() if k in CONTRACT_KEYS}
    if isinstance(node, list):
        return [legit(item) for item in node]
    return node


def leaves(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from leaves(value)
    elif isinstance(node, list):
        for item in node:
            yield from leaves(item)
    else:
        yield node


def by_order(stream):
    """Delivery-ordered envelopes grouped by (partnerId, partnerReference)."""
    owner = {}
    for envelope in stream:
        data = envelope["data"]
        if data["object"] in ("quote", "trade"):
            key = (data["partnerId"], data["partnerReference"])
            owner[envelope["id"]] = key
            owner[data.get("transactId")] = key
    orders = defaultdict(list)
    for envelope in stream:
        data = envelope["data"]
        if data["object"] == "ledger_entry":
            key = owner[data["transactId"]]
        elif data["object"] == "delivery_attempt":
            key = owner[data["eventId"]]
        else:
            key = (data["partnerId"], data["partnerReference"])
        orders[key].append(envelope)
    return orders


def types(events):
    return [event["type"] for event in events]


def of_type(events, *event_types):
    return [event for event in events if event["type"] in event_types]


def ledger(events, entry_type):
    return [
        e["data"] for e in of_type(events, "ledger.posted") if e["data"]["entryType"] == entry_type
    ]


def parse_time(text):
    return datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def scenario_stream():
    return envelopes(generate("--orders", "0", "--seed", "3"))


@pytest.fixture(scope="module")
def scenarios(scenario_stream):
    orders = by_order(scenario_stream)
    return {name: orders[("ptn_acme", name)] for name in SCENARIOS}


@pytest.fixture(scope="module")
def raw_stream():
    return generate("--orders", "300", "--seed", "11")


@pytest.fixture(scope="module")
def stream(raw_stream):
    return envelopes(raw_stream)


# --- determinism and output ---------------------------------------------------------


def test_the_same_seed_and_orders_give_identical_bytes():
    assert generate("--orders", "40", "--seed", "5") == generate("--orders", "40", "--seed", "5")


def test_a_different_seed_gives_a_different_stream():
    assert generate("--orders", "40", "--seed", "5") != generate("--orders", "40", "--seed", "6")


def test_a_gzip_out_file_is_byte_identical_across_runs_and_holds_the_stdout_lines(tmp_path):
    first, second = tmp_path / "a.ndjson.gz", tmp_path / "b.ndjson.gz"
    for path in (first, second):
        call_command("sandbox", "generate", "--orders", "20", "--seed", "9", "--out", str(path))

    assert first.read_bytes() == second.read_bytes()
    assert gzip.decompress(first.read_bytes()) == generate("--orders", "20", "--seed", "9")


def test_a_plain_out_file_holds_the_stdout_lines(tmp_path):
    path = tmp_path / "events.ndjson"
    call_command("sandbox", "generate", "--orders", "20", "--seed", "9", "--out", str(path))

    assert path.read_bytes() == generate("--orders", "20", "--seed", "9")


def test_the_command_line_writes_nothing_but_ndjson_to_stdout():
    result = subprocess.run(
        [sys.executable, "manage.py", "sandbox", "generate", "--orders", "5", "--seed", "2"],
        cwd=BASE_DIR,
        capture_output=True,
        check=True,
    )

    assert result.stdout == generate("--orders", "5", "--seed", "2")


def test_start_moves_every_time_in_the_stream():
    default = envelopes(generate("--orders", "3", "--seed", "4"))
    moved = envelopes(generate("--orders", "3", "--seed", "4", "--start", "2027-01-01T00:00:00Z"))

    shift = datetime(2027, 1, 1, tzinfo=UTC) - datetime(2026, 11, 20, tzinfo=UTC)
    for before, after in zip(default, moved, strict=True):
        assert parse_time(after["createdAt"]) - parse_time(before["createdAt"]) == shift
    assert default[0]["createdAt"] == "2026-11-20T00:00:00Z"


def test_a_start_without_a_utc_offset_is_refused():
    with pytest.raises(CommandError, match="UTC offset"):
        generate("--start", "2026-11-20T00:00:00")


def test_a_negative_order_count_is_refused():
    with pytest.raises(CommandError, match="--orders"):
        generate("--orders", "-1")


# --- the contract -----------------------------------------------------------------------


def test_every_line_is_one_envelope_of_a_contract_event_type(stream):
    for envelope in stream:
        contract_part = legit(envelope)
        assert tuple(contract_part) == ENVELOPE_KEYS
        assert EVENT_ID.fullmatch(envelope["id"])
        assert isinstance(envelope["livemode"], bool)
        assert envelope["data"]["object"] == EVENT_OBJECTS[envelope["type"]]
    assert {envelope["type"] for envelope in stream} == set(EVENT_OBJECTS)


def test_ids_match_the_contract_shapes(stream):
    for envelope in stream:
        for _, key, value in walk(legit(envelope["data"])):
            if key in ID_SHAPES:
                assert ID_SHAPES[key].fullmatch(value), (key, value)


def test_test_and_live_never_mix(stream):
    mode_of_partner = {}
    for envelope in stream:
        data = envelope["data"]
        mode = "live" if envelope["livemode"] else "test"
        assert mode_of_partner.setdefault(data["partnerId"], mode) == mode
        for key in ("quoteId", "transactId"):
            if key in data:
                assert data[key].startswith(("pq_" + mode, "pt_" + mode))
    assert set(mode_of_partner.values()) == {"live", "test"}


def test_times_are_rfc3339_utc_and_amounts_are_decimal_strings(stream):
    for envelope in stream:
        for _, key, value in walk(legit(envelope)):
            if key in TIME_KEYS:
                assert UTC_TIME.fullmatch(value), (key, value)
            if key in ("amount", "deliverAmount"):
                assert DECIMAL.fullmatch(value["value"])
            if key == "rate":
                assert DECIMAL.fullmatch(value)


def test_trade_events_carry_their_own_status_and_the_history_so_far(stream):
    for envelope in of_type(stream, *TRADE_TYPES):
        trade = legit(envelope["data"])
        history = trade["statusHistory"]
        assert envelope["type"] == "trade." + trade["status"]
        assert history[0] == {"status": "reserved", "at": trade["createdAt"]}
        assert history[-1] == {"status": trade["status"], "at": trade["updatedAt"]}
        if envelope["createdAt"] != trade["updatedAt"]:
            assert trade["status"] == "reserved"  # an idempotent retry, answered later
        assert (trade["failureCode"] is not None) == (trade["status"] == "failed")


def test_unavailable_quotes_have_no_rate_or_expiry_and_firm_quotes_expire_in_15_to_30s(stream):
    for envelope in of_type(stream, "quote.unavailable", "quote.created"):
        quote = envelope["data"]
        if envelope["type"] == "quote.unavailable":
            assert quote["available"] is False
            assert "rate" not in quote and "expiresAt" not in quote
        else:
            lifetime = parse_time(quote["expiresAt"]) - parse_time(quote["createdAt"])
            assert timedelta(seconds=15) <= lifetime <= timedelta(seconds=30)


def test_every_line_parses_with_the_contract_and_loses_every_internal_field(stream):
    for envelope in stream:
        parsed = parse_envelope(envelope)

        assert parsed.dropped > 0
        assert parsed.payload == legit(envelope)


# --- internal detail the contract forbids ------------------------------------------------


def test_every_line_carries_internal_fields_and_only_under_forbidden_keys(stream):
    assert not FORBIDDEN_KEYS & CONTRACT_KEYS
    for envelope in stream:
        internal = [(k, v) for _, k, v in walk(envelope) if k not in CONTRACT_KEYS]
        assert internal
        for key, value in internal:
            assert key in FORBIDDEN_KEYS
            for leaf in leaves(value):
                assert isinstance(leaf, str)
                assert any(marker in leaf for marker in FORBIDDEN_MARKERS), (key, leaf)


def test_no_contract_value_contains_a_forbidden_marker(raw_stream, stream):
    assert all(marker.encode() in raw_stream for marker in FORBIDDEN_MARKERS)
    legit_bytes = b"\n".join(orjson.dumps(legit(envelope)) for envelope in stream)
    for marker in FORBIDDEN_MARKERS:
        assert marker.encode() not in legit_bytes


def test_internal_fields_hide_at_every_depth(stream):
    depths = set()  # the contract key (or list) holding a forbidden key
    for envelope in stream:
        for path, key, _ in walk(envelope):
            outermost = all(step in CONTRACT_KEYS or step == "[]" for step in path)
            if key in FORBIDDEN_KEYS and outermost:
                depths.add(path[-1] if path else "envelope")
    assert {"envelope", "data", "amount", "deliverAmount", "[]"} <= depths


# --- the named scenarios ------------------------------------------------------------------


def test_every_named_scenario_is_present_without_any_extra_orders(scenario_stream, scenarios):
    assert len(SCENARIOS) == 14
    assert all(scenarios[name] for name in SCENARIOS)
    assert {envelope["data"]["partnerId"] for envelope in scenario_stream} == {"ptn_acme"}
    assert all(envelope["livemode"] for envelope in scenario_stream)


def test_the_scenarios_are_in_every_stream_whatever_the_seed(stream):
    orders = by_order(stream)
    assert all(orders[("ptn_acme", name)] for name in SCENARIOS)


def test_scenarios_carry_no_random_duplicates(scenario_stream):
    ids = Counter(envelope["id"] for envelope in scenario_stream)
    assert max(ids.values()) == 1


def test_settled_ok_is_clean_with_ledger_and_first_time_deliveries(scenarios):
    events = scenarios["scn_settled_ok"]
    trade = of_type(events, "trade.settled")[0]["data"]

    assert types(of_type(events, "trade.reserved", "trade.settled")) == [
        "trade.reserved",
        "trade.settled",
    ]
    assert [e["amount"] for e in ledger(events, "settlement")] == [trade["deliverAmount"]]
    assert len(ledger(events, "fee")) == 1
    attempts = [e["data"] for e in of_type(events, "webhook.delivery_attempted")]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "succeeded")] * 2


def test_settled_no_ledger_has_a_fee_but_no_settlement_entry(scenarios):
    events = scenarios["scn_settled_no_ledger"]

    assert of_type(events, "trade.settled")
    assert ledger(events, "settlement") == []
    assert len(ledger(events, "fee")) == 1


def test_ledger_without_settle_credits_a_trade_that_failed(scenarios):
    events = scenarios["scn_ledger_without_settle"]

    assert types(of_type(events, "trade.settled", "trade.failed")) == ["trade.failed"]
    assert len(ledger(events, "settlement")) == 1


def test_amount_mismatch_credits_a_different_amount_than_delivered(scenarios):
    events = scenarios["scn_amount_mismatch"]
    deliver = of_type(events, "trade.settled")[0]["data"]["deliverAmount"]
    [credit] = ledger(events, "settlement")

    assert credit["amount"]["currency"] == deliver["currency"]
    assert Decimal(credit["amount"]["value"]) != Decimal(deliver["value"])


def test_returns_post_a_return_with_or_without_the_fee_reversal(scenarios):
    without = scenarios["scn_returned_no_reversal"]
    with_reversal = scenarios["scn_returned_with_reversal"]

    for events in (without, with_reversal):
        assert types(of_type(events, "trade.settled", "trade.returned")) == [
            "trade.settled",
            "trade.returned",
        ]
        assert len(ledger(events, "return")) == 1
    assert ledger(without, "reversal") == []
    [reversal] = ledger(with_reversal, "reversal")
    assert reversal["amount"] == ledger(with_reversal, "fee")[0]["amount"]


def test_stuck_reserved_is_past_the_sla_at_the_end_of_the_stream(scenario_stream, scenarios):
    events = scenarios["scn_stuck_reserved"]
    end = max(parse_time(envelope["createdAt"]) for envelope in scenario_stream)

    assert {e["data"]["status"] for e in events if e["data"]["object"] == "trade"} == {"reserved"}
    assert end - parse_time(of_type(events, "trade.reserved")[0]["createdAt"]) > SLA


def test_illegal_move_reports_settled_after_failed(scenarios):
    events = scenarios["scn_illegal_move"]
    failed, settled = of_type(events, "trade.failed")[0], of_type(events, "trade.settled")[0]

    assert failed["data"]["transactId"] == settled["data"]["transactId"]
    assert failed["createdAt"] < settled["createdAt"]
    assert [h["status"] for h in settled["data"]["statusHistory"]][-2:] == ["failed", "settled"]


def test_late_reserved_delivers_settled_before_reserved(scenarios):
    trade_events = of_type(scenarios["scn_late_reserved"], "trade.reserved", "trade.settled")

    assert types(trade_events) == ["trade.settled", "trade.reserved"]
    assert trade_events[1]["createdAt"] < trade_events[0]["createdAt"]


def test_partner_never_told_only_got_the_reserved_event(scenarios):
    events = scenarios["scn_partner_never_told"]
    by_id = {e["id"]: e["type"] for e in events}
    attempts = [e["data"] for e in of_type(events, "webhook.delivery_attempted")]
    told = [by_id[a["eventId"]] for a in attempts if a["outcome"] == "succeeded"]

    assert told == ["trade.reserved"]
    assert len([a for a in attempts if by_id[a["eventId"]] == "trade.settled"]) >= 3


def test_expired_reask_accepts_the_second_quote(scenarios):
    events = scenarios["scn_expired_reask"]
    quote_events = of_type(events, "quote.created", "quote.expired", "quote.accepted")
    first, second = quote_events[0]["data"]["quoteId"], quote_events[2]["data"]["quoteId"]

    assert types(quote_events) == [
        "quote.created",
        "quote.expired",
        "quote.created",
        "quote.accepted",
    ]
    assert first != second == quote_events[3]["data"]["quoteId"]
    assert of_type(events, "trade.reserved")[0]["data"]["quoteId"] == second


def test_unavailable_is_a_single_quote_unavailable(scenarios):
    [event] = scenarios["scn_unavailable"]

    assert event["type"] == "quote.unavailable"
    assert event["data"]["quoteId"].startswith("pq_live_")


def test_idempotent_retry_reserves_one_trade_twice_with_new_event_and_request_ids(scenarios):
    first, retry = of_type(scenarios["scn_idempotent_retry"], "trade.reserved")
    same = ("transactId", "idempotencyKey", "createdAt")

    assert [first["data"][k] for k in same] == [retry["data"][k] for k in same]
    assert first["id"] != retry["id"]
    assert first["data"]["requestId"] != retry["data"]["requestId"]
    assert first["data"]["idempotencyKey"] == "scn_idempotent_retry:accept:1"


def test_ledger_first_delivers_ledger_before_any_trade_event(scenarios):
    events = [e for e in scenarios["scn_ledger_first"] if e["type"] != "webhook.delivery_attempted"]
    kinds = [e["data"]["object"] for e in events if e["data"]["object"] != "quote"]

    assert kinds[0] == "ledger_entry"
    assert "trade" in kinds


# --- the faults of real traffic in random orders ---------------------------------------------


def test_random_orders_bring_duplicates_late_and_out_of_order_deliveries(raw_stream, stream):
    lines = Counter(raw_stream.splitlines())
    assert any(count > 1 for count in lines.values())

    orders = by_order(stream)
    random_orders = [events for key, events in orders.items() if key[1] not in SCENARIOS]
    settled_first = [
        events
        for events in random_orders
        if types(of_type(events, "trade.reserved", "trade.settled"))[:1] == ["trade.settled"]
    ]
    ledger_first = [
        events
        for events in random_orders
        if [e["data"]["object"] for e in of_type(events, *TRADE_TYPES, "ledger.posted")][:1]
        == ["ledger_entry"]
    ]
    assert settled_first and ledger_first

    newest, seen, late = None, set(), 0
    for envelope in stream:
        created = parse_time(envelope["createdAt"])
        if envelope["id"] not in seen and newest and newest - created > timedelta(minutes=30):
            late += 1
        seen.add(envelope["id"])
        newest = max(newest or created, created)
    assert late


def test_random_orders_have_every_outcome_and_stuck_trades_past_the_sla(stream):
    seen = defaultdict(list)  # transactId -> trade objects, in delivery order
    for envelope in of_type(stream, *TRADE_TYPES):
        if envelope["data"]["partnerReference"] not in SCENARIOS:
            seen[envelope["data"]["transactId"]].append(envelope["data"])
    end = max(parse_time(envelope["createdAt"]) for envelope in stream)
    stuck = [t[0]["createdAt"] for t in seen.values() if {x["status"] for x in t} == {"reserved"}]

    statuses = {trade["status"] for trades in seen.values() for trade in trades}
    assert statuses == {"reserved", "settled", "failed", "released", "returned"}
    assert len(stuck) > 1
    assert all(end - parse_time(reserved_at) > SLA for reserved_at in stuck)


def test_some_partner_order_ids_are_used_by_two_partners(stream):
    partners_of = defaultdict(set)
    for envelope in stream:
        if "partnerReference" in envelope["data"]:
            partners_of[envelope["data"]["partnerReference"]].add(envelope["data"]["partnerId"])

    assert any(len(partners) > 1 for partners in partners_of.values())


def test_partners_are_mostly_told_after_a_failed_first_attempt(stream):
    attempts = [e["data"] for e in of_type(stream, "webhook.delivery_attempted")]
    retried = {a["eventId"] for a in attempts if a["attempt"] == 2}
    succeeded_later = {
        a["eventId"] for a in attempts if a["attempt"] > 1 and a["outcome"] == "succeeded"
    }

    assert any(a["responseStatus"] is None for a in attempts)  # timed out
    assert len(succeeded_later) > len(retried) / 2


def test_orders_average_eight_to_fifteen_events():
    stream = envelopes(generate("--orders", "200", "--seed", "1"))
    orders = by_order(stream)

    assert 8 <= len(stream) / len(orders) <= 15
