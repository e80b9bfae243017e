"""Re-polls of a trade: what a stuck trade's timeline, the orders list, the queue
and "Replay latest state" look like after the beat has asked 0Pools about it
again and again (every 5 minutes) and 0Pools kept answering the same thing."""

import csv
import io
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from accounts.permissions import Action
from actions import services
from actions.models import Run
from audit.models import Entry
from opspanel.celery import app
from partners.services import rotate_secret, set_endpoint
from records.models import Partner, Trade, WebhookEvent
from tests.helpers import the_beat_repolls, upstream_still_says_reserved

pytestmark = pytest.mark.django_db


# --- what the beat and 0Pools do -----------------------------------------------


def upstream_settles(upstream, transact_id, *, at):
    """0Pools settles the trade ``at`` (between two polls)."""
    httpx.post(
        f"{upstream.url}/_sandbox/trades/{transact_id}",
        json={"status": "settled", "at": at.strftime("%Y-%m-%dT%H:%M:%SZ")},
    ).raise_for_status()


def every_five_minutes(time_machine, times, transact_id, *, start=None):
    """The beat re-polls the trade ``times`` times, 5 minutes apart (from three hours
    ago unless told: the signed-in session stays fresh); returns the last moment."""
    moment = start or (timezone.now() - timedelta(hours=3)).replace(microsecond=0)
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


def poll_lines(items):
    return [item for item in items if item["kind"] == "polls"]


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
    upstream_settles(upstream, stuck.transact_id, at=last + timedelta(minutes=2))
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


# --- the stuck trade's timeline -----------------------------------------------------


def test_unchanged_repolls_are_one_folded_line_on_the_timeline(support, stuck, time_machine):
    before = timeline(support, stuck)["items"]
    last = every_five_minutes(time_machine, 20, stuck.transact_id)
    newest = WebhookEvent.objects.filter(source="poll").latest("created_at", "id")

    items = timeline(support, stuck)["items"]

    assert len(items) == len(before) + 1
    (line,) = poll_lines(items)
    assert line == items[-1]
    assert "Polled 20 times" in line["summary"]
    assert f"last at {last:%Y-%m-%d %H:%M:%S} UTC" in line["summary"]
    assert "no change" in line["summary"]
    assert line["folded"]["count"] == 20
    assert line["ids"] == {"trade": stuck.transact_id, "lastPoll": newest.event_id}
    # the scheduled audit entries fold into the line: none is listed on its own
    assert not [i for i in items if i["kind"] == "action"]
    assert Entry.objects.filter(target=stuck.transact_id, actor_name="schedule").count() == 20
    page = support.get(stuck.order.get_absolute_url()).content.decode()
    assert page.count("Polled 20 times") == 1
    for poll in WebhookEvent.objects.filter(source="poll"):
        assert f"/events/{poll.event_id}/replay" not in page


def test_a_poll_that_changes_the_status_is_its_own_item_after_the_folded_line(
    support, stuck, upstream, time_machine
):
    last = every_five_minutes(time_machine, 6, stuck.transact_id)
    upstream_settles(upstream, stuck.transact_id, at=last + timedelta(minutes=2))
    time_machine.move_to(last + timedelta(minutes=5))
    the_beat_repolls(stuck.transact_id)

    items = timeline(support, stuck)["items"]

    (line,) = poll_lines(items)
    assert "Polled 6 times" in line["summary"]
    moved = [i for i in items if i["kind"] == "status" and i["source"] == "poll"]
    assert len(moved) == 1 and "reserved → settled" in moved[0]["summary"]
    assert items.index(line) < items.index(moved[0])
    # the poll that changed something keeps its audit entry in view, and can be replayed
    changed = [i for i in items if i["kind"] == "action"]
    assert len(changed) == 1 and "reserved → settled" in changed[0]["summary"]
    page = support.get(stuck.order.get_absolute_url()).content.decode()
    assert f'href="/events/{moved[0]["ids"]["event"]}/replay"' in page


def test_a_person_who_re_polls_stays_visible_with_their_reason(
    client, operations_user, stuck, time_machine, django_capture_on_commit_callbacks
):
    client.force_login(operations_user)
    last = every_five_minutes(time_machine, 5, stuck.transact_id)
    time_machine.move_to(last + timedelta(minutes=1))
    url = f"/trades/{stuck.transact_id}/repoll"
    form = client.get(url).context["form"]
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                url,
                {
                    "key": form.initial["key"],
                    "drawn": form.initial["drawn"],
                    "reason": "ticket 4711: partner says pending",
                },
            )
    finally:
        app.conf.task_always_eager = False
    assert response.status_code == 302
    every_five_minutes(time_machine, 5, stuck.transact_id, start=last + timedelta(minutes=5))

    items = timeline(client, stuck)["items"]

    lines = poll_lines(items)
    assert [line["folded"]["count"] for line in lines] == [5, 5]
    (person,) = [i for i in items if i["kind"] == "action"]
    assert "Re-poll of" in person["summary"] and "by olga-operations" in person["summary"]
    assert "Reason: ticket 4711: partner says pending" in person["summary"]
    assert items.index(lines[0]) < items.index(person) < items.index(lines[1])


def test_the_timeline_of_a_much_polled_trade_makes_the_same_number_of_queries(
    support, stuck, time_machine, django_assert_max_num_queries
):
    every_five_minutes(time_machine, 20, stuck.transact_id)

    # as tests/test_timeline.py counts them
    with django_assert_max_num_queries(14):
        response = support.get(stuck.order.get_absolute_url())

    assert response.status_code == 200
    assert b"Polled 20 times" in response.content


def test_a_trade_polled_past_the_cap_keeps_its_first_events_on_the_timeline(
    support, stuck, time_machine, monkeypatch
):
    from timeline import build

    first = timeline(support, stuck)["items"]
    monkeypatch.setattr(build, "MAX_EVENTS", 8)
    every_five_minutes(time_machine, 12, stuck.transact_id)

    data = timeline(support, stuck)

    assert data["items"][: len(first)] == first
    assert data["truncated"] is True
    (line,) = poll_lines(data["items"])
    assert line["folded"]["count"] == 8


# --- the orders list and the queue --------------------------------------------------


def test_unchanged_repolls_do_not_move_the_order_in_the_orders_list(support, stuck, time_machine):
    before = orders_csv(support)

    every_five_minutes(time_machine, 20, stuck.transact_id)

    assert orders_csv(support) == before


def test_a_poll_that_changes_the_status_is_activity(support, stuck, upstream, time_machine):
    last = every_five_minutes(time_machine, 3, stuck.transact_id)
    upstream_settles(upstream, stuck.transact_id, at=last + timedelta(minutes=2))
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
