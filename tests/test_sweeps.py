"""Property sweeps over what enters the panel: any input is either kept exactly
as the contract says or refused with a reason; never a crash, never half kept."""

import copy
import json

import orjson
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ingest.contract import ContractError, parse_envelope
from records.models import WebhookEvent
from tests import envelopes
from tests.helpers import key_paths, run_import

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
KINDS = {
    "trade": lambda: envelopes.trade("settled"),
    "quote": lambda: envelopes.quote("created"),
    "ledger": lambda: envelopes.ledger("ledger_sweep_1"),
    "delivery": lambda: envelopes.delivery("evt_sweep0001"),
}


def replaced(envelope, path, value):
    changed = copy.deepcopy(envelope)
    target = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return changed


@st.composite
def mutated_envelopes(draw):
    envelope = KINDS[draw(st.sampled_from(sorted(KINDS)))]()
    for _ in range(draw(st.integers(0, 2))):
        path = draw(st.sampled_from(sorted(key_paths(envelope), key=repr)))
        envelope = replaced(envelope, path, draw(json_values))
    return envelope


@hsettings(max_examples=300, deadline=None)
@given(mutated_envelopes())
def test_the_contract_keeps_an_envelope_exactly_or_refuses_it_with_a_reason(envelope):
    try:
        parsed = parse_envelope(envelope)
    except ContractError as refusal:
        # The reason names where (a contract path), never the value sent.
        assert str(refusal).split(":")[0].startswith(("envelope", "data"))
        return
    # Kept: what is stored (and replayed) reads back as itself.
    again = parse_envelope(orjson.loads(orjson.dumps(parsed.payload)))
    assert again.payload == parsed.payload
    assert again.dropped == 0


def _line(candidate):
    if isinstance(candidate, bytes):
        return candidate
    try:
        return orjson.dumps(candidate)
    except orjson.JSONEncodeError:
        # orjson writes no integer wider than 64 bits; a sender's JSON may hold one.
        return json.dumps(candidate).encode()


lines = st.lists(
    st.one_of(
        mutated_envelopes(),
        # Junk, but not gzip's magic bytes: a file that starts so is read as
        # gzip (test_import covers a broken one).
        st.binary(max_size=40).filter(
            lambda raw: b"\n" not in raw and raw.strip() and not raw.startswith(b"\x1f\x8b")
        ),
    ),
    min_size=1,
    max_size=6,
)


@pytest.mark.django_db
@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(candidates=lines)
# Wider than 64 bits: orjson reads it as a float and cannot write it back.
@example(candidates=[{**envelopes.trade("reserved"), "extra": 10**30}, {"data": [-(10**40)]}])
def test_an_import_keeps_every_good_line_and_names_every_bad_one(tmp_path, candidates):
    # Each example imports its own events: fresh ids, so none is a duplicate.
    for candidate in candidates:
        if isinstance(candidate, dict) and isinstance(candidate.get("id"), str):
            candidate["id"] = envelopes._event_id()
    expected_bad, expected_good = set(), set()
    for number, candidate in enumerate(candidates, start=1):
        try:
            parsed = parse_envelope(orjson.loads(_line(candidate)))
        except (ContractError, orjson.JSONDecodeError):
            expected_bad.add(number)
        else:
            expected_good.add(parsed.event_id)
    before = set(WebhookEvent.objects.values_list("event_id", flat=True))

    code, out, err = run_import(tmp_path, b"\n".join(_line(c) for c in candidates) + b"\n")

    stored = set(WebhookEvent.objects.values_list("event_id", flat=True)) - before
    assert stored == expected_good
    assert (
        out.strip() == f"imported {len(expected_good)}, duplicates 0, rejected {len(expected_bad)}"
    )
    reported = {
        int(line.split(":")[0].removeprefix("line "))
        for line in err.splitlines()
        if line.startswith("line ")
    }
    assert reported == expected_bad
    assert code == (1 if expected_bad else 0)
