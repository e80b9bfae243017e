"""Every error answer is a page of the panel: its layout, the reason in words, a way back.

JSON clients (``?format=json``, ``Accept: application/json``, a JSON body)
get ``{"error": …}`` instead.
"""

import re

import orjson
import pytest
from django.test import Client, RequestFactory

from lib.errors import server_error
from records.models import Trade
from tests import envelopes
from tests.conftest import PASSWORD
from tests.factories import UserFactory
from tests.helpers import import_events

pytestmark = pytest.mark.django_db

NAV = '<nav class="sections">'
BRAND = '<a class="brand" href="/">'
HOME = '<a href="/">Go to the home page</a>'


def page_of(response, status, *, through_middleware=True):
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert BRAND in page
    # A strict CSP holds: no inline script or style on any error page.
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    if through_middleware:
        assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    return page


@pytest.fixture
def trade(tmp_path):
    import_events(tmp_path, envelopes.trade("reserved", transact_id="pt_live_9A2"))
    return Trade.objects.get()


@pytest.fixture
def no_role(client):
    client.force_login(UserFactory(username="newcomer", role=None))
    return client


# --- 403 ------------------------------------------------------------------------


def test_a_refused_action_names_the_role_and_what_it_may_not_do(support):
    response = support.post("/queues/stuck/pt_live_9A2/claim")

    page = page_of(response, 403)
    assert NAV in page
    assert "Your role (support) may not claim trades." in page
    assert HOME in page


def test_a_user_without_a_role_is_told_so_and_whom_to_ask_and_sees_no_data(no_role, trade):
    response = no_role.get("/audit/")

    page = page_of(response, 403)
    assert "Your role (none) may not see the audit log." in page
    assert "Your account (newcomer) has no role yet" in page
    assert "Ask a panel admin" in page
    assert "pt_live" not in page


def test_signing_in_without_a_role_lands_on_that_page_not_a_blank_one(client, trade):
    UserFactory(username="newcomer", role=None)

    response = client.post(
        "/accounts/login/", {"username": "newcomer", "password": PASSWORD}, follow=True
    )

    page = page_of(response, 403)
    assert "has no role yet" in page
    assert "pt_live" not in page


def test_a_form_with_a_bad_csrf_token_says_why_in_the_layout(support_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(support_user)

    response = client.post("/trades/pt_live_9A2/repoll", {"reason": "x"})

    page = page_of(response, 403)
    assert NAV in page
    assert "security token is missing or out of date" in page
    assert "Nothing was done." in page


# --- 404 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("/orders/ptn_acme/order_0000/", "There is no order order_0000 of partner ptn_acme."),
        ("/trades/pt_live_NOPE/repoll", "There is no trade pt_live_NOPE."),
        ("/events/evt_NOPE1/replay", "No event evt_NOPE1 is stored here."),
        ("/actions/runs/987654/", "There is no run 987654."),
        ("/no/such/page", "There is nothing at /no/such/page."),
    ],
)
def test_a_404_says_what_was_not_found(support, trade, url, reason):
    response = support.get(url)

    page = page_of(response, 404)
    assert NAV in page
    assert reason in page
    assert "tried" not in page and "urlpatterns" not in page


def test_a_404_for_a_pool_says_which(ops):
    page = page_of(ops.get("/pools/ZZZ-QQQ/sla"), 404)

    assert "There is no pool ZZZ-QQQ." in page


# --- the way back -----------------------------------------------------------------


def test_the_way_back_is_the_page_the_user_came_from(support, trade):
    response = support.get(
        "/orders/ptn_acme/order_0000/",
        headers={"Referer": "http://testserver/trades/?pool=EUR-USDT"},
    )

    page = page_of(response, 404)
    assert '<a href="/trades/?pool=EUR-USDT" rel="prev">Back to where you were</a>' in page
    assert '<a href="/">Home</a>' in page
    assert 'id="search-box"' in page


@pytest.mark.parametrize(
    "referer",
    [
        "https://elsewhere.example/trades/",
        "//elsewhere.example/trades/",
        "javascript:alert(1)",
        "http://testserver/orders/ptn_acme/order_0000/",  # the page that failed
    ],
)
def test_a_foreign_or_useless_referer_leads_home(support, trade, referer):
    response = support.get("/orders/ptn_acme/order_0000/", headers={"Referer": referer})

    page = page_of(response, 404)
    assert HOME in page
    assert "elsewhere" not in page and "javascript" not in page


# --- 405 ------------------------------------------------------------------------


def test_a_405_is_a_page_that_keeps_the_allow_header(support):
    response = support.post("/orders/")

    page = page_of(response, 405)
    assert response["Allow"] == "GET"
    assert NAV in page
    assert "/orders/ does not take a POST request (it takes GET), so nothing was done." in page
    assert HOME in page


def test_a_405_on_the_webhook_stays_json_for_a_json_client(client):
    response = client.get("/webhooks/0pools", headers={"Accept": "application/json"})

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json() == {
        "error": "/webhooks/0pools does not take a GET request (it takes POST), so nothing "
        "was done."
    }


