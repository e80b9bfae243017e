"""Orders, trades, events and ledger lists: filters, keyset pages, CSV, timeline links."""

import csv
import html
import io
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from ingest.contract import EVENT_OBJECTS
from records.ids import EVENT_TYPES
from records.models import LedgerEntry, Order, Trade, WebhookEvent, order_url
from tests import envelopes
from tests.helpers import import_events, import_network

pytestmark = pytest.mark.django_db

LISTS = ["orders", "trades", "events", "ledger"]
MODELS = {"orders": Order, "trades": Trade, "events": WebhookEvent, "ledger": LedgerEntry}


# --- data ---------------------------------------------------------------------


def trade(transact_id, reference, status="settled", *, at, partner="ptn_acme", **extra):
    """A trade event created at ``at``; test mode when the id says so."""
    live = transact_id.startswith("pt_live_")
    envelope = envelopes.trade(
        status,
        transact_id=transact_id,
        reference=reference,
        partner=partner,
        at=at,
        createdAt=at,
        quoteId=f"pq_{'live' if live else 'test'}_{transact_id[8:]}quote",
        **extra,
    )
    envelope["livemode"] = live
    return envelope


def ledger(ledger_id, transact_id, *, entry_type="settlement", at="2026-06-28T20:15:04Z"):
    envelope = envelopes.ledger(ledger_id, transact_id=transact_id, entry_type=entry_type)
    envelope["createdAt"] = envelope["data"]["postedAt"] = at
    return envelope


@pytest.fixture
def records(tmp_path):
    """A handful of orders that differ in one way each."""
    import_events(
        tmp_path,
        trade("pt_live_A01", "order_a1", "settled", at="2026-06-27T09:00:00Z"),
        trade("pt_live_A02", "order_a2", "reserved", at="2026-06-28T10:00:00Z"),
        trade("pt_live_A03", "order_a3", "failed", at="2026-06-29T23:59:59Z"),
        trade(
            "pt_live_G01", "g/1", at="2026-06-28T11:00:00Z", partner="ptn_globex", poolId="BTC-EUR"
        ),
        trade("pt_test_T01", "sandbox_1", at="2026-06-28T12:00:00Z", partner="ptn_sandbox"),
        ledger("ledger_a1_settle", "pt_live_A01", at="2026-06-27T09:01:00Z"),
        ledger("ledger_a1_fee", "pt_live_A01", entry_type="fee", at="2026-06-27T09:02:00Z"),
        # A ledger entry whose trade has not arrived: no order to link to yet.
        ledger("ledger_orphan", "pt_live_NOPE", at="2026-06-28T09:00:00Z"),
    )


@pytest.fixture
def sandbox(sandbox_file):
    """A few hundred rows of every kind, through the real pipeline."""
    import_network(sandbox_file, 50, 3)


# --- reading the page ---------------------------------------------------------

SHOWN = {
    "orders": lambda order: order.partner_reference,
    "trades": lambda trade: trade.transact_id,
    "events": lambda event: event.event_id,
    "ledger": lambda entry: entry.ledger_id,
}


def shown(response, name):
    assert response.status_code == 200
    return [SHOWN[name](row) for row in response.context["rows"]]


def next_link(response):
    found = re.search(r'<a href="([^"]*)"[^>]*rel="next"', response.content.decode())
    return found and html.unescape(found.group(1))


def cursor_of(link):
    return parse_qs(urlsplit(link).query)["after"][0]


def csv_rows(response):
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


# --- access -------------------------------------------------------------------


