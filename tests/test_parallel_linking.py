"""Two workers applying at the same moment never lose an identifier (issue 15, item 1).

A delivery report (or a ledger entry) applied while the event (or trade) it
refers to is being applied by another worker cannot see that order yet: it
is kept waiting. These tests force every interleaving that matters with real
PostgreSQL connections (one per thread): the worker applying the event is
stopped after each of its statements of ``ingest.linking`` in turn, the other
worker commits while it waits, then it goes on. Whatever the moment, every
id of both events is in the identifier index, and the re-link sweep joins
the waiting ones to their order.
"""

import itertools

import pytest

from ingest import linking, pipeline
from ingest.contract import parse_envelope
from records.models import DeliveryAttempt, Identifier, Order, TradeNewest, WebhookEvent
from tests import envelopes
from tests.workers import Worker, applying, pause_in, stored

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _pause_points(monkeypatch):
    pause_in(monkeypatch, linking)


_ids = itertools.count(1)


def scenario(kind):
    """A new trade event and a record about it (a delivery report about the
    event, or a ledger entry of the trade), both stored, neither applied.
    Returns the pks, the record's ids that must be searchable, and the order's key."""
    n = next(_ids)
    reference = f"order_race_{n}"
    trade = envelopes.trade("reserved", transact_id=f"pt_live_RACE{n}", reference=reference)
    if kind == "delivery":
        record = envelopes.delivery(trade["id"])
        ids = {(record["id"], "event")}
    else:
        record = envelopes.ledger(f"ledger_race_{n}", transact_id=trade["data"]["transactId"])
        ids = {(record["id"], "event"), (record["data"]["ledgerId"], "ledger")}
    return stored(trade), stored(record), ids, reference


@pytest.fixture
def known_partner():
    """The partner and pool exist (committed) before the race, as they would
    in production; only the order and trade are new."""
    pipeline.ingest([parse_envelope(envelopes.trade("reserved"))], "import")


def index_of(ids):
    """{(value, kind): [order pk or None, ...]} for ``ids``."""
    found = {key: [] for key in ids}
    for value, kind, order in Identifier.objects.filter(
        value__in=[value for value, _ in ids]
    ).values_list("value", "kind", "order_id"):
        if (value, kind) in found:
            found[value, kind].append(order)
    return found


def linked(ids, reference):
    order = Order.objects.get(partner_reference=reference).pk
    return index_of(ids) == {key: [order] for key in ids}


@pytest.mark.parametrize("kind", ["delivery", "ledger"])
def test_a_record_committed_while_its_event_is_being_linked_keeps_its_ids(known_partner, kind):
    lost = []
    for pause_after in itertools.count(1):
        event, record, ids, reference = scenario(kind)
        first = Worker(applying(event), pause_after=pause_after)
        paused = first.start_and_stop()
        # The other worker applies the record and commits meanwhile.
        second = Worker(applying(record))
        second.start_and_stop()
        second.finish()
        first.finish()

        # Every id is searchable at once (linked, or waiting for the sweep)...
        searchable = all(index_of(ids).values())
        # ...and what is still waiting, the sweep links.
        linking.relink_waiting()
        if not (searchable and linked(ids, reference)):
            lost.append(pause_after)
        assert WebhookEvent.objects.get(pk=record).order.partner_reference == reference
        if kind == "delivery":
            # ...and the stuck queue shows the reported attempt beside the trade.
            kept = TradeNewest.objects.get(trade__order__partner_reference=reference)
            assert kept.delivery.reported_by_id == record, pause_after
        if not paused:
            break  # the first worker ran out of statements: every moment was tried
    assert lost == [], f"ids lost when the record committed after statement {lost}"


def test_the_relink_sweep_loses_no_record_committed_while_it_runs(known_partner):
    lost = []
    for pause_after in itertools.count(1):
        event, early, ids, reference = scenario("delivery")
        later = stored(envelopes.delivery(WebhookEvent.objects.get(pk=event).event_id))
        later_ids = {(WebhookEvent.objects.get(pk=later).event_id, "event")}
        # Two reports read that the event has no order yet (their first
        # statement), then the event is applied and committed.
        reports = [Worker(applying(pk), pause_after=1) for pk in (early, later)]
        for report in reports:
            assert report.start_and_stop()
        applier = Worker(applying(event))
        applier.start_and_stop()
        applier.finish()
        reports[0].finish()  # a waiting row whose order is known: the sweep's work
        sweep = Worker(linking.relink_waiting, pause_after=pause_after)
        paused = sweep.start_and_stop()
        reports[1].finish()  # commits while the sweep is between statements
        sweep.finish()

        searchable = all(index_of(ids | later_ids).values())
        linking.relink_waiting()
        if not (searchable and linked(ids | later_ids, reference)):
            lost.append(pause_after)
        # Neither report saw the event, nor the event them: the sweep keeps
        # the newer attempt beside the trade (what the stuck queue shows).
        attempts = DeliveryAttempt.objects.filter(reported_by__in=(early, later))
        kept = TradeNewest.objects.get(trade__order__partner_reference=reference)
        if kept.delivery != attempts.order_by("-attempted_at", "-id").first():
            lost.append(("newest delivery", pause_after))
        if not paused:
            break
    assert lost == [], f"ids lost when a report committed after sweep statement {lost}"


def test_the_relink_sweep_is_not_held_back_by_records_whose_trade_never_came(known_partner):
    orphans = [
        envelopes.ledger(f"ledger_orphan_{n}", transact_id=f"pt_live_AAA{n}") for n in range(3)
    ]
    pipeline.ingest([parse_envelope(e) for e in orphans], "import")
    # A ledger entry that read "no trade yet" just before its trade committed.
    event, record, ids, reference = scenario("ledger")
    ledger = Worker(applying(record), pause_after=1)
    assert ledger.start_and_stop()
    trade = Worker(applying(event))
    trade.start_and_stop()
    trade.finish()
    ledger.finish()
    assert not linked(ids, reference)

    linking.relink_waiting(limit=1)

    assert linked(ids, reference)
