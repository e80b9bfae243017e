"""Trade status sequences in any order end in the right state with the right flags.

Each sequence goes through the one pipeline (an import), in the order given,
which is the order the events arrived in.
"""

import pytest

from records import states
from records.models import StatusChange, Trade
from tests import envelopes
from tests.helpers import import_events

pytestmark = pytest.mark.django_db

T0 = "2026-06-28T20:13:11Z"
T1 = "2026-06-28T20:15:03Z"
T2 = "2026-06-28T21:00:00Z"


def reserved():
    return envelopes.trade("reserved", at=T0)


def settled():
    return envelopes.trade(
        "settled",
        at=T1,
        history=[{"status": "reserved", "at": T0}, {"status": "settled", "at": T1}],
    )


def failed():
    return envelopes.trade(
        "failed", at=T1, history=[{"status": "reserved", "at": T0}, {"status": "failed", "at": T1}]
    )


def returned():
    return envelopes.trade(
        "returned",
        at=T2,
        history=[
            {"status": "reserved", "at": T0},
            {"status": "settled", "at": T1},
            {"status": "returned", "at": T2},
        ],
    )


def moves():
    return [(c.from_status, c.to_status, c.outcome) for c in StatusChange.objects.order_by("id")]


def test_in_order_sequence_applies_every_move(tmp_path):
    import_events(tmp_path, reserved(), settled(), returned())

    trade = Trade.objects.get()
    assert trade.status == "returned"
    assert moves() == [
        ("", "reserved", "applied"),
        ("reserved", "settled", "applied"),
        ("settled", "returned", "applied"),
    ]
    assert trade.reserved_at.isoformat() == "2026-06-28T20:13:11+00:00"
    assert trade.final_at.isoformat() == "2026-06-28T20:15:03+00:00"


def test_settled_before_reserved_stays_settled_and_records_the_late_reserved(tmp_path):
    import_events(tmp_path, settled(), reserved())

    trade = Trade.objects.get()
    assert trade.status == "settled"
    assert moves() == [("", "settled", "applied"), ("settled", "reserved", "late")]
    late = StatusChange.objects.get(outcome="late")
    assert late.flagged
    assert "reserved arrived after settled" in late.note
    # The settlement clock still starts at the upstream reserved time.
    assert trade.reserved_at.isoformat() == "2026-06-28T20:13:11+00:00"


def test_returned_before_settled_keeps_returned(tmp_path):
    import_events(tmp_path, reserved(), returned(), settled())

    trade = Trade.objects.get()
    assert trade.status == "returned"
    assert moves()[-1] == ("returned", "settled", "late")
    # The settlement clock stops at settled, which arrived last.
    assert trade.final_at.isoformat() == "2026-06-28T20:15:03+00:00"


def test_failed_then_settled_is_flagged_illegal_and_not_applied(tmp_path):
    import_events(tmp_path, reserved(), failed(), settled())

    trade = Trade.objects.get()
    assert trade.status == "failed"
    assert trade.failure_code == "insufficient_liquidity"
    assert moves()[-1] == ("failed", "settled", "illegal")
    assert "not a legal move" in StatusChange.objects.get(outcome="illegal").note


def test_the_same_status_twice_records_no_second_move(tmp_path):
    import_events(tmp_path, reserved(), reserved(), settled(), settled())

    assert moves() == [("", "reserved", "applied"), ("reserved", "settled", "applied")]


def test_one_batch_behaves_like_events_arriving_one_by_one(tmp_path):
    sequence = [settled(), reserved(), failed()]
    import_events(tmp_path, *sequence)
    together = (Trade.objects.get().status, moves())

    # The same events for another trade, one import each.
    one_by_one = [
        envelopes.trade(
            e["data"]["status"],
            transact_id="pt_live_OTHER",
            at=e["createdAt"],
            history=e["data"]["statusHistory"],
        )
        for e in sequence
    ]
    for event in one_by_one:
        import_events(tmp_path, event)

    other = Trade.objects.get(transact_id="pt_live_OTHER")
    assert other.status == together[0] == "settled"
    assert [
        (c.from_status, c.to_status, c.outcome) for c in other.status_changes.order_by("id")
    ] == together[1]


def test_moves_record_their_source_and_event(tmp_path):
    first = reserved()
    import_events(tmp_path, first)

    change = StatusChange.objects.get()
    assert change.source == "import"
    assert change.event.event_id == first["id"]
    assert change.upstream_at.isoformat() == "2026-06-28T20:13:11+00:00"


@pytest.mark.parametrize(
    ("current", "claimed", "expected"),
    [
        (None, "settled", "applied"),
        ("reserved", "reserved", "repeat"),
        ("reserved", "settled", "applied"),
        ("reserved", "failed", "applied"),
        ("reserved", "released", "applied"),
        ("reserved", "returned", "applied"),  # settled was missed; still forward
        ("settled", "returned", "applied"),
        ("settled", "reserved", "late"),
        ("returned", "settled", "late"),
        ("returned", "reserved", "late"),
        ("failed", "reserved", "late"),
        ("failed", "settled", "illegal"),
        ("settled", "failed", "illegal"),
        ("released", "settled", "illegal"),
        ("returned", "failed", "illegal"),
    ],
)
def test_every_move_is_classified_by_the_contract_table(current, claimed, expected):
    assert states.classify(current, claimed) == expected


def test_an_illegal_move_from_a_status_read_overrides_and_is_flagged():
    assert states.classify("failed", "settled", authoritative=True) == "override"
    assert states.classify("settled", "reserved", authoritative=True) == "late"


def test_a_late_event_does_not_blank_what_a_newer_one_brought(tmp_path):
    import_events(tmp_path, settled())
    late = reserved()
    del late["data"]["deliverAmount"]
    late["data"]["rate"] = None

    import_events(tmp_path, late)

    trade = Trade.objects.get()
    assert trade.status == "settled"
    assert str(trade.deliver_value.normalize()) == "107.31"
    assert trade.rate is not None
    assert trade.updated_at.isoformat() == "2026-06-28T20:15:03+00:00"
