"""An import batch is written once per event, already applied; a webhook that
stores one of its events meanwhile sends it back the webhook's way.

The import worker (a thread, its own PostgreSQL connection) stops after the
statement that finds which of its events are stored already; the webhook
then stores one of them (committed, pending). Going on, the import finds
that event taken, rolls the batch back to its savepoint and stores and
applies it the webhook's way: every event is stored once and applied once.
"""

import pytest

from ingest import pipeline
from ingest.contract import parse_envelope
from records.models import StatusChange, WebhookEvent
from tests import envelopes
from tests.workers import Worker, applying, pause_in, stored

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_event_the_webhook_stores_during_an_import_batch_is_applied_once(monkeypatch):
    pause_in(monkeypatch, pipeline)
    raced = envelopes.trade("reserved", transact_id="pt_live_RACEIMP1", reference="race_imp_1")
    other = envelopes.trade("reserved", transact_id="pt_live_RACEIMP2", reference="race_imp_2")
    results = []
    importing = Worker(
        lambda: results.extend(
            pipeline.ingest([parse_envelope(raced), parse_envelope(other)], "import")
        ),
        pause_after=1,
    )
    assert importing.start_and_stop()  # it knows which are stored: none yet

    webhook_pk = stored(raced)
    importing.finish()
    applying(webhook_pk)()

    assert [(r.event_id, r.duplicate) for r in results] == [
        (raced["id"], True),
        (other["id"], False),
    ]
    assert results[0].pk == webhook_pk
    assert WebhookEvent.objects.get(pk=webhook_pk).duplicate_count == 1
    assert set(WebhookEvent.objects.values_list("event_id", "source", "state")) == {
        (raced["id"], "webhook", "processed"),
        (other["id"], "import", "processed"),
    }
    assert StatusChange.objects.filter(event__event_id=raced["id"]).count() == 1
    assert StatusChange.objects.filter(event__event_id=other["id"]).count() == 1
