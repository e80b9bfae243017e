"""The one order timeline: state, clocks, merged history, flags, summary, JSON, live refresh."""

import html
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin, urlsplit

import pytest

from audit import log as audit
from opspanel.celery import app
from records.models import Order
from sandbox.forbidden import FORBIDDEN_KEYS, FORBIDDEN_MARKERS
from tests import envelopes
from tests.conftest import post_event
from tests.helpers import import_events, plans_kept

pytestmark = pytest.mark.django_db


@pytest.fixture
def scenarios(network, sandbox_file):
    """The sandbox's named scenario orders (and 20 random ones), imported; the file."""
    return sandbox_file(20, 5)


def timeline(support, reference, partner="ptn_acme"):
    response = support.get(f"/orders/{partner}/{reference}/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize(
    ("scenario", "flag"),
    [
        ("scn_settled_no_ledger", "settled_without_ledger"),
        ("scn_ledger_without_settle", "ledger_without_settled"),
        ("scn_amount_mismatch", "amount_mismatch"),
        ("scn_returned_no_reversal", "returned_without_reversal"),
        ("scn_stuck_reserved", "reserved_past_sla"),
        ("scn_illegal_move", "illegal_move"),
        ("scn_late_reserved", "late_move"),
        ("scn_partner_never_told", "partner_not_told"),
    ],
)
def test_each_consistency_flag_shows_on_the_order_built_to_show_it(
    support, scenarios, scenario, flag
):
    page = support.get(f"/orders/ptn_acme/{scenario}/")

    data = timeline(support, scenario)
    codes = [f["code"] for f in data["flags"]]
    assert flag in codes
    explanation = next(f for f in data["flags"] if f["code"] == flag)["explanation"]
    assert data["order"]["trade"]["transactId"] in explanation
    assert f'data-flag="{flag}"'.encode() in page.content


@pytest.mark.parametrize(
    "scenario", ["scn_settled_ok", "scn_returned_with_reversal", "scn_expired_reask"]
)
def test_a_clean_order_raises_no_flag(support, scenarios, scenario):
    assert timeline(support, scenario)["flags"] == []


def test_the_json_timeline_has_order_items_and_flags(support, scenarios):
    data = timeline(support, "scn_settled_ok")

    assert {"order", "items", "flags", "clocks", "summary"} <= data.keys()
    assert data["order"]["partnerId"] == "ptn_acme"
    assert data["order"]["partnerReference"] == "scn_settled_ok"
    assert data["order"]["trade"]["status"] == "settled"
    kinds = {item["kind"] for item in data["items"]}
    assert {"quote", "status", "ledger", "delivery"} <= kinds
    for item in data["items"]:
        assert {"at", "kind", "ids", "summary"} <= item.keys()
        assert item["ids"]
    times = [item["at"] for item in data["items"]]
    assert times == sorted(times)


def test_json_is_also_served_for_an_accept_header(support, scenarios):
    response = support.get(
        "/orders/ptn_acme/scn_settled_ok/", headers={"Accept": "application/json"}
    )

    assert response["Content-Type"] == "application/json"
    assert response.json()["order"]["partnerReference"] == "scn_settled_ok"


def test_three_clocks_are_drawn_separately_with_expired_quotes_visible(support, scenarios):
    data = timeline(support, "scn_expired_reask")

    clocks = [(c["name"], c["state"]) for c in data["clocks"]]
    assert clocks == [
        ("quote", "expired"),
        ("quote", "accepted"),
        ("execution", "trade id returned"),
        ("settlement", "settled"),
    ]
    assert all(c["seconds"] is not None and c["seconds"] >= 0 for c in data["clocks"])
    page = support.get("/orders/ptn_acme/scn_expired_reask/").content.decode()
    assert page.count('class="clock clock-quote') == 2
    assert "clock-execution" in page and "clock-settlement" in page


