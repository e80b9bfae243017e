"""What the stuck queue shows beside a trade is kept as the events arrive
(``ingest.newest``), and is what a fill from every stored event and attempt
gives: the newest status read and the newest delivery of an event 0Pools
sent, whatever order they arrived in."""

import pytest
from django.db import connection

from actions.services import record_replay_attempt
from bench import dataset
from ingest import newest as newest_module
from ingest import pipeline
from ingest import trades as trades_module
from ingest.contract import parse_envelope
from ingest.linking import relink_waiting
from ingest.newest import EVERY_TRADE_SQL
from outbound.signing import Delivery
from records.models import Partner, Trade, TradeNewest, WebhookEvent
from tests import envelopes
from tests.helpers import import_events, subprocess_database_url
from tests.workers import Worker, applying, pause_in, stored

pytestmark = pytest.mark.django_db(transaction=True)


def kept():
    """records_tradenewest by public ids (``bench.dataset``'s snapshot rows)."""
    return dataset.snapshot(subprocess_database_url())[1]["records_tradenewest"]


def filled_afresh():
    """The rows a fill from every stored event and attempt makes."""
    TradeNewest.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(EVERY_TRADE_SQL.as_string(connection.connection))
    return kept()


def newest(transact_id):
    return TradeNewest.objects.select_related("poll", "delivery").get(
        trade__transact_id=transact_id
    )


@pytest.mark.parametrize("batch_size", [1, 7, 500])
def test_a_network_imported_in_any_batches_keeps_what_a_fill_from_scratch_gives(
    tmp_path, sandbox_file, batch_size
):
    """The sandbox plants delivery reports before the events they report on,
    events out of order and duplicates; batches of 1 and 7 split them apart."""
    from django.core.management import call_command

    call_command("import_events", str(sandbox_file(20, 5)), batch_size=batch_size, progress="never")

    as_kept = kept()

    # Every trade of this network had an event delivered (and none was read).
    assert len(as_kept) == Trade.objects.count() > 20
    assert all(row[3] is not None and row[1] is None for row in as_kept)
    assert filled_afresh() == as_kept


def test_a_report_before_its_event_is_kept_when_the_event_arrives(tmp_path):
    sent = envelopes.trade("reserved", transact_id="pt_live_EARLY1", event_id="evt_sentEARLY1")
    report = envelopes.delivery("evt_sentEARLY1", outcome="failed", at="2026-06-28T20:16:00Z")
    import_events(tmp_path, report)
    assert not TradeNewest.objects.exists()

    import_events(tmp_path, sent)

    row = newest("pt_live_EARLY1")
    assert row.delivery.reported_by.event_id == report["id"]
    assert row.delivery.outcome == "failed"
    assert row.poll is None


def test_an_older_read_or_delivery_never_replaces_a_newer_one(tmp_path):
    sent = envelopes.trade("reserved", transact_id="pt_live_ORD1", event_id="evt_sentORD1")
    later = envelopes.delivery("evt_sentORD1", attempt=2, at="2026-06-28T20:20:00Z")
    earlier = envelopes.delivery("evt_sentORD1", attempt=1, at="2026-06-28T20:16:00Z")
    import_events(tmp_path, sent, later)
    import_events(tmp_path, earlier)
    read_late = envelopes.trade("reserved", transact_id="pt_live_ORD1", at="2026-06-28T21:00:00Z")
    read_early = envelopes.trade("reserved", transact_id="pt_live_ORD1", at="2026-06-28T20:30:00Z")
    pipeline.ingest([parse_envelope(read_late)], "poll")
    pipeline.ingest([parse_envelope(read_early)], "poll")

    row = newest("pt_live_ORD1")

    assert row.delivery.attempt == 2
    assert row.poll.event_id == read_late["id"]
    assert filled_afresh() == kept()


def test_a_replay_the_panel_sends_is_the_newest_delivery(tmp_path):
    sent = envelopes.trade("reserved", transact_id="pt_live_REPLAY1", event_id="evt_sentREPLAY1")
    import_events(tmp_path, sent, envelopes.delivery("evt_sentREPLAY1", outcome="failed"))
    event = WebhookEvent.objects.get(event_id="evt_sentREPLAY1")

    replay = record_replay_attempt(
        event, Partner.objects.get(partner_id="ptn_acme"), Delivery("succeeded", 200, 9)
    )

    assert newest("pt_live_REPLAY1").delivery == replay


