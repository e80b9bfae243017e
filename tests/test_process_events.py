"""``ingest.tasks.process_events``: a batch of stored webhook events applied
in one transaction, and one bad event in it failing alone (issue 14, S4)."""

import pytest

from ingest import pipeline, tasks
from records.models import Trade, WebhookEvent
from tests import envelopes


@pytest.mark.parametrize(
    "outer",
    [
        pytest.param(False, marks=pytest.mark.django_db(transaction=True), id="as-the-worker"),
        pytest.param(True, marks=pytest.mark.django_db, id="inside-a-transaction"),
    ],
)
def test_a_bad_event_in_a_batch_fails_alone(outer, caplog):
    """The bad one is marked failed with why; the rest of its batch is
    applied, and its failure counts no attempt against them. Run as the
    worker runs it (autocommit) and inside a transaction (eager tasks),
    where the batch's rollback is a savepoint's."""
    sent = [envelopes.trade("reserved", transact_id=f"pt_live_ALONE{n}") for n in range(4)]
    stored = pipeline.store([pipeline.parse_envelope(e) for e in sent], "webhook")
    bad = stored[1].pk
    # Stored, then spoiled: its payload no longer meets the contract.
    WebhookEvent.objects.filter(pk=bad).update(payload={"id": sent[1]["id"]})

    with caplog.at_level("WARNING", logger="ingest.tasks"):
        assert tasks.process_events([s.pk for s in stored]) == 3

    states = dict(WebhookEvent.objects.values_list("pk", "state"))
    assert states == {s.pk: ("failed" if s.pk == bad else "processed") for s in stored}
    failed = WebhookEvent.objects.get(pk=bad)
    assert failed.attempts == 1
    assert failed.last_error.startswith("ContractError")
    # Processed once each: their one attempt, none for the bad one's failure.
    assert set(WebhookEvent.objects.exclude(pk=bad).values_list("attempts", flat=True)) == {1}
    assert Trade.objects.filter(transact_id__startswith="pt_live_ALONE").count() == 3
    assert "applying 4 events together failed (ContractError" in caplog.text


@pytest.mark.django_db
def test_a_batch_is_applied_in_the_order_it_was_stored_whatever_order_it_came_in():
    first = envelopes.trade("reserved", transact_id="pt_live_ORDER1")
    then = envelopes.trade("settled", transact_id="pt_live_ORDER1")
    stored = pipeline.store([pipeline.parse_envelope(e) for e in (first, then)], "webhook")

    assert tasks.process_events([stored[1].pk, stored[0].pk]) == 2

    trade = Trade.objects.get(transact_id="pt_live_ORDER1")
    assert trade.status == "settled"
    assert list(trade.status_changes.order_by("pk").values_list("to_status", flat=True)) == [
        "reserved",
        "settled",
    ]


@pytest.mark.django_db(transaction=True)
def test_a_sweep_tries_a_bad_event_once_and_leaves_its_next_attempt_to_the_next_sweep(settings):
    """A sweep used to pick the oldest waiting events again after each batch:
    a bad event at the front spent all its attempts in one run, and every
    batch behind it was failed and applied one by one again for it."""
    settings.OPOOLS_SWEEP_GRACE_SECONDS = 0
    sent = [envelopes.trade("reserved", transact_id=f"pt_live_SWEEP{n}") for n in range(5)]
    stored = pipeline.store([pipeline.parse_envelope(e) for e in sent], "webhook")
    bad = stored[0].pk  # the oldest: first in every batch
    WebhookEvent.objects.filter(pk=bad).update(payload={"id": sent[0]["id"]})

    assert tasks.sweep_pending_events(batch_size=2) == 4

    failed = WebhookEvent.objects.get(pk=bad)
    assert (failed.state, failed.attempts) == ("failed", 1)
    assert set(WebhookEvent.objects.exclude(pk=bad).values_list("state", "attempts")) == {
        ("processed", 1)
    }
    # The next run tries it once more, and so on until MAX_ATTEMPTS.
    for attempt in range(2, tasks.MAX_ATTEMPTS + 2):
        assert tasks.sweep_pending_events(batch_size=2) == 0
        assert WebhookEvent.objects.get(pk=bad).attempts == min(attempt, tasks.MAX_ATTEMPTS)
