"""Re-polls of a trade: what a stuck trade's timeline, the orders list, the queue
and "Replay latest state" look like after the beat has asked 0Pools about it
again and again (every 5 minutes) and 0Pools kept answering the same thing."""

import csv
import io
import itertools
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from accounts.permissions import Action
from actions import services
from actions.models import Run
from partners.services import rotate_secret, set_endpoint
from records.models import Partner, Trade, WebhookEvent

pytestmark = pytest.mark.django_db

_keys = itertools.count(1)


# --- what the beat and 0Pools do -----------------------------------------------


def upstream_still_says_reserved(upstream, transact_id):
    """0Pools' status API answers ``reserved`` for the trade, as it did when it was made."""
    truth = httpx.get(f"{upstream.url}/_sandbox/trades/{transact_id}").json()
    history = [step for step in truth["statusHistory"] if step["status"] == "reserved"][:1]
    truth |= {"status": "reserved", "statusHistory": history, "updatedAt": history[0]["at"]}
    httpx.post(f"{upstream.url}/_sandbox/trades/{transact_id}", json=truth).raise_for_status()


def the_beat_repolls(transact_id):
    """What ``queues.tasks.repoll_stuck_trades`` does for one stuck trade."""
    run = Run.objects.create(
        key=f"schedule-test-{next(_keys)}",
        user=None,
        action=Action.BULK_REPOLL,
        target="1 stuck trades (scheduled)",
        reason="scheduled re-poll of trades stuck past their pool SLA",
        params={"targets": [transact_id], "scheduled": True},
        total=1,
        state=Run.State.RUNNING,
    )
    services.carry_out(run)
    run.refresh_from_db()
    assert (run.done, run.failed) == (1, 0)


def every_five_minutes(time_machine, times, transact_id, *, start=None):
    """The beat re-polls the trade ``times`` times, 5 minutes apart (from three hours
    ago unless told: the signed-in session stays fresh); returns the last moment."""
    moment = start or timezone.now() - timedelta(hours=3)
    for _ in range(times):
        time_machine.move_to(moment)
        the_beat_repolls(transact_id)
        moment += timedelta(minutes=5)
    return moment - timedelta(minutes=5)


@pytest.fixture
def stuck(network, upstream):
    trade = Trade.objects.select_related("order__partner").get(
        order__partner_reference="scn_stuck_reserved"
    )
    upstream_still_says_reserved(upstream, trade.transact_id)
    return trade


def timeline(client, trade):
    response = client.get(trade.order.get_absolute_url(), {"format": "json"})
    assert response.status_code == 200
    return response.json()


def orders_csv(client):
    response = client.get("/orders/", {"format": "csv"})
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return list(csv.DictReader(io.StringIO(body.decode())))


# --- "Replay latest state" -------------------------------------------------------


def test_replay_latest_state_sends_the_0pools_event_however_many_polls_came_after_it(
    support, stuck, time_machine
):
    sent = WebhookEvent.objects.exclude(source="poll").get(
        subject_id=stuck.transact_id, type="trade.reserved"
    )
    every_five_minutes(time_machine, 25, stuck.transact_id)
    assert WebhookEvent.objects.filter(subject_id=stuck.transact_id, source="poll").count() == 25

    picked = support.get(f"/trades/{stuck.transact_id}/replay-latest")

    assert picked.status_code == 302
    assert picked["Location"] == f"/events/{sent.event_id}/replay"
    page = support.get(picked["Location"]).content.decode()
    assert "Same event id (the partner dedupes)" in page
    assert "never seen" not in page


def test_a_settled_trade_polled_many_times_still_replays_the_0pools_settled_event(
    support, network, upstream
):
    trade = Trade.objects.get(order__partner_reference="scn_partner_never_told")
    sent = WebhookEvent.objects.get(subject_id=trade.transact_id, type="trade.settled")
    for _ in range(21):
        the_beat_repolls(trade.transact_id)

    picked = support.get(f"/trades/{trade.transact_id}/replay-latest")

    assert picked["Location"] == f"/events/{sent.event_id}/replay"