@pytest.mark.parametrize("name", LISTS)
def test_every_list_asks_for_sign_in(client, name):
    response = client.get(f"/{name}/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("role", ["support", "operations", "admin"])
def test_every_role_sees_every_list(client, role, request, records):
    client.force_login(request.getfixturevalue(f"{role}_user"))

    for name in LISTS:
        response = client.get(reverse(f"browse:{name}"))
        assert response.status_code == 200
        assert response.context["rows"], name


# --- filters ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["pt_live_A03", "pt_test_T01", "pt_live_G01", "pt_live_A02", "pt_live_A01"]),
        ("partner=ptn_globex", ["pt_live_G01"]),
        ("partner=+ptn_globex+", ["pt_live_G01"]),  # pasted with spaces around it
        ("pool=BTC-EUR", ["pt_live_G01"]),
        ("status=failed", ["pt_live_A03"]),
        ("livemode=test", ["pt_test_T01"]),
        ("livemode=live&partner=ptn_acme", ["pt_live_A03", "pt_live_A02", "pt_live_A01"]),
        # Whole UTC days, both ends included: 23:59:59 on the last day counts.
        (
            "date_from=2026-06-28&date_to=2026-06-29",
            ["pt_live_A03", "pt_test_T01", "pt_live_G01", "pt_live_A02"],
        ),
        ("date_to=2026-06-27", ["pt_live_A01"]),
    ],
)
def test_trades_filters_narrow_the_list(support, records, query, expected):
    assert shown(support.get(f"/trades/?{query}"), "trades") == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("partner=ptn_acme", ["order_a3", "order_a2", "order_a1"]),
        ("status=reserved", ["order_a2"]),
        ("pool=BTC-EUR", ["g/1"]),
        ("livemode=test", ["sandbox_1"]),
        ("date_from=2026-06-29", ["order_a3"]),
        # Any id of the order starting so: trade, ledger entry, partner order id.
        ("id=pt_live_A0", ["order_a3", "order_a2", "order_a1"]),
        ("id=ledger_a1_f", ["order_a1"]),
        ("id=order_a2", ["order_a2"]),
        ("id=order_a", ["order_a3", "order_a2", "order_a1"]),
        ("id=pt_live_A0_", []),  # "_" is a character, not a wildcard
    ],
)
def test_orders_filters_narrow_the_list(support, records, query, expected):
    assert shown(support.get(f"/orders/?{query}"), "orders") == expected


def test_events_filter_by_type_partner_mode_and_state(support, records):
    def types(query):
        return {event.type for event in support.get(f"/events/?{query}").context["rows"]}

    assert types("type=trade.failed") == {"trade.failed"}
    assert len(shown(support.get("/events/?type=ledger.posted"), "events")) == 3
    assert shown(support.get("/events/?partner=ptn_globex"), "events") == [
        WebhookEvent.objects.get(subject_id="pt_live_G01").event_id
    ]
    assert types("livemode=test") == {"trade.settled"}
    assert shown(support.get("/events/?state=failed"), "events") == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("type=fee", ["ledger_a1_fee"]),
        ("type=settlement", ["ledger_orphan", "ledger_a1_settle"]),
        ("pool=BTC-EUR", []),
        ("date_from=2026-06-28", ["ledger_orphan"]),
    ],
)
def test_ledger_filters_narrow_the_list(support, records, query, expected):
    assert shown(support.get(f"/ledger/?{query}"), "ledger") == expected


@pytest.mark.parametrize(
    ("name", "query", "label"),
    [
        ("trades", "partner=ACME", "Partner"),
        ("orders", "pool=eur-usdt", "Pool"),
        ("events", "type=trade.exploded", "Type"),
        ("ledger", "date_from=2026-13-40", "Posted"),
        ("trades", "livemode=maybe", "Mode"),
        ("orders", "id=pt_li", "Id starts with"),
        ("orders", "id=pt_live_A0+x", "Id starts with"),
    ],
)
def test_bad_filter_input_is_shown_as_a_form_error_with_no_rows(
    support, records, name, query, label
):
    response = support.get(f"/{name}/?{query}")

    assert response.status_code == 200
    assert response.context["rows"] == []
    assert "Fix the filters to see rows" in response.content.decode()
    assert f"<strong>{label}:</strong>" in response.content.decode()


