"""The search box and /id/<value>: any id of the contract's table lands on its order."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from lookup import reads
from tests import envelopes
from tests.helpers import import_events, numbered, plans_kept

pytestmark = pytest.mark.django_db

ORDER_URL = "/orders/ptn_acme/order_7841/"


@pytest.fixture
def order(tmp_path):
    """One order carrying every kind of id, plus a second order elsewhere."""
    quote = envelopes.quote("created", quote_id="pq_live_01J4")
    reserved = envelopes.trade("reserved", transact_id="pt_live_9A2", event_id="evt_01J4Z9")
    entry = envelopes.ledger("ledger_0pools_772", transact_id="pt_live_9A2")
    other = envelopes.trade(
        "reserved",
        transact_id="pt_live_9B7",
        reference="order_9999",
        quoteId="pq_live_9B7q",
        requestId="req_other9B7",
    )
    import_events(tmp_path, quote, reserved, entry, other)
    return {"quote": quote, "reserved": reserved, "ledger": entry}


@pytest.mark.parametrize(
    "value",
    [
        "order_7841",  # partner order id
        "pq_live_01J4",  # quote
        "pt_live_9A2",  # trade
        "req_01HZY0P2",  # request (the trade's)
        "req_01HZY0Q1",  # request (the quote's)
        "order_7841:accept:1",  # idempotency key
        "evt_01J4Z9",  # webhook event
        "ledger_0pools_772",  # ledger entry
    ],
)
def test_each_id_kind_goes_straight_to_the_timeline(support, order, value):
    response = support.get("/search", {"q": value})

    assert response.status_code == 302
    assert response["Location"] == ORDER_URL


def test_id_links_from_tickets_redirect_the_same_way(support, order):
    response = support.get("/id/pt_live_9A2")

    assert response.status_code == 302
    assert response["Location"] == ORDER_URL


@pytest.mark.parametrize(
    "pasted",
    [
        "  pt_live_9A2\n",
        '"pt_live_9A2"',
        "'pt_live_9A2'",
        "<pt_live_9A2>",
        "`pt_live_9A2`",
        "https://dashboard.example.com/trades/pt_live_9A2",
        "<https://dashboard.example.com/trades/pt_live_9A2>",
    ],
)
def test_whitespace_quotes_brackets_and_urls_around_an_id_are_stripped(support, order, pasted):
    response = support.get("/search", {"q": pasted})

    assert response.status_code == 302
    assert response["Location"] == ORDER_URL


def test_a_prefix_of_six_or_more_lists_the_matches_and_says_why(support, order):
    response = support.get("/search", {"q": "pt_live_9"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "prefix trade <code>pt_live_9A2</code>" in page
    assert "prefix trade <code>pt_live_9B7</code>" in page
    assert 'href="/orders/ptn_acme/order_7841/"' in page
    assert 'href="/orders/ptn_acme/order_9999/"' in page


def test_a_whole_id_that_prefixes_others_is_the_exact_match_alone(support, order, tmp_path):
    # order_7841 is also the start of order_78412's ids: the exact one wins.
    import_events(
        tmp_path,
        envelopes.trade("settled", transact_id="pt_live_9A21", reference="order_78412"),
    )

    for value, url in (("order_7841", ORDER_URL), ("pt_live_9A2", ORDER_URL)):
        response = support.get(f"/id/{value}")
        assert response.status_code == 302, value
        assert response["Location"] == url
    assert b"order_78412" in support.get("/search", {"q": "order_784"}).content


def identifier_statements(captured):
    return [q["sql"] for q in captured.captured_queries if "records_identifier" in q["sql"]]


@pytest.mark.parametrize(("value", "trades_read"), [("pt_live_9A2", 0), ("pt_live_9", 1)])
def test_a_whole_id_or_a_prefix_is_one_range_scan(support, order, value, trades_read):
    # One range scan answers both, exact matches first. No LIKE: its plan
    # depends on the pattern, so PostgreSQL planned it again on every call.
    # The orders' newest trades are read for a list only: a whole id is a
    # redirect.
    with CaptureQueriesContext(connection) as captured:
        response = support.get(f"/id/{value}")
    searched = identifier_statements(captured)
    trades = [q for q in captured.captured_queries if "FROM records_trade" in q["sql"]]

    assert response.status_code == (302 if trades_read == 0 else 200)
    assert len(searched) == 1
    assert "LIKE" not in searched[0]
    assert len(trades) == trades_read


def test_every_read_of_a_prefix_search_keeps_one_plan(support, order):
    # Among many ids, as in a real index: a plan shown the range's bounds
    # would cost its few rows below the generic plan, and PostgreSQL would
    # plan every search afresh.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO records_identifier (value, kind, partner_id, link_key)"
            " SELECT 'evt_' || n, 'event', 'ptn_acme', '' FROM generate_series(1, 20000) n"
        )
        cursor.execute("ANALYZE records_identifier")

    kept = plans_kept(support, "/search?q=pt_live_9")

    assert len(kept) >= 3, kept  # the session, the identifiers, the newest trades
    assert [sql for sql, (generic, _) in kept.items() if not generic] == []


def test_the_range_scan_is_planned_once_as_an_index_range(support, order):
    # The bounds are sub-selects, so the generic plan is the one every call
    # gets: identifier_unique from the value to its successor. (Sequential
    # scans priced out: the test tables are small enough for one to win.)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("PREPARE range_page(text, text) AS " + numbered(reads.RANGE_SQL))
        cursor.execute("EXPLAIN EXECUTE range_page('pt_live_9', 'pt_live_:')")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("DEALLOCATE range_page")

    # An index scan, or a bitmap of the same index range, as the statistics say.
    identifiers = re.search(
        r"(?:Index Scan using|Bitmap Index Scan on) identifier_unique .*\n\s+Index Cond: (.*)", plan
    )
    assert identifiers, plan
    # (an InitPlan's value: $0 up to PostgreSQL 16, "(InitPlan 1).col1" from 17)
    unseen = r"(?:\$\d+|\(InitPlan \d+\)\.col\d+)"
    assert re.fullmatch(
        rf"\(\(\(value\)::text >= {unseen}\) AND \(\(value\)::text < {unseen}\)\)", identifiers[1]
    ), identifiers[1]
    assert "Seq Scan on records_identifier" not in plan


@pytest.mark.parametrize(
    ("prefix", "upper"),
    [
        ("evt_Zi", "evt_Zj"),
        ("order_z", "order_{"),
        ("ordér_", "ordér`"),
        ("abc\ud7ff", "abc\ue000"),  # over the surrogates
        ("ab\U0010ffff", "ac"),  # the last code point: carry
        ("\U0010ffff" * 6, None),
    ],
)
def test_the_successor_of_a_prefix_bounds_every_value_that_starts_with_it(prefix, upper):
    assert reads.successor(prefix) == upper


@pytest.mark.parametrize("prefix", ["order_é", "order_z", "order_\u00ff", "order_\u07ff"])
def test_a_prefix_ending_in_any_character_finds_what_starts_with_it(support, tmp_path, prefix):
    # The range's upper bound is the prefix with its last character
    # stepped on, which may need one more byte in UTF-8 than the prefix's
    # (U+07FF -> U+0800): PostgreSQL's "C" order must agree with Python's.
    import_events(
        tmp_path,
        envelopes.trade("settled", transact_id="pt_live_UA1", reference=prefix + "1"),
        envelopes.trade("settled", transact_id="pt_live_UA2", reference=prefix + "\u0800"),
        envelopes.trade("settled", transact_id="pt_live_UA3", reference=reads.successor(prefix)),
    )

    response = support.get("/search", {"q": prefix})

    page = response.content.decode()
    assert f"prefix partner order id <code>{prefix}1</code>" in page
    assert f"prefix partner order id <code>{prefix}\u0800</code>" in page
    assert f"<code>{reads.successor(prefix)}</code>" not in page


def test_an_order_found_shows_its_newest_trade(support, tmp_path):
    # order_7841 at two partners (a list, not a redirect); at ptn_acme a
    # failed trade was followed by one that settled.
    import_events(
        tmp_path,
        envelopes.trade("failed", transact_id="pt_live_OLD", createdAt="2026-06-28T20:13:11Z"),
        envelopes.trade("settled", transact_id="pt_live_NEW", createdAt="2026-06-28T20:20:00Z"),
        envelopes.trade("reserved", transact_id="pt_live_GLX", partner="ptn_globex"),
    )

    page = support.get("/search", {"q": "order_7841"}).content.decode()

    assert "st-settled" in page and "st-reserved" in page
    assert "st-failed" not in page


def test_a_prefix_shorter_than_six_finds_nothing(support, order):
    response = support.get("/search", {"q": "pt_li"})

    assert b"Nothing found" in response.content


def test_ids_are_case_sensitive(support, order):
    response = support.get("/search", {"q": "PT_LIVE_9A2"})

    assert b"Nothing found" in response.content


def test_underscore_in_a_prefix_is_not_a_wildcard(support, order, tmp_path):
    import_events(
        tmp_path, envelopes.trade("reserved", transact_id="pt_live_9C1", reference="orderX7841")
    )

    response = support.get("/search", {"q": "order_78"})

    assert b"order_7841" in response.content
    assert b"orderX7841" not in response.content


def test_one_partner_order_id_at_two_partners_lists_both(support, tmp_path):
    import_events(
        tmp_path,
        envelopes.trade("settled", transact_id="pt_live_AAA", partner="ptn_acme"),
        envelopes.trade("reserved", transact_id="pt_live_BBB", partner="ptn_globex"),
    )

    response = support.get("/search", {"q": "order_7841"})

    assert response.status_code == 200
    page = response.content.decode()
    assert 'href="/orders/ptn_acme/order_7841/"' in page
    assert 'href="/orders/ptn_globex/order_7841/"' in page
    assert "st-settled" in page and "st-reserved" in page
    assert "exact partner order id <code>order_7841</code>" in page


def test_nothing_found_says_what_the_input_looks_like(support, order):
    response = support.get("/search", {"q": "evt_doesnotexist"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "Nothing found for <code>evt_doesnotexist</code>" in page
    assert "looks like a <strong>event</strong> id" in page


def test_a_test_id_for_a_live_record_is_pointed_out(support, order):
    response = support.get("/search", {"q": "pt_test_9A2"})

    page = response.content.decode()
    assert "pt_live_9A2 exists" in page
    assert 'href="/id/pt_live_9A2"' in page


def test_a_typo_near_an_existing_id_is_suggested(support, order):
    response = support.get("/search", {"q": "pq_live_01J5"})

    assert "Did you mean pq_live_01J4?" in response.content.decode()


def test_a_pasted_secret_is_not_searched_and_the_agent_is_warned(support, order):
    response = support.get("/search", {"q": "sk_live_" + "a" * 40})

    assert "Secrets are never stored" in response.content.decode()


@pytest.mark.parametrize(
    "pasted", ["sk_live_" + "c" * 40, "whsec_" + "d" * 32, "ticket with sk_test_" + "e" * 30]
)
def test_a_pasted_secret_never_reaches_the_database(support, order, pasted):
    with CaptureQueriesContext(connection) as queries:
        response = support.get("/search", {"q": pasted})

    assert "have it rotated" in response.content.decode()
    # (its tail: LIKE patterns escape the underscores of its head)
    assert not [q for q in queries.captured_queries if pasted[-16:] in q["sql"]]


def test_id_not_found_is_a_404_page(support, order):
    response = support.get("/id/pt_live_nope")

    assert response.status_code == 404
    assert b"Nothing found" in response.content


def test_a_partner_id_filters_the_orders_list(support, order):
    response = support.get("/search", {"q": "ptn_acme"})

    assert response.status_code == 302
    assert response["Location"] == "/orders/?partner=ptn_acme"


def test_a_pool_filters_the_trades_list(support, order):
    response = support.get("/search", {"q": "EUR-USDT"})

    assert response.status_code == 302
    assert response["Location"] == "/trades/?pool=EUR-USDT"


def test_pasting_a_whole_ticket_extracts_and_groups_every_id(support, order):
    ticket = (
        "Hi team, order_7841 was charged but the user has nothing!\n"
        "Our logs: [2026-06-28 20:15:03] POST /transact -> pt_live_9A2 (request req_01HZY0P2)\n"
        "webhook evt_01J4Z9 received. Also pt_live_9B7 looks stuck, and evt_NOTREAL1 never came."
    )

    response = support.get("/search", {"q": ticket})

    assert response.status_code == 200
    page = response.content.decode()
    assert "Ids found in the pasted text" in page
    assert "2 orders" in page
    for found in ("order_7841", "pt_live_9A2", "req_01HZY0P2", "evt_01J4Z9", "pt_live_9B7"):
        assert f"<code>{found}</code>" in page
    assert "evt_NOTREAL1 (event) was not found" in page


def test_a_ledger_entry_whose_trade_has_not_arrived_is_shown_waiting(support, tmp_path):
    import_events(tmp_path, envelopes.ledger("ledger_early_1", transact_id="pt_live_LATER"))

    response = support.get("/search", {"q": "ledger_early_1"})

    assert response.status_code == 200
    assert b"waiting for pt_live_LATER to arrive" in response.content


def test_search_needs_sign_in(client, order):
    response = client.get("/search", {"q": "pt_live_9A2"})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_an_empty_query_is_a_clear_400(support):
    response = support.get("/search", {"q": "   "})

    assert response.status_code == 400
    assert b"Paste an id" in response.content


def test_a_lookup_is_a_handful_of_queries(support, order, django_assert_max_num_queries):
    # session with its user and role, session save (savepoint, update,
    # release), the ids with their orders, the orders' newest trades
    with django_assert_max_num_queries(6):
        response = support.get("/search", {"q": "pt_live_9"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "prefix trade <code>pt_live_9A2</code>" in page
    assert 'href="/orders/ptn_acme/order_9999/"' in page


@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=200))
def test_no_input_makes_the_search_box_fail(support, q):
    response = support.get("/search", {"q": q})

    assert response.status_code in (200, 302, 400)


def test_an_idempotency_key_reused_for_two_orders_finds_both(support, tmp_path):
    first = envelopes.trade("settled", transact_id="pt_live_KEY1", reference="order_a")
    second = envelopes.trade("reserved", transact_id="pt_live_KEY2", reference="order_b")
    for event in (first, second):
        event["data"]["idempotencyKey"] = "checkout:accept:1"
    import_events(tmp_path, first, second)

    response = support.get("/search", {"q": "checkout:accept:1"})

    assert response.status_code == 200
    page = response.content.decode()
    assert 'href="/orders/ptn_acme/order_a/"' in page
    assert 'href="/orders/ptn_acme/order_b/"' in page


# --- a prefix that matches more than one page ------------------------------------


@pytest.fixture
def sixty_trades(tmp_path):
    """60 orders whose trade ids share the prefix pt_live_P: more than a page."""
    import_events(
        tmp_path,
        *(
            envelopes.trade(
                "settled",
                transact_id=f"pt_live_P{n:03d}",
                reference=f"order_p{n:03d}",
                quoteId=f"pq_live_P{n:03d}",
                requestId=f"req_P{n:03d}",
            )
            for n in range(60)
        ),
    )


def test_a_prefix_matching_more_than_a_page_says_how_many_and_links_to_all(
    support, order, sixty_trades
):
    response = support.get("/search", {"q": "pt_live_P"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "First 50 of 60 ids starting with <code>pt_live_P</code>" in page
    assert "50 orders." not in page
    assert 'href="/orders/?id=pt_live_P"' in page
    # The link holds every one of them, and nothing else.
    export = support.get("/orders/", {"id": "pt_live_P", "format": "csv"})
    rows = b"".join(export.streaming_content).decode().splitlines()[1:]
    assert len(rows) == 60
    assert all(",order_p0" in row for row in rows)


def test_a_prefix_matching_more_than_is_counted_says_more_than(support, sixty_trades, monkeypatch):
    monkeypatch.setattr("lookup.search.COUNT_BOUND", 55)

    response = support.get("/search", {"q": "pt_live_P"})

    page = response.content.decode()
    assert "First 50 of more than 55 ids starting with <code>pt_live_P</code>" in page
    assert 'href="/orders/?id=pt_live_P"' in page


def test_one_id_on_more_orders_than_a_page_says_how_many(support, tmp_path):
    # A partner reusing one idempotency key on 55 orders: the exact id is cut.
    trades = []
    for n in range(55):
        trade = envelopes.trade(
            "settled", transact_id=f"pt_live_K{n:03d}", reference=f"order_k{n:03d}"
        )
        trade["data"] |= {"idempotencyKey": "checkout", "quoteId": f"pq_live_K{n:03d}"}
        trades.append(trade)
    import_events(tmp_path, *trades)

    response = support.get("/search", {"q": "checkout"})

    page = response.content.decode()
    assert "First 50 of 55 records with the id <code>checkout</code>" in page
    assert page.count("exact idempotency key <code>checkout</code>") == 50


def test_a_prefix_within_a_page_is_not_said_to_be_cut(support, sixty_trades):
    response = support.get("/search", {"q": "pt_live_P05"})

    page = response.content.decode()
    assert "10 orders." in page
    assert "First " not in page
    assert "/orders/?id=" not in page


def test_a_cut_prefix_costs_one_query_more_than_a_whole_one(
    support, sixty_trades, django_assert_max_num_queries
):
    # The six of a prefix lookup, plus the bounded count (an index-only
    # range scan of identifier_unique that stops at COUNT_BOUND + 1 rows)
    # that only a page cut short needs.
    with django_assert_max_num_queries(7):
        response = support.get("/search", {"q": "pt_live_P"})

    assert "First 50 of 60 ids" in response.content.decode()


# --- a pasted ticket understands every kind the box does ----------------------


def test_a_ticket_finds_partners_and_pools_as_the_box_does_alone(
    support, order, django_assert_max_num_queries
):
    ticket = (
        "Partner ptn_acme says order_7841 (key order_7841:accept:1) on pool EUR-USDT "
        "got quote pq_live_01J4, then ledger_0pools_772.\n"
        "Also ptn_nobody and pool ZZZ-QQQ, dated 2026-06."
    )

    # session with its user and role, session save (3), the ids with their
    # orders, the orders' newest trades, partners, pools
    with django_assert_max_num_queries(8):
        response = support.get("/search", {"q": ticket})

    assert response.status_code == 200
    page = response.content.decode()
    assert "Ids found in the pasted text" in page
    assert 'href="/orders/?partner=ptn_acme"' in page
    assert 'href="/trades/?pool=EUR-USDT"' in page
    assert "ptn_acme (partner) was not found" not in page
    assert 'href="/orders/ptn_acme/order_7841/"' in page
    for found in ("order_7841", "order_7841:accept:1", "pq_live_01J4", "ledger_0pools_772"):
        assert f"<code>{found}</code>" in page
    assert "ptn_nobody (partner) was not found" in page
    # The pool shape fits dates and the like too: only a known pool is shown.
    assert "ZZZ-QQQ" not in page
    assert "(pool)" not in page


def test_a_ticket_naming_only_a_partner_is_not_nothing_found(support, order):
    response = support.get("/search", {"q": "please check ptn_acme today"})

    page = response.content.decode()
    assert "Nothing found" not in page
    assert 'href="/orders/?partner=ptn_acme"' in page


def test_a_ticket_id_at_the_end_of_a_sentence_is_found(support, order):
    response = support.get("/search", {"q": "The order is order_7841. Key: order_7841:accept:1!"})

    page = response.content.decode()
    assert 'href="/orders/ptn_acme/order_7841/"' in page
    assert "exact partner order id <code>order_7841</code>" in page
    assert "exact idempotency key <code>order_7841:accept:1</code>" in page


def test_a_secret_in_a_ticket_is_pointed_out_without_being_repeated(support, order):
    secret = "sk_live_" + "b" * 40
    response = support.get("/search", {"q": f"our key is {secret} and pt_live_9A2"})

    page = response.content.decode()
    assert "have it rotated" in page
    assert secret not in page
    assert 'href="/orders/ptn_acme/order_7841/"' in page