def test_a_status_read_is_no_delivery_and_a_delivery_of_a_read_is_none(tmp_path):
    """Our own reads are ``poll`` events: never a delivery 0Pools made."""
    read = envelopes.trade("reserved", transact_id="pt_live_READ1", event_id="evt_readREAD1")
    pipeline.ingest([parse_envelope(read)], "poll")
    import_events(tmp_path, envelopes.delivery("evt_readREAD1"))

    row = newest("pt_live_READ1")

    assert row.poll.event_id == "evt_readREAD1"
    assert row.delivery is None


def test_a_report_and_its_event_applied_at_one_moment_are_kept_by_the_sweep(monkeypatch):
    """Two workers: the report's keeps before the event's trade exists, the
    event's before the report commits; neither sees the other's. The sweep
    that links the waiting report keeps its attempt."""
    pipeline.ingest([parse_envelope(envelopes.trade("reserved"))], "import")  # partner, pool
    pause_in(monkeypatch, newest_module)
    event = stored(envelopes.trade("reserved", transact_id="pt_live_RACE1", reference="race_1"))
    sent = WebhookEvent.objects.get(pk=event).event_id
    report = stored(envelopes.delivery(sent, outcome="failed"))

    reporting = Worker(applying(report), pause_after=1)  # paused after its keep
    assert reporting.start_and_stop()
    applier = Worker(applying(event))
    applier.start_and_stop()
    applier.finish()
    reporting.finish()
    assert not TradeNewest.objects.filter(trade__transact_id="pt_live_RACE1").exists()

    relink_waiting()

    assert newest("pt_live_RACE1").delivery.reported_by_id == report


def test_a_waiting_report_linked_by_a_later_report_is_kept(monkeypatch):
    """The newer attempt waits (its report raced the event, as above); an
    older report of the same event, applied before the sweep, links it: the
    newer attempt is kept then, not left behind for a sweep that no longer
    sees it waiting."""
    pipeline.ingest([parse_envelope(envelopes.trade("reserved"))], "import")
    pause_in(monkeypatch, newest_module)
    event = stored(envelopes.trade("reserved", transact_id="pt_live_LINK1", reference="link_1"))
    sent = WebhookEvent.objects.get(pk=event).event_id
    newer = stored(envelopes.delivery(sent, attempt=2, at="2026-06-28T20:20:00Z"))
    reporting = Worker(applying(newer), pause_after=1)
    assert reporting.start_and_stop()
    applier = Worker(applying(event))
    applier.start_and_stop()
    applier.finish()
    reporting.finish()

    applying(stored(envelopes.delivery(sent, attempt=1, at="2026-06-28T20:16:00Z")))()
    relink_waiting()

    assert newest("pt_live_LINK1").delivery.reported_by_id == newer
    assert kept() == filled_afresh()


def test_a_report_and_an_event_of_one_trade_applied_at_one_moment_do_not_deadlock(monkeypatch):
    """One worker applies an event of a trade (holding the trade's row, then
    keeping its newest); another applies a report about an earlier event of
    the same trade meanwhile and commits. A database foreign key from the
    kept row to the trade made the second wait for the first at commit, and
    the first for the second: a deadlock."""
    pipeline.ingest([parse_envelope(envelopes.trade("reserved"))], "import")
    first = envelopes.trade(
        "reserved", transact_id="pt_live_DL1", reference="dl_1", event_id="evt_dlY0001"
    )
    pipeline.ingest([parse_envelope(first)], "import")
    # A report of the next event, before that event: its sent event keeps it.
    early = envelopes.delivery("evt_dlX0001", outcome="failed", at="2026-06-28T20:18:00Z")
    pipeline.ingest([parse_envelope(early)], "import")
    settled = envelopes.trade(
        "settled",
        transact_id="pt_live_DL1",
        reference="dl_1",
        event_id="evt_dlX0001",
        history=[
            {"status": "reserved", "at": "2026-06-28T20:15:03Z"},
            {"status": "settled", "at": "2026-06-28T20:17:03Z"},
        ],
        at="2026-06-28T20:17:03Z",
    )
    event = stored(settled)
    report = stored(envelopes.delivery("evt_dlY0001", outcome="failed"))
    pause_in(monkeypatch, trades_module)
    applier = Worker(applying(event), pause_after=2)  # the trade's row locked
    assert applier.start_and_stop()

    reporting = Worker(applying(report))
    assert not reporting.start_and_stop()  # finished: it waited for nothing
    reporting.finish()
    applier.finish()

    assert newest("pt_live_DL1").delivery.reported_by.event_id == early["id"]
    assert kept() == filled_afresh()