def test_event_type_choices_are_the_contract_event_types():
    assert set(EVENT_TYPES) == set(EVENT_OBJECTS)


# --- keyset pages -------------------------------------------------------------


@pytest.mark.parametrize("name", LISTS)
def test_next_links_walk_every_row_exactly_once_newest_first(support, sandbox, name):
    model = MODELS[name]
    seen, url, pages = [], f"/{name}/?per_page=15", 0
    while url:
        response = support.get(url)
        seen += [row.pk for row in response.context["rows"]]
        url, pages = next_link(response), pages + 1

    assert pages > 2
    assert len(seen) == len(set(seen)) == model.objects.count()
    time_field = response.context["listing"].time_field
    newest_first = model.objects.order_by(f"-{time_field}", "-id").values_list("pk", flat=True)
    assert seen == list(newest_first)


def test_rows_sharing_a_time_are_paged_by_id(support, tmp_path):
    same_time = "2026-06-28T12:00:00Z"
    import_events(
        tmp_path, *[trade(f"pt_live_S{i:02d}", f"same_{i}", at=same_time) for i in range(7)]
    )
    seen, url = [], "/trades/?per_page=3"
    while url:
        response = support.get(url)
        seen += shown(response, "trades")
        url = next_link(response)

    assert sorted(seen) == [f"pt_live_S{i:02d}" for i in range(7)]
    assert len(seen) == 7


def test_next_link_keeps_the_filters_and_the_page_size(support, sandbox):
    response = support.get("/trades/?status=settled&livemode=live&per_page=5&partner=")

    link = next_link(response)
    assert link.startswith("/trades/?status=settled&livemode=live&per_page=5&after=")
    assert "partner=" not in link  # empty fields are dropped
    second = support.get(link)
    assert {t.status for t in second.context["rows"]} == {"settled"}
    assert len(second.context["rows"]) == 5
    assert 'rel="next"' in second.content.decode()
    assert "« Newest" in second.content.decode()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # signature
        lambda token: "W1siMjAzMC0wMS0wMSIsIDFdXQ" + token[token.index(":") :],  # payload
        lambda token: "garbage",
        lambda token: "",
    ],
)
def test_a_tampered_cursor_shows_the_newest_page_with_a_notice(support, sandbox, tamper):
    first = support.get("/events/?per_page=10")
    token = cursor_of(next_link(first))

    response = support.get("/events/", {"per_page": 10, "after": tamper(token)})

    assert response.status_code == 200
    assert shown(response, "events") == shown(first, "events")
    if tamper(token):
        assert "That page link is broken or out of date" in response.content.decode()


def test_a_cursor_from_another_list_is_refused(support, sandbox):
    token = cursor_of(next_link(support.get("/trades/?per_page=10")))

    response = support.get("/ledger/", {"per_page": 10, "after": token})

    assert "That page link is broken or out of date" in response.content.decode()
    assert shown(response, "ledger") == shown(support.get("/ledger/?per_page=10"), "ledger")


def test_page_size_is_capped_and_a_bad_one_falls_back(support, sandbox):
    assert len(support.get("/events/?per_page=100000").context["rows"]) == 200
    response = support.get("/events/?per_page=lots")
    assert response.status_code == 200
    assert len(response.context["rows"]) == 50


# --- CSV ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "query", "first_header"),
    [
        ("orders", "livemode=live", "partnerId"),
        ("trades", "status=settled", "transactId"),
        ("events", "type=trade.settled", "id"),
        ("ledger", "type=settlement", "ledgerId"),
    ],
)
def test_csv_export_holds_the_whole_filtered_set(support, sandbox, name, query, first_header):
    page = support.get(f"/{name}/?{query}&per_page=10")
    expected = page.context["filters"].qs.count()
    assert expected > 10  # more than one page

    response = support.get(f"/{name}/?{query}&per_page=10&after=whatever&format=csv")

    rows = csv_rows(response)
    assert rows[0][0] == first_header
    assert len(rows) - 1 == expected
    assert re.fullmatch(
        rf'attachment; filename="{name}-\d{{4}}-\d{{2}}-\d{{2}}\.csv"',
        response["Content-Disposition"],
    )


