"""/events/<eventId>/: one stored event, how it came, the order it belongs to and
every delivery of it to the partner; as a page and as JSON; and the links to it."""

import hashlib
import html
import re
from contextlib import contextmanager

import orjson
import pytest

from actions.services import record_replay_attempt
from audit import log as audit
from audit.models import Entry
from opspanel.celery import app
from outbound.signing import Delivery
from records.models import Partner, Trade, WebhookEvent
from sandbox.forbidden import FORBIDDEN_KEYS, FORBIDDEN_MARKERS
from tests import envelopes
from tests.conftest import SECRET, post_event
from tests.helpers import import_events

pytestmark = pytest.mark.django_db

HISTORY = [
    {"status": "reserved", "at": "2026-06-28T20:13:11Z"},
    {"status": "settled", "at": "2026-06-28T20:15:03Z"},
]


@pytest.fixture
def tasks_run(django_capture_on_commit_callbacks):
    """``with tasks_run():`` runs the tasks sent on commit inside the block, in this thread."""

    @contextmanager
    def run():
        app.conf.task_always_eager = True
        try:
            with django_capture_on_commit_callbacks(execute=True):
                yield
        finally:
            app.conf.task_always_eager = False

    return run


@pytest.fixture
def settled(client, tasks_run, tmp_path):
    """order_7841's trade.settled: signed, received twice, delivered to the partner
    once by 0Pools (reported, failed) and once by a replay of ours (succeeded)."""
    envelope = envelopes.trade("settled", history=HISTORY, event_id="evt_settled01")
    with tasks_run():
        assert post_event(client, envelope).status_code == 202
    assert post_event(client, envelope).status_code == 200  # the same event again
    report = envelopes.delivery("evt_settled01", attempt=1, outcome="failed")
    report["id"] = "evt_report01"
    import_events(tmp_path, report)
    event = WebhookEvent.objects.get(event_id="evt_settled01")
    record_replay_attempt(
        event, Partner.objects.get(partner_id="ptn_acme"), Delivery("succeeded", 200, 35)
    )
    return event


def page(client, event_id):
    response = client.get(f"/events/{event_id}/")
    assert response.status_code == 200
    return response.content.decode()


def deliveries(text):
    """The rows of the deliveries table, as text per cell."""
    body = re.search(r'<table class="plain list" id="event-deliveries">(.*?)</table>', text, re.S)
    rows = re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)[1:]
    return [
        [" ".join(html.unescape(re.sub(r"<[^>]+>", "", cell)).split()) for cell in cells]
        for cells in (re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows)
    ]


def fact(text, element_id):
    found = re.search(rf'id="{element_id}">(.*?)</(?:dd|p|span)>', text, re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).split())


# --- the page -----------------------------------------------------------------


def test_the_page_tells_how_the_event_came_and_what_became_of_it(support, settled):
    text = page(support, "evt_settled01")

    label = f"#1 sha256:{hashlib.sha256(SECRET.encode()).hexdigest()[:8]}"
    assert fact(text, "event-signature") == f"verified with secret {label}"
    assert SECRET not in text
    assert "2026-06-28 20:15:03" in text  # when it happened upstream, beside when we got it
    assert "later)" in text
    assert fact(text, "event-duplicates").startswith("1 more, last ")
    assert fact(text, "event-processing").startswith("processed after 1 attempt")
    assert fact(text, "event-state") == "processed"
    order = settled.order
    assert f'<a href="{order.get_absolute_url()}">' in text


def test_every_delivery_is_listed_and_says_who_sent_it(support, settled):
    rows = deliveries(page(support, "evt_settled01"))

    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [
        ("1", "0Pools (reported by evt_report01)", "failed", "500"),
        ("2", "the panel (a replay)", "succeeded", "200"),
    ]
    assert '<a href="/events/evt_report01/">evt_report01</a>' in page(support, "evt_settled01")


def test_the_stored_envelope_is_pretty_printed_and_nothing_else(support, settled):
    text = page(support, "evt_settled01")

    shown = html.unescape(
        re.search(r'<pre class="payload" id="event-payload">(.*?)</pre>', text, re.S).group(1)
    )
    assert orjson.loads(shown) == settled.payload
    assert '\n  "data": {\n    ' in shown


def test_the_replay_button_goes_to_the_guarded_confirm_step(support, settled):
    text = page(support, "evt_settled01")

    assert 'id="replay-button" href="/events/evt_settled01/replay"' in text


def test_an_event_ahead_of_its_trade_says_what_it_waits_for(support, tmp_path):
    ledger = envelopes.ledger("ledger_early_01", transact_id="pt_live_LATE1")
    import_events(tmp_path, ledger)

    text = page(support, ledger["id"])

    assert fact(text, "event-order") == "waiting for pt_live_LATE1"
    assert "not checked: an import skips the signature check" in text
    assert "No delivery of this event to the partner is recorded" in text
    data = support.get(f"/events/{ledger['id']}/", {"format": "json"}).json()
    assert (data["order"], data["waitingFor"]) == (None, "pt_live_LATE1")


