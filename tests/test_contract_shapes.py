"""``ingest.shapes.quick_envelope`` never disagrees with ``parse_envelope``:
what it takes is the same ``Envelope`` (the same fields kept, the same keys
counted as dropped), and what ``parse_envelope`` refuses it never takes."""

import copy
from datetime import UTC, datetime, timedelta

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from bench import dataset
from ingest import contract, shapes
from ingest.contract import ContractError, parse_envelope
from ingest.shapes import quick_envelope
from sandbox.catalogue import RECON_PLANS
from sandbox.network import generate
from tests import envelopes
from tests.helpers import key_paths

STRUCTS = {
    "envelope": (shapes.Line, {**contract.ENVELOPE, "data": contract.F(dict)}),
    "quote": (shapes.Quote, contract.QUOTE),
    "trade": (shapes.Trade, contract.TRADE),
    "ledger_entry": (shapes.LedgerEntry, contract.LEDGER_ENTRY),
    "delivery_attempt": (shapes.DeliveryAttempt, contract.DELIVERY_ATTEMPT),
    "amount": (shapes.Amount, contract.AMOUNT),
    "status entry": (shapes.StatusEntry, contract.TRADE["statusHistory"].check.item),
}


def slow(raw):
    """``parse_envelope``'s answer: its ``Envelope``, or the error it raised."""
    try:
        return parse_envelope(copy.deepcopy(raw))
    except ContractError as exc:
        return exc


def agree(raw):
    """``quick_envelope`` takes ``raw`` as ``parse_envelope`` does, or leaves it
    to it; returns whether it took it."""
    expected = slow(raw)
    quick = quick_envelope(copy.deepcopy(raw))
    if isinstance(expected, ContractError):
        assert quick is None, (raw, expected)
    elif quick is not None:
        assert quick == expected, raw
    return quick is not None


@pytest.mark.parametrize("name", list(STRUCTS))
def test_each_struct_keeps_the_fields_of_its_contract_shape(name):
    struct, shape = STRUCTS[name]
    info = msgspec.inspect.type_info(struct)
    fields = {field.name: field for field in info.fields}
    if info.tag_field:  # the object's "object": its tag, checked by the union
        assert shape["object"].required
        shape = {key: f for key, f in shape.items() if key != "object"}
    assert set(fields) == set(shape)
    for key, f in shape.items():
        assert fields[key].required == f.required, key
        types = getattr(fields[key].type, "types", (fields[key].type,))
        nullable = any(isinstance(t, msgspec.inspect.NoneType) for t in types)
        assert nullable == f.nullable, key


def network_lines():
    start = dataset.stream_start(30)
    return [
        orjson.loads(orjson.dumps(e)) for e in generate(30, 3, start, exceptions=tuple(RECON_PLANS))
    ]


def test_every_line_of_a_network_is_taken_quickly_and_the_same():
    """The sandbox leaks venue, provider and treasury keys into its events
    (they are dropped and counted), duplicates and reorders them."""
    lines = network_lines()
    taken = [agree(raw) for raw in lines]
    assert len(lines) > 300 and all(taken)
    dropped = [quick_envelope(raw).dropped for raw in lines]
    assert sum(dropped) > len(lines)  # keys were dropped, and counted


SAMPLES = [
    envelopes.quote("created"),
    envelopes.quote("unavailable"),
    envelopes.trade("reserved"),
    envelopes.trade("failed"),
    envelopes.ledger(),
    envelopes.delivery("evt_t000001", outcome="failed"),
]
NOW = datetime.now(UTC)
# Values that break a field, or that parse_envelope would store respelt.
ODD_VALUES = [
    None,
    "",
    " ",
    0,
    -1,
    1001,
    True,
    1.5,
    30.0,
    2**70,
    "x" * 300,
    [],
    {},
    {"value": "1.00"},
    "buy",
    "pt_test_ABC123",
    "pt_live_ABC123",
    "pq_test_ABCD1",
    "evt_ABCD",
    "ptn_acme",
    "EUR-USDT",
    "100.00",
    "1e5",
    "0x10",
    "注文-42",
    " padded ",
    "line\nbreak",
    "2026-06-28T20:15:03Z",
    "2026-06-28T20:15:03+00:00",
    "2026-06-28T20:15:03.000000Z",
    "2026-06-28T20:15:03.5Z",
    "2026-06-28T20:15:03.500000Z",
    "2026-02-30T20:15:03Z",
    "2014-12-31T23:59:59Z",
    (NOW + timedelta(days=40)).isoformat().replace("+00:00", "Z"),
    "2026-06-28 20:15:03Z",
    "reserved",
    "settled",
    [{"status": "reserved", "at": "2026-06-28T20:15:03Z"}],
    [{"status": "reserved", "at": "2026-06-28T20:15:03+00:00"}],
    [{"status": "nope", "at": "2026-06-28T20:15:03Z"}],
    [{"status": "reserved", "at": "2026-06-28T20:15:03Z", "venue": {"a": [1, {"b": 2}]}}],
]


def changed(raw, path, value):
    raw = copy.deepcopy(raw)
    target = raw
    for step in path[:-1]:
        target = target[step]
    if value is _REMOVE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return raw


_REMOVE = object()


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda e: e["type"])
def test_every_field_set_to_an_odd_value_or_removed_gets_the_same_answer(sample):
    assert agree(sample)
    for path in list(key_paths(sample)):
        for value in [*ODD_VALUES, _REMOVE]:
            agree(changed(sample, path, value))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda e: e["type"])
def test_unknown_keys_anywhere_are_dropped_and_counted_the_same(sample):
    objects = [()] + [p for p in key_paths(sample) if isinstance(_at(sample, p), dict)]
    for where in objects:
        for extra in ("venue", {"provider": {"id": 1, "route": [1, 2, {"x": None}]}}, [1, [2]]):
            raw = copy.deepcopy(sample)
            _at(raw, where)["treasuryWallet"] = copy.deepcopy(extra)
            assert agree(raw), where
            assert quick_envelope(raw).dropped == slow(raw).dropped > 0


def _at(raw, path):
    for step in path:
        raw = raw[step]
    return raw


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLES),
    data=st.data(),
    value=json_values,
)
def test_any_json_value_in_any_field_gets_the_same_answer(sample, data, value):
    path = data.draw(st.sampled_from(list(key_paths(sample))))
    agree(changed(sample, path, value))