def test_a_pending_trade_has_a_running_settlement_clock(support, scenarios):
    data = timeline(support, "scn_stuck_reserved")

    settlement = next(c for c in data["clocks"] if c["name"] == "settlement")
    assert settlement["state"] == "running"
    assert settlement["end"] is None


def test_the_illegal_and_late_moves_are_on_the_history_not_applied(support, scenarios):
    items = timeline(support, "scn_illegal_move")["items"]

    flagged = [i for i in items if i["flag"] == "illegal"]
    assert len(flagged) == 1
    assert "settled (illegal, not applied)" in flagged[0]["summary"]

    late = [i for i in timeline(support, "scn_late_reserved")["items"] if i["flag"] == "late"]
    assert "reserved (late, not applied)" in late[0]["summary"]


def test_the_summary_speaks_partner_terms(support, scenarios):
    # (after "Order <partner order id>:", which here names the scenario)
    pending = timeline(support, "scn_stuck_reserved")["summary"].split(":", 1)[1]
    settled = timeline(support, "scn_settled_ok")["summary"].split(":", 1)[1]

    assert "pending" in pending and "reserved" not in pending
    assert "settled" in settled and "delivered" in settled
    page = support.get("/orders/ptn_acme/scn_settled_ok/").content.decode()
    assert 'data-copy="#summary-text"' in page
    assert 'id="summary-text"' in page


def test_a_pending_order_refreshes_its_timeline_part_with_htmx(support, scenarios):
    page = support.get("/orders/ptn_acme/scn_stuck_reserved/").content.decode()
    assert 'hx-trigger="every 5s"' in page

    partial = support.get("/orders/ptn_acme/scn_stuck_reserved/", headers={"HX-Request": "true"})
    body = partial.content.decode()
    assert body.lstrip().startswith('<div id="timeline-live"')
    assert "<html" not in body

    settled = support.get("/orders/ptn_acme/scn_settled_ok/").content.decode()
    assert "hx-trigger" not in settled


def test_a_late_webhook_shows_when_it_happened_and_when_we_learned_of_it(
    support, client, django_capture_on_commit_callbacks
):
    happened = datetime.now(UTC) - timedelta(hours=3)
    stamp = happened.strftime("%Y-%m-%dT%H:%M:%SZ")
    event = envelopes.trade("reserved", at=stamp)
    event["createdAt"] = stamp
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert post_event(client, event).status_code == 202
    finally:
        app.conf.task_always_eager = False

    page = support.get("/orders/ptn_acme/order_7841/").content.decode()
    assert "learned " in page
    assert "after it happened" in page


def test_support_actions_on_the_order_read_in_the_panels_words(support, tmp_path, operations_user):
    import_events(tmp_path, envelopes.trade("reserved"))
    order = Order.objects.get(partner_reference="order_7841")
    for action in ("queue.claim", "queue.unclaim", "retired.action"):
        audit.record(actor=operations_user, action=action, target="pt_live_9A2", order=order)

    items = timeline(support, "order_7841")["items"]

    assert [i["summary"] for i in items if i["kind"] == "action"] == [
        "Claimed of pt_live_9A2 by olga-operations (operations): Ok",
        "Unclaimed of pt_live_9A2 by olga-operations (operations): Ok",
        "retired.action of pt_live_9A2 by olga-operations (operations): Ok",
    ]


def test_the_timeline_makes_a_fixed_number_of_queries(
    support, scenarios, django_assert_max_num_queries
):
    # session (1) + user with their role (1) + session save (3) + order
    # (1) + trades, quotes, events, status changes, ledger, deliveries,
    # support actions (7)
    with django_assert_max_num_queries(13):
        response = support.get("/orders/ptn_acme/scn_partner_never_told/")

    assert response.status_code == 200
    assert b'data-flag="partner_not_told"' in response.content


def test_every_statement_of_the_timeline_keeps_one_plan(support, scenarios):
    # The status changes, the ledger and the deliveries are read by a list
    # of the order's ids; shown the list, PostgreSQL planned each afresh.
    kept = plans_kept(support, "/orders/ptn_acme/scn_partner_never_told/")

    assert len(kept) >= 9, kept  # the session, the order and its seven reads
    assert [sql for sql, (generic, _) in kept.items() if not generic] == []