def test_a_report_of_a_delivery_links_to_the_event_it_delivered(support, settled):
    text = page(support, "evt_report01")

    assert '<a href="/events/evt_settled01/">evt_settled01</a>' in text


def test_the_json_tells_the_same_facts(support, settled):
    response = support.get("/events/evt_settled01/", HTTP_ACCEPT="application/json")

    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert (data["id"], data["type"], data["source"]) == (
        "evt_settled01",
        "trade.settled",
        "webhook",
    )
    assert data["signature"]["checked"] is True
    assert data["signature"]["verifiedWith"].startswith("#1 sha256:")
    assert (data["createdAt"], data["duplicates"]["count"]) == ("2026-06-28T20:15:03Z", 1)
    assert data["processing"] == {
        "state": "processed",
        "attempts": 1,
        "lastError": None,
        "processedAt": data["processing"]["processedAt"],
    }
    assert data["order"]["partnerReference"] == "order_7841"
    assert data["order"]["url"] == settled.order.get_absolute_url()
    assert [(a["attempt"], a["sentBy"], a["reportedBy"]) for a in data["deliveryAttempts"]] == [
        (1, "0pools", "evt_report01"),
        (2, "panel", None),
    ]
    assert data["payload"] == settled.payload
    assert support.get("/events/evt_settled01/", {"format": "json"}).json() == data


def test_nothing_the_allowlist_dropped_reaches_the_page_or_the_json(support, network):
    leaky = WebhookEvent.objects.filter(dropped_keys__gt=0).order_by("id")[:5]
    assert len(leaky) == 5

    for event in leaky:
        text = page(support, event.event_id)
        raw = support.get(f"/events/{event.event_id}/", {"format": "json"}).content.decode()
        for shown in (text, raw):
            assert not [m for m in FORBIDDEN_MARKERS if m in shown]
            assert not [k for k in FORBIDDEN_KEYS if f'"{k}"' in shown]
        assert "(counted, never stored)" in text


def test_the_page_is_a_handful_of_queries(support, settled, django_assert_max_num_queries):
    # The session, the user and the role (3), the event with its order (1), its
    # deliveries with their reports (1), the idle timeout's session save (3).
    with django_assert_max_num_queries(8):
        text = page(support, "evt_settled01")
    with django_assert_max_num_queries(8):
        support.get("/events/evt_settled01/", {"format": "json"})
    assert "evt_report01" in text


# --- not found ------------------------------------------------------------------


def test_an_unknown_event_is_404_and_says_why(support, settled):
    response = support.get("/events/evt_nosuch1/")

    assert response.status_code == 404
    assert (
        "No event evt_nosuch1 is stored here. Ids are case-sensitive." in response.content.decode()
    )


def test_something_that_is_not_an_event_id_is_404_and_says_so(support, settled):
    response = support.get("/events/pt_live_9A2/")

    assert response.status_code == 404
    assert "That is not an event id" in response.content.decode()


def test_an_unknown_event_asked_as_json_is_a_json_404(support, settled):
    response = support.get("/events/evt_nosuch1/", {"format": "json"})

    assert response.status_code == 404
    assert "No event evt_nosuch1" in response.json()["error"]


def test_any_other_404_shows_no_internal_message(support, settled):
    response = support.get("/orders/ptn_acme/no_such_order/")

    assert response.status_code == 404
    assert "matches the given query" not in response.content.decode()
    assert "There is no order no_such_order of partner ptn_acme." in response.content.decode()


# --- links to it -------------------------------------------------------------------


def test_the_events_list_links_each_event_to_its_page(support, settled):
    text = support.get("/events/").content.decode()

    assert '<a href="/events/evt_settled01/">evt_settled01</a>' in text


def test_timeline_items_link_to_their_events(support, settled):
    text = support.get(settled.order.get_absolute_url()).content.decode()

    assert 'class="event-link" href="/events/evt_settled01/"' in text


def test_the_audit_log_links_a_target_that_is_an_event(support, support_user, settled):
    audit.record(
        actor=support_user,
        action="event.replay",
        target="evt_settled01",
        order=settled.order,
        reason="ticket 1",
        result=Entry.Result.OK,
    )
    audit.record(
        actor=support_user,
        action="trade.repoll",
        target="pt_live_9A2",
        order=settled.order,
        reason="ticket 2",
        result=Entry.Result.OK,
    )

    text = support.get("/audit/").content.decode()

    assert '<a href="/events/evt_settled01/">evt_settled01</a>' in text
    assert '<td class="id">pt_live_9A2</td>' in text


def test_the_stuck_queue_links_the_last_delivery_to_its_event(support, network):
    stuck = Trade.objects.get(order__partner_reference="scn_stuck_reserved")
    event = WebhookEvent.objects.filter(subject_id=stuck.transact_id).order_by("id").first()
    record_replay_attempt(
        event, Partner.objects.get(partner_id="ptn_acme"), Delivery("failed", 500, 12)
    )

    text = support.get("/queues/stuck").content.decode()

    assert f'href="/events/{event.event_id}/" title="{event.event_id}, attempt' in text