def test_csv_export_of_trades_speaks_the_contract(support, records):
    rows = csv_rows(support.get("/trades/?partner=ptn_globex&format=csv"))

    header, row = rows
    values = dict(zip(header, row, strict=True))
    assert values["transactId"] == "pt_live_G01"
    assert values["partnerReference"] == "g/1"
    assert values["poolId"] == "BTC-EUR"
    assert values["amountValue"] == "100.00"
    assert values["deliverAmountValue"] == "107.31"
    assert values["livemode"] == "true"
    assert values["createdAt"] == "2026-06-28T11:00:00Z"
    # Nothing the contract does not name, and nothing the panel keeps for itself.
    assert not {"id", "order", "payload", "verifiedWith", "lastError"} & set(header)


def test_csv_cells_that_a_spreadsheet_would_run_are_defused(support, tmp_path):
    import_events(
        tmp_path,
        trade("pt_live_F01", '=HYPERLINK("http://evil","x")', at="2026-06-28T10:00:00Z"),
        trade("pt_live_F02", "+1+2", at="2026-06-28T10:01:00Z", idempotencyKey="@SUM(A1:A9)"),
        trade("pt_live_F03", "-2+3", at="2026-06-28T10:02:00Z", idempotencyKey="plain:key"),
    )

    rows = csv_rows(support.get("/trades/?format=csv"))

    by_id = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert by_id["pt_live_F01"]["partnerReference"] == '\'=HYPERLINK("http://evil","x")'
    assert by_id["pt_live_F02"]["partnerReference"] == "'+1+2"
    assert by_id["pt_live_F02"]["idempotencyKey"] == "'@SUM(A1:A9)"
    assert by_id["pt_live_F03"]["partnerReference"] == "'-2+3"
    assert by_id["pt_live_F03"]["idempotencyKey"] == "plain:key"
    orders = csv_rows(support.get("/orders/?format=csv"))
    assert {row[1] for row in orders[1:]} == {
        '\'=HYPERLINK("http://evil","x")',
        "'+1+2",
        "'-2+3",
    }


def test_csv_is_not_exported_while_a_filter_is_invalid(support, records):
    response = support.get("/trades/?partner=nobody&format=csv")

    assert not response.streaming
    assert "Fix the filters to see rows" in response.content.decode()


# --- links to the timeline ----------------------------------------------------


def links(page):
    """{(href, text)} of every link on a page (or a response), whatever its other attributes."""
    text = page if isinstance(page, str) else page.content.decode()
    return {
        (re.search(r'href="([^"]*)"', attributes).group(1), label)
        for attributes, label in re.findall(r"<a ([^>]*)>([^<]*)</a>", text)
        if "href=" in attributes
    }


def test_every_row_links_to_its_order_timeline(support, records):
    a1 = order_url("ptn_acme", "order_a1")
    g1 = order_url("ptn_globex", "g/1")
    assert g1 == "/orders/ptn_globex/g%2F1/"

    orders = links(support.get("/orders/"))
    trades = links(support.get("/trades/"))
    events_page = support.get("/events/?partner=ptn_acme").content.decode()
    ledger_page = support.get("/ledger/").content.decode()

    assert (a1, "order_a1") in orders
    assert (g1, "g/1") in orders
    assert (a1, "pt_live_A01") in trades
    assert (g1, "pt_live_G01") in trades
    assert (a1, "order_a1") in links(events_page)
    assert (a1, "pt_live_A01") in links(ledger_page)
    # The ledger entry and its event whose trade never came: no link, said so.
    assert "pt_live_NOPE <span" in ledger_page
    assert "trade not seen yet" in ledger_page
    assert "not linked yet" in events_page