def test_a_405_on_the_health_check_is_json_for_a_json_client(client):
    response = client.post("/healthz", headers={"Accept": "application/json"})

    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert "does not take a POST request" in response.json()["error"]


# --- 400 ------------------------------------------------------------------------


def test_a_400_from_a_request_django_refuses_is_a_page(support):
    response = support.get("/", headers={"Host": "evil.example"})

    page = page_of(response, 400)
    assert "could not read this request" in page
    assert "evil.example" not in page
    assert HOME in page


# --- 409 and 429 from the guarded actions, and the sign-in lock-out ---------------


def confirm_fields(client, url):
    form = client.get(url).context["form"]
    return {"key": form.initial["key"], "drawn": form.initial["drawn"], "reason": "ticket 7"}


def test_a_409_keeps_the_layout_and_says_why(support, trade):
    fields = confirm_fields(support, "/trades/pt_live_9A2/repoll")
    Trade.objects.filter(pk=trade.pk).update(status="settled")

    response = support.post("/trades/pt_live_9A2/repoll", fields)

    page = page_of(response, 409)
    assert NAV in page
    assert "This changed since the page was drawn; nothing was done." in page


def test_a_429_from_the_rate_limit_keeps_the_layout_and_says_why(support, trade, settings):
    settings.OPSPANEL_ACTIONS_PER_MINUTE = 0
    fields = confirm_fields(support, "/trades/pt_live_9A2/repoll")

    response = support.post("/trades/pt_live_9A2/repoll", fields)

    page = page_of(response, 429)
    assert NAV in page
    assert "Rate limit: at most 0 actions a minute. Nothing was done" in page


def test_a_locked_out_sign_in_is_a_429_page_in_words(client, support_user, settings):
    settings.AXES_ENABLED = True
    for _ in range(5):
        client.post("/accounts/login/", {"username": support_user.username, "password": "no"})

    response = client.post(
        "/accounts/login/", {"username": support_user.username, "password": PASSWORD}
    )

    page = page_of(response, 429)
    assert "Too many failed sign-ins" in page
    assert "locked for 15 minutes" in page


# --- 500 ------------------------------------------------------------------------


@pytest.fixture
def failing_search(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("connection to 10.0.0.7 refused; password=hunter2")

    monkeypatch.setattr("lookup.search.lookup", fail)


def test_a_500_is_a_page_that_never_shows_the_exception(support, failing_search):
    support.raise_request_exception = False

    response = support.get("/search", {"q": "pt_live_9A2"})

    page = page_of(response, 500)
    assert "Something went wrong on our side" in page
    assert "hunter2" not in page and "10.0.0.7" not in page and "RuntimeError" not in page
    assert HOME in page


def test_the_500_page_reads_neither_the_database_nor_the_session(django_assert_num_queries):
    request = RequestFactory().get(
        "/search?q=x", headers={"Referer": "http://testserver/trades/"}
    )  # no session, no user: touching either would raise

    with django_assert_num_queries(0):
        response = server_error(request)

    page = page_of(response, 500, through_middleware=False)
    assert '<a href="/trades/" rel="prev">Back to where you were</a>' in page
    assert "went wrong" in page


def test_a_500_answers_a_json_client_in_json(support, failing_search):
    support.raise_request_exception = False

    response = support.get("/search", {"q": "pt_live_9A2"}, headers={"Accept": "application/json"})

    assert response.status_code == 500
    assert "hunter2" not in response.content.decode()
    assert "failed to answer" in response.json()["error"]


def test_a_500_on_the_webhook_answers_json(client, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("database gone")

    monkeypatch.setattr("ingest.pipeline.store", fail)
    client.raise_request_exception = False

    from tests.conftest import post_event

    response = post_event(client, envelopes.trade("reserved"))

    assert response.status_code == 500
    assert set(orjson.loads(response.content)) == {"error"}
    assert "database gone" not in response.content.decode()


# --- JSON clients of the timeline ---------------------------------------------------


def test_the_timeline_json_gets_json_errors(support, no_role_client):
    missing = support.get("/orders/ptn_acme/order_0000/", {"format": "json"})
    refused = no_role_client.get("/orders/ptn_acme/order_0000/", {"format": "json"})
    by_header = support.get("/orders/ptn_acme/order_0000/", headers={"Accept": "application/json"})

    assert missing.status_code == 404
    assert missing.json() == {"error": "There is no order order_0000 of partner ptn_acme."}
    assert by_header.json() == missing.json()
    assert refused.status_code == 403
    assert refused.json() == {
        "error": "Your role (none) may not search or see timelines and lists of records."
    }


@pytest.fixture
def no_role_client():
    client = Client()
    client.force_login(UserFactory(role=None))
    return client


def test_an_error_says_its_answer_depends_on_accept(support):
    page = support.get("/orders/ptn_acme/no_such_order/")
    as_json = support.get("/orders/ptn_acme/no_such_order/", headers={"Accept": "application/json"})

    assert "Accept" in page["Vary"] and "Accept" in as_json["Vary"]
    assert page["Content-Type"].startswith("text/html")
    assert as_json["Content-Type"] == "application/json"