def test_a_status_only_our_poll_saw_replays_that_poll_and_the_page_says_so_plainly(
    support, stuck, upstream, time_machine
):
    last = every_five_minutes(time_machine, 3, stuck.transact_id)
    httpx.post(f"{upstream.url}/_sandbox/trades/{stuck.transact_id}", json={"status": "settled"})
    every_five_minutes(time_machine, 4, stuck.transact_id, start=last + timedelta(minutes=5))
    stuck.refresh_from_db()
    assert stuck.status == "settled"
    # the poll that moved it: 0Pools never sent trade.settled for it
    moved = WebhookEvent.objects.get(status_changes__to_status="settled", source="poll")

    picked = support.get(f"/trades/{stuck.transact_id}/replay-latest")

    assert picked["Location"] == f"/events/{moved.event_id}/replay"
    page = support.get(picked["Location"]).content.decode()
    assert "0Pools never sent an event for this status" in page
    assert f"our own status read {moved.event_id}, an id the partner has never seen" in page
    assert "the partner dedupes" not in page


def test_a_poll_event_replayed_by_hand_where_0pools_sent_one_points_to_it(support, stuck):
    sent = WebhookEvent.objects.exclude(source="poll").get(
        subject_id=stuck.transact_id, type="trade.reserved"
    )
    the_beat_repolls(stuck.transact_id)
    poll = WebhookEvent.objects.get(subject_id=stuck.transact_id, source="poll")

    page = support.get(f"/events/{poll.event_id}/replay").content.decode()

    assert f"our own status read {poll.event_id}, an id the partner has never seen" in page
    assert f'href="/events/{sent.event_id}/replay"' in page


def test_the_bulk_replay_sends_the_0pools_event_not_a_poll(
    stuck, upstream, time_machine, operations_user
):
    sent = WebhookEvent.objects.exclude(source="poll").get(
        subject_id=stuck.transact_id, type="trade.reserved"
    )
    partner = Partner.objects.get(partner_id="ptn_acme")
    set_endpoint(partner, f"{upstream.url}/partners/ptn_acme/webhooks")
    httpx.post(
        f"{upstream.url}/_sandbox/partners/ptn_acme",
        json={"secrets": [rotate_secret(partner)], "respond": 200},
    )
    every_five_minutes(time_machine, 22, stuck.transact_id)
    run = Run.objects.create(
        key="bulk-replay-after-polls",
        user=operations_user,
        action=Action.BULK_REPLAY,
        target="1 stuck trade",
        reason="tell partners again",
        params={"targets": [stuck.transact_id]},
        state=Run.State.RUNNING,
    )

    services.carry_out(run)

    got = httpx.get(f"{upstream.url}/_sandbox/received", params={"partner": "ptn_acme"}).json()
    assert [r["webhook_id"] for r in got] == [sent.event_id]
    assert got[0]["verified"] is True


# --- the orders list and the queue --------------------------------------------------


def test_unchanged_repolls_do_not_move_the_order_in_the_orders_list(support, stuck, time_machine):
    before = orders_csv(support)

    every_five_minutes(time_machine, 20, stuck.transact_id)

    assert orders_csv(support) == before


def test_a_poll_that_changes_the_status_is_activity(support, stuck, upstream, time_machine):
    last = every_five_minutes(time_machine, 3, stuck.transact_id)
    httpx.post(f"{upstream.url}/_sandbox/trades/{stuck.transact_id}", json={"status": "settled"})
    time_machine.move_to(last + timedelta(minutes=5))
    the_beat_repolls(stuck.transact_id)

    rows = orders_csv(support)

    assert rows[0]["partnerReference"] == "scn_stuck_reserved"
    assert rows[0]["latestTradeStatus"] == "settled"
    moved = WebhookEvent.objects.get(status_changes__to_status="settled", source="poll")
    assert rows[0]["lastActivityAt"] == moved.payload["createdAt"]


def test_the_queue_still_shows_the_newest_poll(support, stuck, time_machine):
    every_five_minutes(time_machine, 20, stuck.transact_id)
    newest = WebhookEvent.objects.filter(subject_id=stuck.transact_id, source="poll").latest(
        "created_at", "id"
    )

    response = support.get("/queues/stuck")

    (row,) = [r for r in response.context["rows"] if r.transact_id == stuck.transact_id]
    assert row.last_poll.event_id == newest.event_id
    assert f'datetime="{newest.created_at.isoformat()}"' in response.content.decode()