def test_unknown_order_is_404(support, scenarios):
    assert support.get("/orders/ptn_acme/no_such_order/").status_code == 404


def test_a_partner_order_id_with_a_slash_has_a_timeline(support, tmp_path):
    import_events(tmp_path, envelopes.trade("reserved", reference="shop/2026/42?x=1"))

    response = support.get("/search", {"q": "shop/2026/42?x=1"})

    assert response.status_code == 302
    assert support.get(response["Location"]).status_code == 200


def test_the_timeline_needs_sign_in(client, scenarios):
    response = client.get("/orders/ptn_acme/scn_settled_ok/")

    assert response.status_code == 302


def test_no_forbidden_field_appears_in_any_page_or_export(support, scenarios):
    bodies = []
    for order in Order.objects.select_related("partner"):
        url = order.get_absolute_url()
        bodies.append(support.get(url).content)
        bodies.append(support.get(url, {"format": "json"}).content)
    for path in ("/", "/orders/", "/trades/", "/events/", "/ledger/"):
        bodies.append(support.get(path).content)
        export = support.get(path, {"format": "csv"})
        bodies.append(b"".join(export.streaming_content) if export.streaming else export.content)
    bodies.append(support.get("/search", {"q": "pt_live_"}).content)

    text = b"\n".join(bodies).decode()
    assert "scn_settled_ok" in text  # the pages hold the data
    assert [m for m in FORBIDDEN_MARKERS if m in text] == []
    assert [k for k in FORBIDDEN_KEYS if f'"{k}"' in text] == []


def test_the_live_refresh_asks_for_the_same_order_even_with_a_percent_in_its_id(support, tmp_path):
    import_events(tmp_path, envelopes.trade("reserved", reference="o%41"))

    page = support.get("/orders/ptn_acme/o%2541/").content.decode()

    assert 'hx-get="/orders/ptn_acme/o%2541/"' in page


def test_each_received_event_can_be_replayed_from_the_timeline(support, scenarios):
    data = timeline(support, "scn_settled_ok")
    event_id = next(i["ids"]["event"] for i in data["items"] if i["kind"] == "status")

    page = support.get("/orders/ptn_acme/scn_settled_ok/").content.decode()

    assert f'href="/events/{event_id}/replay"' in page


def test_a_user_without_a_role_sees_no_action_buttons(client, scenarios, django_user_model):
    client.force_login(django_user_model.objects.create_user("nobody", password="x" * 20))

    page = client.get("/orders/ptn_acme/scn_settled_ok/").content.decode()

    assert "/replay" not in page and "/repoll" not in page


# Partner order ids are the partner's free text: every character must survive,
# and none may steer a link to another page (a browser resolves "../").
AWKWARD_REFERENCES = [
    "../../queues/stuck",
    "..",
    ".",
    "./x",
    "x/..",
    "a/b",
    "50%",
    "what?x=1",
    "frag#ment",
    "with space",
    "ünïcödé-注文",
    "%2e%2e",
]


@pytest.mark.parametrize("reference", AWKWARD_REFERENCES)
def test_a_free_text_order_id_links_to_its_own_timeline_whatever_it_holds(
    support, tmp_path, reference
):
    import_events(tmp_path, envelopes.trade("reserved", reference=reference))

    listed = support.get("/orders/").content.decode()
    links = re.findall(r'<a [^>]*href="([^"]*)"[^>]*title="([^"]*)"', listed)
    (href,) = [html.unescape(h) for h, title in links if html.unescape(title) == reference]
    # Where a browser goes: dot segments resolved, as RFC 3986 says.
    landing = urlsplit(urljoin("http://panel.example/orders/", href))
    page = support.get(landing.path + (f"?{landing.query}" if landing.query else ""))

    assert page.status_code == 200
    assert page.context["order"].partner_reference == reference
