"""Whether a status move was late is decided by when its event reached the panel,
not by when a worker got to it (issue 15, item 2).

After an outage the sweep and the re-sent tasks race through a backlog, and a
trade's events can be applied newest first. The trade's history must read as
if they had been applied in the order they arrived: no move is flagged late
unless its event arrived after a newer status.
"""

import itertools

import pytest

from ingest import linking, pipeline, tasks
from ingest.contract import parse_envelope
from records.models import StatusChange, Trade, WebhookEvent
from tests import envelopes
from tests.conftest import post_event
from tests.workers import Worker, applying, pause_in, stored

pytestmark = pytest.mark.django_db

T0 = "2026-06-28T20:13:11Z"
T1 = "2026-06-28T20:15:03Z"
T2 = "2026-06-28T21:00:00Z"
RESERVED = [{"status": "reserved", "at": T0}]
SETTLED = [*RESERVED, {"status": "settled", "at": T1}]
RETURNED = [*SETTLED, {"status": "returned", "at": T2}]

IN_ORDER = [
    ("", "reserved", "applied"),
    ("reserved", "settled", "applied"),
    ("settled", "returned", "applied"),
]


def arrive(client, *events):
    """The events reach the panel through the webhook, in this order; none is
    applied yet (the tasks were lost with the broker). Returns their pks."""
    for event in events:
        assert post_event(client, event).status_code == 202
    pks = dict(WebhookEvent.objects.values_list("event_id", "pk"))
    return [pks[event["id"]] for event in events]


def reserved():
    return envelopes.trade("reserved", at=T0, history=RESERVED)


def settled():
    return envelopes.trade("settled", at=T1, history=SETTLED)


def returned():
    return envelopes.trade("returned", at=T2, history=RETURNED)


def moves():
    return [(c.from_status, c.to_status, c.outcome) for c in StatusChange.objects.order_by("id")]


def flags(support):
    response = support.get("/orders/ptn_acme/order_7841/", {"format": "json"})
    assert response.status_code == 200
    return [f["code"] for f in response.json()["flags"] if f["code"].endswith("_move")]


def sweep(settings):
    settings.OPOOLS_SWEEP_GRACE_SECONDS = 0
    tasks.sweep_pending_events()


@pytest.mark.parametrize(
    "backlog",
    [
        "re-sent tasks, newest first",
        "a re-sent task for the newest, then the sweep",
        "the middle one, then the sweep",
    ],
)
def test_a_backlog_applied_out_of_arrival_order_flags_nothing_late(
    client, support, settings, backlog
):
    first, second, third = arrive(client, reserved(), settled(), returned())

    if backlog == "re-sent tasks, newest first":
        for pk in (third, second, first):
            tasks.process_event(pk)
    elif backlog == "a re-sent task for the newest, then the sweep":
        tasks.process_event(third)
        sweep(settings)
    else:
        tasks.process_event(second)
        sweep(settings)

    assert not WebhookEvent.objects.exclude(state="processed").exists()
    trade = Trade.objects.get()
    assert trade.status == "returned"
    assert moves() == IN_ORDER
    assert flags(support) == []
    assert trade.reserved_at.isoformat() == "2026-06-28T20:13:11+00:00"
    assert trade.final_at.isoformat() == "2026-06-28T20:15:03+00:00"


def test_a_webhook_that_arrived_after_a_newer_status_is_still_late(client, support):
    for pk in arrive(client, reserved(), settled()):
        tasks.process_event(pk)
    (resent,) = arrive(client, reserved())  # the network sends it again, late

    tasks.process_event(resent)

    assert moves() == [IN_ORDER[0], IN_ORDER[1], ("settled", "reserved", "late")]
    assert flags(support) == ["late_move"]


def test_a_late_webhook_applied_before_the_ones_it_came_after_is_still_the_late_one(
    client, support
):
    # Arrived: reserved, settled, then reserved again (late). Applied newest first.
    first, second, late = arrive(client, reserved(), settled(), reserved())

    for pk in (late, second, first):
        tasks.process_event(pk)

    assert moves() == [IN_ORDER[0], IN_ORDER[1], ("settled", "reserved", "late")]
    late_move = StatusChange.objects.get(outcome="late")
    assert late_move.event_id == late
    assert flags(support) == ["late_move"]
    assert Trade.objects.get().status == "settled"


def test_a_status_read_keeps_its_place_in_arrival_order(client, support, settings):
    # A settled webhook arrives, then the panel reads the trade (authoritative);
    # the webhook is applied after the read.
    (webhook,) = arrive(client, settled())
    read = envelopes.trade("reserved", at=T0, history=RESERVED)
    pipeline.ingest([parse_envelope(read)], "poll")
    tasks.process_event(webhook)

    # In arrival order: settled applied, then the read of reserved is late.
    assert moves() == [("", "settled", "applied"), ("settled", "reserved", "late")]
    assert Trade.objects.get().status == "settled"


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_waited_for_a_newer_status_does_not_call_its_older_one_late(monkeypatch):
    # Two workers, one connection each: the one applying settled holds the new
    # trade (paused before its commit) while the one applying reserved, which
    # arrived first, waits for it.
    pause_in(monkeypatch, linking)
    first, second = stored(reserved()), stored(settled())
    newer = Worker(applying(second), pause_after=1)
    assert newer.start_and_stop()
    older = Worker(applying(first))
    older.start_until_blocked()
    newer.finish()
    older.finish()

    assert moves() == IN_ORDER[:2]
    assert Trade.objects.get().status == "settled"


def test_any_order_of_applying_gives_the_history_of_the_arrival_order(client):
    def events(n):
        tid = f"pt_live_PERM{n}"
        return [
            envelopes.trade(status, transact_id=tid, reference=f"perm_{n}", at=at, history=h)
            for status, at, h in [
                ("reserved", T0, RESERVED),
                ("settled", T1, SETTLED),
                ("failed", T1, [*RESERVED, {"status": "failed", "at": T1}]),
                ("reserved", T0, RESERVED),  # sent again, after the others
            ]
        ]

    def history(n):
        trade = Trade.objects.get(transact_id=f"pt_live_PERM{n}")
        changes = trade.status_changes.order_by("event_id")
        return trade.status, [(c.from_status, c.to_status, c.outcome) for c in changes]

    for pk in arrive(client, *events(0)):
        tasks.process_event(pk)
    expected = history(0)
    assert expected == (
        "settled",
        [
            ("", "reserved", "applied"),
            ("reserved", "settled", "applied"),
            ("settled", "failed", "illegal"),
            ("settled", "reserved", "late"),
        ],
    )

    for n, order in enumerate(itertools.permutations(range(4)), start=1):
        pks = [stored(event) for event in events(n)]
        for i in order:
            tasks.process_event(pks[i])
        assert history(n) == expected, order
