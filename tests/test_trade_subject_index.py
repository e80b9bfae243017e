"""event_trade_subject_idx holds trade events only (issue 14, S5): every
statement that finds events by subject must say so in the index's words,
or PostgreSQL cannot use it and reads the whole events table instead.

Each statement is caught as the code sends it, then explained with its own
parameters and sequential scans priced out: a statement whose condition
does not prove the index's shows a (disabled) sequential scan, not the index.
"""

import re
import threading
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import pytest
from django.db import connection
from django.db.models import Exists, OuterRef
from psycopg.sql import SQL, Composable

from actions.services import latest_state_event, sent_instead
from ingest.contract import parse_envelope
from ingest.pipeline import apply_stored, ingest, store
from reconciliation.services import LATE_SQL
from records.models import TRADE_EVENTS, Trade, WebhookEvent
from tests import envelopes

pytestmark = pytest.mark.django_db

INDEX = "event_trade_subject_idx"


@contextmanager
def statements():
    """Every statement sent on a psycopg cursor meanwhile (Django's and the
    pipeline's own), with its parameters."""
    sent = []
    execute = psycopg.Cursor.execute
    mine = threading.get_ident()  # not the session's Celery worker thread

    def catching(self, query, params=None, **options):
        if threading.get_ident() == mine:
            sent.append((query, params))
        return execute(self, query, params, **options)

    psycopg.Cursor.execute = catching
    try:
        yield sent
    finally:
        psycopg.Cursor.execute = execute


# An event's subject compared with a value: a look-up by subject (joins that
# go from an event to its trade, ``trade.transact_id = e.subject_id``, are not).
BY_SUBJECT = re.compile(r'\bsubject_id"? (= |IN \()')


def sql_text(query):
    return query.as_string(connection.connection) if isinstance(query, Composable) else query


def by_subject(sent):
    return [(query, params) for query, params in sent if BY_SUBJECT.search(sql_text(query))]


def plan(query, params):
    explain = SQL("EXPLAIN ") + query if isinstance(query, Composable) else "EXPLAIN " + query
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        try:
            cursor.execute(explain, params)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_seqscan")


def assert_uses_the_index(caught):
    assert caught, "no statement by subject was sent"
    for query, params in caught:
        shown = plan(query, params)
        assert INDEX in shown, shown


def parsed(*raw):
    return [parse_envelope(envelope) for envelope in raw]


def test_the_import_finds_a_trades_history_through_the_index():
    ingest(parsed(envelopes.quote("created")), "import")
    # Stored first, applied out of order: the later event is applied, then the
    # earlier one finds it in the history (the check and the history read).
    reserved = envelopes.trade("reserved", at="2026-06-28T20:15:03Z")
    settled = envelopes.trade(
        "settled",
        history=[
            {"status": "reserved", "at": "2026-06-28T20:15:03Z"},
            {"status": "settled", "at": "2026-06-28T20:16:03Z"},
        ],
    )
    first, second = store(parsed(reserved, settled), "webhook")
    with statements() as sent:
        apply_stored([second.pk])
        apply_stored([first.pk])

    caught = by_subject(sent)
    shown = [sql_text(query) for query, _ in caught]
    assert any("EXISTS" in text for text in shown)  # the check
    assert any("subject_id = ANY" in text for text in shown)  # the history read
    assert_uses_the_index(caught)
    assert Trade.objects.get().status == "settled"


def test_replay_finds_the_latest_state_and_what_was_sent_through_the_index():
    sent_by_0pools = envelopes.trade("reserved")
    read = envelopes.trade("reserved")
    ingest(parsed(envelopes.quote("created"), sent_by_0pools), "import")
    ingest(parsed(read), WebhookEvent.Source.POLL)
    poll = WebhookEvent.objects.get(event_id=read["id"])

    with statements() as sent:
        latest = latest_state_event(Trade.objects.get())
        instead = sent_instead(poll)

    assert latest.event_id == instead.event_id == sent_by_0pools["id"]
    assert_uses_the_index(by_subject(sent))


def test_the_close_finds_late_trade_events_through_the_index():
    ingest(parsed(envelopes.quote("created"), envelopes.trade("reserved")), "import")
    params = {
        "closed_at": datetime(2026, 6, 1, tzinfo=UTC),
        "start": datetime(2026, 6, 28, tzinfo=UTC),
        "end": datetime(2026, 6, 29, tzinfo=UTC),
        "subjects": ["pt_live_9A2"],
    }
    with connection.cursor() as cursor:
        cursor.execute(LATE_SQL, params)
        assert [row[3] for row in cursor.fetchall()] == ["pt_live_9A2"]

    assert_uses_the_index([(LATE_SQL, params)])


def test_the_index_holds_trade_events_only():
    ingest(
        parsed(
            envelopes.quote("created"),
            envelopes.trade("reserved"),
            envelopes.ledger(),
        ),
        "import",
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indexrelid = %s::regclass",
            [INDEX],
        )
        (definition,) = cursor.fetchone()
    assert "WHERE ((type)::text ~~ 'trade.%'::text)" in definition
    assert WebhookEvent.objects.exclude(type__startswith="trade.").count() == 2


def test_the_condition_names_the_column_as_the_query_does():
    """In a subquery Django calls the events table U0: the condition follows."""
    ingest(
        parsed(envelopes.quote("created"), envelopes.trade("reserved"), envelopes.ledger()),
        "import",
    )
    trade_events = WebhookEvent.objects.filter(TRADE_EVENTS)
    trades = Trade.objects.annotate(
        sent=Exists(trade_events.filter(subject_id=OuterRef("transact_id")))
    )

    assert [event.type for event in trade_events] == ["trade.reserved"]
    assert [trade.sent for trade in trades] == [True]
    with statements() as sent:
        list(trades.all())
    [(query, params)] = by_subject(sent)
    assert "U0" in query and INDEX in plan(query, params)