def test_references_with_url_characters_link_safely(support, tmp_path):
    import_events(tmp_path, trade("pt_live_Q01", "a?b#c d%", at="2026-06-28T10:00:00Z"))

    page = support.get("/trades/").content.decode()

    assert '<a href="/orders/ptn_acme/a%3Fb%23c%20d%25/">pt_live_Q01</a>' in page


# --- htmx ---------------------------------------------------------------------


def test_an_htmx_request_gets_only_the_results_with_a_tidy_address(support, records):
    response = support.get(
        "/trades/?partner=&pool=&status=failed&livemode=&date_from=&date_to=",
        headers={"HX-Request": "true"},
    )

    body = response.content.decode()
    assert body.lstrip().startswith('<section id="results"')
    assert "<html" not in body
    assert "pt_live_A03" in body
    assert response["HX-Push-Url"] == "/trades/?status=failed"
    assert "HX-Request" in response["Vary"]


def test_the_full_page_has_a_filter_form_that_works_without_javascript(support, records):
    body = support.get("/trades/?status=failed").content.decode()

    assert '<form class="filters" method="get" action="/trades/"' in body
    assert 'hx-get="/trades/"' in body
    assert 'hx-push-url="true"' in body
    assert '<option value="failed" selected>' in body
    assert 'href="/trades/?status=failed&amp;format=csv"' in body


# --- cost ---------------------------------------------------------------------


def test_no_list_page_or_export_counts_rows(support, sandbox):
    with CaptureQueriesContext(connection) as queries:
        for name in LISTS:
            support.get(f"/{name}/")
            page_two = next_link(support.get(f"/{name}/?per_page=20&livemode=live"))
            support.get(page_two)
            csv_rows(support.get(f"/{name}/?format=csv"))

    assert len(queries) > 0
    assert [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()] == []


@pytest.mark.parametrize("name", LISTS)
def test_a_list_page_costs_the_same_few_queries_at_any_size(
    support, sandbox, name, django_assert_max_num_queries
):
    # Five are the signed-in request's own: session, user with their role,
    # and the idle-timeout session save (SAVEPOINT, UPDATE, RELEASE). Then one
    # for the page, and one more on the ledger for the trades its entries name.
    for per_page in (5, 50):
        with django_assert_max_num_queries(7):
            first = support.get(f"/{name}/?per_page={per_page}")
        assert len(first.context["rows"]) == per_page
        with django_assert_max_num_queries(7):
            support.get(next_link(first))


def test_the_lists_filterset_sets_up_all_that_django_filters_own_does():
    """``lib.filters.FilterSet`` restates django-filter's constructor (to copy
    less per page load): what a newer django-filter sets up there and this
    one does not would show here, before a page misses it."""
    import django_filters
    from django.http import QueryDict

    from lib.filters import FilterSet

    def made(base):
        class Filters(base):
            class Meta:
                model = Trade
                fields = ["status", "livemode"]

        made = Filters(QueryDict("status=settled"), queryset=Trade.objects.all(), prefix="t")
        assert made.is_valid(), made.errors
        made.qs  # noqa: B018 - its attributes as a page leaves them
        return made

    theirs, ours = made(django_filters.FilterSet), made(FilterSet)
    assert set(vars(theirs)) <= set(vars(ours))
    for name in ("is_bound", "data", "request", "form_prefix"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert str(ours.queryset.query) == str(theirs.queryset.query)
    assert list(ours.filters) == list(theirs.filters)
    for name, each in ours.filters.items():
        assert (each.parent, each.model) == (ours, Trade), name
    assert list(ours.form.fields) == list(theirs.form.fields)
    assert [f.label for f in ours.form.fields.values()] == [
        f.label for f in theirs.form.fields.values()
    ]
    assert str(ours.qs.query) == str(theirs.qs.query)
