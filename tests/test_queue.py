"""The stuck-reserved queue: who is listed, filters, histogram, CSV, claims, bulk runs, pool SLA."""

import csv
import html
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.services import create_user
from actions.models import Run
from audit.models import Entry
from ingest import pipeline
from ingest.contract import parse_envelope
from queues import stuck
from queues.models import Claim
from records.models import Pool, Trade
from tests import envelopes
from tests.conftest import PASSWORD
from tests.factories import ScheduledRunFactory
from tests.helpers import import_events, numbered, plans_kept

pytestmark = pytest.mark.django_db

QUEUE = "/queues/stuck"


# --- data ---------------------------------------------------------------------


def iso(moment):
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reserved(transact_id, ago, *, pool="EUR-USDT", partner="ptn_acme", history=None, **extra):
    """A trade event: reserved ``ago`` before now (then whatever ``history`` adds)."""
    live = transact_id.startswith("pt_live_")
    at = iso(datetime.now(UTC) - ago)
    history = history or [{"status": "reserved", "at": at}]
    envelope = envelopes.trade(
        history[-1]["status"],
        transact_id=transact_id,
        reference=f"ref_{transact_id[8:]}",
        partner=partner,
        at=history[-1]["at"],
        history=history,
        createdAt=at,
        poolId=pool,
        quoteId=f"pq_{'live' if live else 'test'}_{transact_id[8:]}q",
        **extra,
    )
    envelope["livemode"] = live
    return envelope


def settle(transact_id, reserved_ago, **options):
    reserved_at = iso(datetime.now(UTC) - reserved_ago)
    history = [
        {"status": "reserved", "at": reserved_at},
        {"status": "settled", "at": iso(datetime.now(UTC))},
    ]
    return reserved(transact_id, reserved_ago, history=history, **options)


M, H = timedelta(minutes=1), timedelta(hours=1)


@pytest.fixture
def queue_data(tmp_path):
    """Five trades past the 15-minute SLA in each age band, and two that are not stuck."""
    import_events(
        tmp_path,
        reserved("pt_live_Q01", 30 * M),
        reserved("pt_live_Q02", 2 * H, partner="ptn_globex"),
        reserved("pt_live_Q03", 5 * H, pool="USD-USDC"),
        reserved("pt_live_Q04", 30 * H, pool="USD-USDC"),
        reserved("pt_test_Q05", 50 * M, partner="ptn_sandbox"),
        reserved("pt_live_Q06", 10 * M),  # within the SLA
        settle("pt_live_Q07", 3 * H),  # no longer reserved
    )


OLDEST_FIRST = ["pt_live_Q04", "pt_live_Q03", "pt_live_Q02", "pt_test_Q05", "pt_live_Q01"]


@pytest.fixture
def many(tmp_path):
    """Thirty stuck trades: twenty in EUR-USDT, ten in GBP-USDT, a minute apart."""
    import_events(
        tmp_path,
        *[
            reserved(f"pt_live_M{i:02d}", (40 + i) * M, pool="EUR-USDT" if i < 20 else "GBP-USDT")
            for i in range(30)
        ],
    )


def shown(response):
    assert response.status_code == 200
    return [trade.transact_id for trade in response.context["rows"]]


def next_link(response):
    found = re.search(r'<a href="([^"]*)"[^>]*rel="next"', response.content.decode())
    return found and html.unescape(found.group(1))


def walk(client, url):
    seen = []
    while url:
        response = client.get(url)
        seen += shown(response)
        url = next_link(response)
    return seen


def histogram(response):
    """{pool: {band: count}} as drawn in the SVG."""
    drawn = {}
    text = response.content.decode()
    for pool, body in re.findall(
        r'<g class="pool" data-pool="([^"]+)">(.*?)<text class="pool', text, re.S
    ):
        drawn[pool] = {
            band: int(count)
            for band, count in re.findall(r'data-band="([^"]+)" data-count="(\d+)"', body)
        }
    return drawn


def dry_run(client, action="repoll", **filters):
    response = client.post(f"{QUEUE}/bulk", {"action": action, **filters})
    return response


def confirm_data(response, reason="ticket OPS-42: upstream webhook outage"):
    """The confirm form of a dry run, filled in as a person would."""
    form = response.context["form"]
    data = {"action": response.context["word"], **response.context["filters"]}
    data |= {"key": form["key"].value(), "drawn": form["drawn"].value(), "reason": reason}
    return data


# --- who is listed --------------------------------------------------------------


def test_the_queue_lists_exactly_the_trades_past_their_pool_sla_oldest_first(support, queue_data):
    assert shown(support.get(QUEUE)) == OLDEST_FIRST


def test_scenario_data_stuck_trades_are_listed_and_nothing_else(support, network):
    now = timezone.now()
    expected = [
        trade.transact_id
        for trade in Trade.objects.select_related("pool").order_by("reserved_at", "id")
        if trade.status == "reserved"
        and now - trade.reserved_at > timedelta(minutes=trade.pool.sla_minutes)
    ]

    seen = walk(support, f"{QUEUE}?per_page=2")

    stuck = Trade.objects.get(order__partner_reference="scn_stuck_reserved").transact_id
    assert stuck in seen
    assert seen == expected


def test_every_role_reads_the_queue_and_it_asks_for_sign_in(client, request, queue_data):
    assert client.get(QUEUE).status_code == 302
    for role in ("support", "operations", "admin"):
        client.force_login(request.getfixturevalue(f"{role}_user"))
        assert shown(client.get(QUEUE)) == OLDEST_FIRST


def test_a_row_shows_age_partner_pool_amount_last_poll_and_last_delivery(support, tmp_path):
    first = reserved("pt_live_R01", 2 * H + 5 * M, event_id="evt_reservedR01")
    import_events(tmp_path, first, envelopes.delivery("evt_reservedR01", outcome="failed"))
    poll = reserved("pt_live_R01", 2 * H + 5 * M, event_id="evt_pollR01")
    pipeline.ingest([parse_envelope(poll)], "poll")

    response = support.get(QUEUE)

    row = response.context["rows"][0]
    assert row.age == "2 h 5 min"
    assert row.last_poll.event_id == "evt_pollR01"
    assert row.last_delivery.event_id == "evt_reservedR01"
    assert row.last_delivery.outcome == "failed"
    text = response.content.decode()
    assert "ptn_acme" in text and "EUR-USDT" in text and "100.00 EUR" in text
    assert 'href="/orders/ptn_acme/ref_R01/"' in text


def test_a_day_of_status_reads_leaves_the_last_delivery_and_shows_the_newest_read(
    support, tmp_path
):
    sent = reserved("pt_live_R02", 30 * H, event_id="evt_reservedR02")
    import_events(tmp_path, sent, envelopes.delivery("evt_reservedR02", outcome="succeeded"))
    # The 5-minute re-poll: status reads of ours, each its own event, after the delivery.
    reads = [reserved("pt_live_R02", 30 * H, event_id=f"evt_pollR02n{i:03d}") for i in range(40)]
    for i, read in enumerate(reads):
        read["createdAt"] = iso(datetime.now(UTC) - (40 - i) * 5 * M)
    pipeline.ingest([parse_envelope(read) for read in reads], "poll")

    row = support.get(QUEUE).context["rows"][0]

    assert row.last_poll.event_id == "evt_pollR02n039"
    assert row.last_delivery.event_id == "evt_reservedR02"
    assert row.last_delivery.outcome == "succeeded"


# --- filters ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("partner=ptn_globex", ["pt_live_Q02"]),
        ("pool=USD-USDC", ["pt_live_Q04", "pt_live_Q03"]),
        ("livemode=test", ["pt_test_Q05"]),
        ("livemode=live&pool=EUR-USDT", ["pt_live_Q02", "pt_live_Q01"]),
        ("age=under-1h", ["pt_test_Q05", "pt_live_Q01"]),
        ("age=1-4h", ["pt_live_Q02"]),
        ("age=4-24h", ["pt_live_Q03"]),
        ("age=over-24h", ["pt_live_Q04"]),
        ("age=over-24h&pool=EUR-USDT", []),
    ],
)
def test_filters_narrow_the_queue(support, queue_data, query, expected):
    assert shown(support.get(f"{QUEUE}?{query}")) == expected


def test_a_bad_age_band_is_a_form_error_with_no_rows(support, queue_data):
    response = support.get(f"{QUEUE}?age=forever")

    assert response.context["rows"] == []
    assert "<strong>Age:</strong>" in response.content.decode()


def test_next_links_walk_the_queue_oldest_first_keeping_the_filters(support, many):
    seen = walk(support, f"{QUEUE}?pool=EUR-USDT&per_page=6")

    assert seen == [f"pt_live_M{i:02d}" for i in reversed(range(20))]


# --- histogram ------------------------------------------------------------------


def test_the_histogram_draws_per_pool_counts_per_age_band(support, queue_data):
    response = support.get(QUEUE)

    assert histogram(response) == {
        "EUR-USDT": {"under-1h": 2, "1-4h": 1, "4-24h": 0, "over-24h": 0},
        "USD-USDC": {"under-1h": 0, "1-4h": 0, "4-24h": 1, "over-24h": 1},
    }
    text = response.content.decode()
    assert '<svg class="histogram"' in text
    assert "<title>EUR-USDT, up to 1 h: 2 stuck trades</title>" in text
    assert "<script" not in text.split('<section id="results"')[1]
    assert 'style="' not in text.split('<section id="results"')[1]


def test_the_histogram_follows_the_filters(support, queue_data):
    response = support.get(f"{QUEUE}?partner=ptn_acme")

    assert histogram(response) == {
        "EUR-USDT": {"under-1h": 1, "1-4h": 0, "4-24h": 0, "over-24h": 0},
        "USD-USDC": {"under-1h": 0, "1-4h": 0, "4-24h": 1, "over-24h": 1},
    }


def test_every_statement_of_the_queue_page_keeps_one_plan(support, queue_data):
    # A statement still planned on every load costs the page its planning
    # each time (the histogram did: 0.25 ms of 0.6). As on a real network,
    # most kept minutes are older than the histogram's window: a plan shown
    # the window's start then costs fewer rows than the generic plan, and
    # PostgreSQL never kept that.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO records_reservedminute (pool_id, partner_id, livemode, minute, trades)"
            " SELECT p.id, o.partner_id, true,"
            "        now() - interval '3 days' - n * interval '1 minute', 1"
            "   FROM generate_series(1, 3000) n, records_pool p,"
            "        (SELECT partner_id FROM records_order LIMIT 1) o"
            "  WHERE p.pool_id = 'EUR-USDT'"
        )
        cursor.execute("ANALYZE records_reservedminute")

    kept = plans_kept(support, QUEUE)

    # the session, the histogram, the pools, the last scheduled run, the page,
    # what is beside its rows
    assert len(kept) >= 6, kept
    assert [sql for sql, (generic, _) in kept.items() if not generic] == []


def test_the_histogram_reads_its_window_of_minutes_by_the_index_in_any_plan(support, queue_data):
    now = timezone.now()
    sql, params = stuck._kept_query(now, now - 25 * H, None, None)
    times = ", ".join(f"'{moment.isoformat()}'" for moment in params)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("SET LOCAL enable_seqscan = off")  # the test's tables are tiny
        types = ", ".join(["timestamptz"] * len(params))
        cursor.execute(f"PREPARE kept({types}) AS {numbered(sql)}")
        cursor.execute(f"EXPLAIN EXECUTE kept({times})")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("DEALLOCATE kept")

    scan = re.search(
        r"(?:Index Scan using|Bitmap Index Scan on) reserved_minute_key .*\n\s+Index Cond: (.*)",
        plan,
    )
    assert scan, plan
    # (an InitPlan's value: $0 up to PostgreSQL 16, "(InitPlan 1).col1" from 17)
    assert re.search(r"minute > (\$\d+|\(InitPlan \d+\)\.col\d+)", scan[1]), scan[1]
    assert "minute < 'infinity'" in scan[1], scan[1]


def test_the_figure_is_drawn_again_only_when_what_it_shows_changes(
    support, operations_user, queue_data, tmp_path, monkeypatch
):
    from django.test import Client

    from lib.drawn import Drawn
    from queues import charts

    ops = Client()
    ops.force_login(operations_user)

    drawn = []
    draw = charts.draw_histogram
    monkeypatch.setattr(charts, "draw_histogram", lambda ages: drawn.append(ages) or draw(ages))
    monkeypatch.setattr(charts, "_FIGURES", Drawn(256))

    first = support.get(QUEUE)
    again = support.get(QUEUE)
    assert len(drawn) == 1
    assert histogram(again) == histogram(first)

    # A new stuck trade, a changed SLA, the admin's column, a filter: each drawn anew.
    import_events(tmp_path, reserved("pt_live_Q08", 20 * M, partner="ptn_globex"))
    assert histogram(support.get(QUEUE))["EUR-USDT"]["under-1h"] == 3
    Pool.objects.filter(pool_id="USD-USDC").update(sla_minutes=60)
    assert '<td class="num">60 min</td>' in support.get(QUEUE).content.decode()
    assert "/pools/EUR-USDT/sla" not in support.get(QUEUE).content.decode()  # kept
    assert "/pools/EUR-USDT/sla" in ops.get(QUEUE).content.decode()
    assert "matching the filters" not in support.get(QUEUE).content.decode()  # kept
    assert "matching the filters" in support.get(f"{QUEUE}?pool=EUR-USDT").content.decode()
    assert len(drawn) == 5


# --- CSV --------------------------------------------------------------------------


def test_csv_holds_the_whole_filtered_set_oldest_first(support, many, operations_user):
    Claim.objects.create(trade=Trade.objects.get(transact_id="pt_live_M19"), user=operations_user)

    response = support.get(f"{QUEUE}?pool=EUR-USDT&per_page=5&format=csv")

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    header, body = rows[0], rows[1:]
    assert header[:2] == ["transactId", "partnerId"]
    assert [row[0] for row in body] == [f"pt_live_M{i:02d}" for i in reversed(range(20))]
    assert dict(zip(header, body[0], strict=True))["claimedBy"] == "olga-operations"


# --- query counts -----------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["queue_data", "many"])
def test_the_queue_page_runs_a_fixed_number_of_queries(
    ops, request, fixture, django_assert_max_num_queries
):
    request.getfixturevalue(fixture)
    ScheduledRunFactory()

    # session, user with role, page rows, last polls, last deliveries, claims, pools,
    # the kept histogram, last scheduled run; then the session's idle-timeout
    # save (savepoint, update, release).
    with django_assert_max_num_queries(12):
        response = ops.get(QUEUE)
    assert response.context["rows"]


# --- support reads, does not act -------------------------------------------------


def test_support_sees_no_claim_or_bulk_buttons(support, queue_data):
    text = support.get(QUEUE).content.decode()

    assert "/claim" not in text
    assert 'action="/queues/stuck/bulk"' not in text
    assert "/sla" not in text


def test_support_cannot_claim_bulk_or_change_an_sla(support, queue_data):
    responses = [
        support.post(f"{QUEUE}/pt_live_Q01/claim"),
        support.post(f"{QUEUE}/pt_live_Q01/unclaim"),
        support.post(f"{QUEUE}/bulk", {"action": "repoll"}),
        support.post(
            f"{QUEUE}/bulk/confirm",
            {"action": "repoll", "key": "k" * 20, "drawn": "5:x", "reason": "because"},
        ),
        support.get("/pools/EUR-USDT/sla"),
        support.post("/pools/EUR-USDT/sla", {"minutes": 30, "reason": "because"}),
    ]

    assert [r.status_code for r in responses] == [403] * 6
    assert not Claim.objects.exists()
    assert not Run.objects.exists()
    assert not Entry.objects.exists()
    assert Pool.objects.get(pool_id="EUR-USDT").sla_minutes == 15


def test_claim_endpoints_take_post_only(ops, queue_data):
    assert ops.get(f"{QUEUE}/pt_live_Q01/claim").status_code == 405


# --- claims ---------------------------------------------------------------------------


def test_operations_claims_a_trade_and_the_claim_is_audited(ops, operations_user, queue_data):
    response = ops.post(f"{QUEUE}/pt_live_Q01/claim")

    assert response.status_code == 302
    claim = Claim.objects.get()
    assert (claim.trade.transact_id, claim.user) == ("pt_live_Q01", operations_user)
    entry = Entry.objects.get()
    assert (entry.action, entry.target, entry.result) == ("queue.claim", "pt_live_Q01", "ok")
    assert (entry.actor, entry.role) == (operations_user, "operations")
    assert entry.order.partner_reference == "ref_Q01"
    row = next(t for t in ops.get(QUEUE).context["rows"] if t.transact_id == "pt_live_Q01")
    assert row.holder.user == operations_user


def test_claiming_what_you_hold_is_a_no_op(ops, queue_data):
    ops.post(f"{QUEUE}/pt_live_Q01/claim")
    ops.post(f"{QUEUE}/pt_live_Q01/claim")

    assert Claim.objects.count() == 1
    assert Entry.objects.count() == 1


def test_htmx_claim_swaps_the_row(ops, queue_data):
    response = ops.post(f"{QUEUE}/pt_live_Q01/claim", headers={"HX-Request": "true"})

    text = response.content.decode()
    assert response.status_code == 200
    assert text.strip().startswith('<tr id="stuck-pt_live_Q01"')
    assert "olga-operations" in text and ">Unclaim<" in text
    assert "<html" not in text

    response = ops.post(f"{QUEUE}/pt_live_Q01/unclaim", headers={"HX-Request": "true"})
    assert ">Claim<" in response.content.decode()
    assert not Claim.objects.exists()
    assert list(Entry.objects.order_by("id").values_list("action", flat=True)) == [
        "queue.claim",
        "queue.unclaim",
    ]


def test_a_trade_someone_else_holds_is_refused_to_operations(client, ops, queue_data):
    ops.post(f"{QUEUE}/pt_live_Q01/claim")
    other = create_user("otto-operations", PASSWORD, "operations")
    client.force_login(other)

    response = client.post(f"{QUEUE}/pt_live_Q01/claim", follow=True)
    assert "olga-operations holds pt_live_Q01" in response.content.decode()
    htmx = client.post(f"{QUEUE}/pt_live_Q01/claim", headers={"HX-Request": "true"})
    assert 'role="alert"' in htmx.content.decode()
    unclaim = client.post(f"{QUEUE}/pt_live_Q01/unclaim")

    assert unclaim.status_code == 302
    assert Claim.objects.get().user.username == "olga-operations"
    refused = Entry.objects.filter(actor=other)
    assert {e.result for e in refused} == {"refused"}
    assert refused.count() == 3


def test_an_admin_takes_a_claim_over_and_the_entry_says_from_whom(
    client, ops, admin_user, queue_data
):
    ops.post(f"{QUEUE}/pt_live_Q01/claim")
    client.force_login(admin_user)

    client.post(f"{QUEUE}/pt_live_Q01/claim")

    assert Claim.objects.get().user == admin_user
    entry = Entry.objects.get(actor=admin_user)
    assert (entry.action, entry.detail) == ("queue.take_over", "taken over from olga-operations")


def test_a_trade_no_longer_reserved_cannot_be_claimed(ops, queue_data):
    response = ops.post(f"{QUEUE}/pt_live_Q07/claim", follow=True)

    assert "is settled now" in response.content.decode()
    assert not Claim.objects.exists()


def test_claiming_an_unknown_trade_is_404(ops, queue_data):
    assert ops.post(f"{QUEUE}/pt_live_NOPE/claim").status_code == 404


# --- bulk: dry run and confirm ---------------------------------------------------------


def test_the_dry_run_counts_the_whole_filtered_set_not_the_page(ops, many):
    page = ops.get(f"{QUEUE}?pool=EUR-USDT&per_page=5")
    expected = page.context["filters"].qs.count()
    assert expected == 20 > len(page.context["rows"])
    assert '<input type="hidden" name="pool" value="EUR-USDT">' in page.content.decode()

    response = dry_run(ops, pool="EUR-USDT")

    assert response.status_code == 200
    assert response.context["count"] == expected
    assert len(response.context["sample"]) == 10
    assert response.context["sample"][0].transact_id == "pt_live_M19"  # oldest first
    assert '<span id="dry-run-count">20</span>' in response.content.decode()
    assert not Run.objects.exists()


def test_confirm_makes_one_run_with_every_target(ops, operations_user, many):
    asked = dry_run(ops, pool="EUR-USDT", age="under-1h")
    count = asked.context["count"]
    assert count == 20

    response = ops.post(f"{QUEUE}/bulk/confirm", confirm_data(asked))

    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/actions/runs/{run.pk}/"
    assert (run.action, run.user, run.total, run.state) == (
        "bulk.repoll",
        operations_user,
        count,
        "queued",
    )
    assert run.target == "20 stuck trades"
    assert run.params["targets"] == [f"pt_live_M{i:02d}" for i in reversed(range(20))]
    assert run.params["filters"] == {"pool": "EUR-USDT", "age": "under-1h"}
    assert run.reason == "ticket OPS-42: upstream webhook outage"


def test_replay_all_makes_a_bulk_replay_run(ops, many):
    asked = dry_run(ops, action="replay", pool="GBP-USDT")

    ops.post(f"{QUEUE}/bulk/confirm", confirm_data(asked))

    run = Run.objects.get()
    assert (run.action, run.total) == ("bulk.replay", 10)


def test_submitting_the_same_confirm_form_twice_makes_one_run(ops, many):
    data = confirm_data(dry_run(ops))

    first = ops.post(f"{QUEUE}/bulk/confirm", data)
    second = ops.post(f"{QUEUE}/bulk/confirm", data, follow=True)

    assert Run.objects.count() == 1
    assert second.redirect_chain[-1][0] == first["Location"]
    assert "Already submitted" in second.content.decode()


@pytest.mark.parametrize(
    "change",
    [
        lambda: reserved("pt_live_NEW", 3 * H),  # a trade joined the set
        lambda: settle("pt_live_M05", 45 * M),  # a trade left it
    ],
)
def test_a_set_that_changed_since_the_dry_run_is_refused(ops, many, tmp_path, change):
    data = confirm_data(dry_run(ops, pool="EUR-USDT"))
    import_events(tmp_path, change())

    response = ops.post(f"{QUEUE}/bulk/confirm", data)

    assert response.status_code == 409
    assert "changed since the page was drawn" in response.content.decode()
    assert not Run.objects.exists()
    assert Entry.objects.get().result == "refused"
    # The page now shows the set as it is, ready to confirm anew.
    assert (
        response.context["count"]
        == Trade.objects.filter(status="reserved", pool__pool_id="EUR-USDT").count()
    )


def test_a_confirm_without_a_reason_is_400_and_runs_nothing(ops, many):
    data = confirm_data(dry_run(ops), reason="  ")

    response = ops.post(f"{QUEUE}/bulk/confirm", data)

    assert response.status_code == 400
    assert "A reason is required" in response.content.decode()
    assert not Run.objects.exists()


def test_an_empty_set_says_so_and_runs_nothing(ops, queue_data):
    asked = dry_run(ops, pool="GBP-USDT")

    assert asked.context["count"] == 0
    assert "there is nothing to do" in asked.content.decode()
    assert 'id="confirm-button"' not in asked.content.decode()
    response = ops.post(f"{QUEUE}/bulk/confirm", confirm_data(asked))
    assert response.status_code == 409
    assert "nothing was run" in response.content.decode()
    assert not Run.objects.exists()


def test_a_set_over_the_cap_is_refused(ops, many, monkeypatch):
    monkeypatch.setattr("queues.services.BULK_CAP", 25)

    asked = dry_run(ops)
    assert asked.context["too_many"]
    assert 'id="confirm-button"' not in asked.content.decode()
    data = confirm_data(asked) | {"drawn": "30:whatever"}
    response = ops.post(f"{QUEUE}/bulk/confirm", data)

    assert response.status_code == 409
    assert "More than 25 trades match" in response.content.decode()
    assert not Run.objects.exists()


def test_a_bulk_request_with_no_action_is_400(ops, many):
    assert ops.post(f"{QUEUE}/bulk", {"action": "delete"}).status_code == 400
    assert ops.post(f"{QUEUE}/bulk", {"action": "repoll", "age": "forever"}).status_code == 400


# --- the scheduled re-poll ----------------------------------------------------------------


def test_the_queue_shows_when_the_scheduled_repoll_last_ran(support, queue_data, operations_user):
    assert "has not run yet" in support.get(QUEUE).content.decode()
    for done, failed in ((5, 0), (2, 1)):
        ScheduledRunFactory(
            key=f"schedule-{done}",
            total=3,
            done=done,
            failed=failed,
            state="done",
        )
    # A person's bulk re-poll is not the schedule.
    Run.objects.create(key="mine", user=operations_user, action="bulk.repoll", target="x")

    text = support.get(QUEUE).content.decode()

    assert "2 done, 1 failed of 3" in text
    newest = Run.objects.get(key="schedule-2")
    assert f'href="/actions/runs/{newest.pk}/"' in text


# --- pool SLA -------------------------------------------------------------------------------


def test_operations_changes_a_pool_sla_and_the_queue_follows(ops, operations_user, queue_data):
    assert ops.get("/pools/EUR-USDT/sla").status_code == 200

    response = ops.post("/pools/EUR-USDT/sla", {"minutes": 60, "reason": "OPS-7 slow rail"})

    assert response.status_code == 302
    assert Pool.objects.get(pool_id="EUR-USDT").sla_minutes == 60
    entry = Entry.objects.get()
    assert (entry.action, entry.target, entry.detail, entry.reason) == (
        "pool.sla",
        "EUR-USDT",
        "15 → 60 min",
        "OPS-7 slow rail",
    )
    assert entry.actor == operations_user
    # Q01 (30 min) and Q05 (50 min) are within an hour now; Q02 (2 h) is not.
    assert shown(ops.get(QUEUE)) == ["pt_live_Q04", "pt_live_Q03", "pt_live_Q02"]

    ops.post("/pools/EUR-USDT/sla", {"minutes": 5, "reason": "OPS-8 back to fast"})
    assert "pt_live_Q06" in shown(ops.get(QUEUE))  # 10 min old, past a 5-minute SLA


@pytest.mark.parametrize(
    "data",
    [{"minutes": 0, "reason": "x"}, {"minutes": 1441, "reason": "x"}, {"minutes": 30}],
)
def test_a_bad_sla_change_is_400_and_changes_nothing(ops, queue_data, data):
    response = ops.post("/pools/EUR-USDT/sla", data)

    assert response.status_code == 400
    assert Pool.objects.get(pool_id="EUR-USDT").sla_minutes == 15
    assert not Entry.objects.exists()


def test_the_same_sla_again_changes_nothing_and_writes_nothing(ops, queue_data):
    ops.post("/pools/EUR-USDT/sla", {"minutes": 15, "reason": "no-op"})

    assert not Entry.objects.exists()


def test_the_queue_page_shows_each_pool_sla_with_a_change_link_for_operations(ops, queue_data):
    text = ops.get(QUEUE).content.decode()

    assert re.search(
        r'data-pool="USD-USDC">\s*<td>USD-USDC</td>\s*<td class="num">15 min</td>', text
    )
    assert 'href="/pools/USD-USDC/sla"' in text


def test_a_bad_filter_shows_why_and_no_summary_or_rows(ops, queue_data):
    response = ops.get(f"{QUEUE}?livemode=sometimes")

    text = response.content.decode()
    assert "Fix the filters to see rows" in text
    assert 'id="scheduled-repoll"' not in text
    assert 'class="plain list stuck"' not in text
    # Nothing stands in for the summary it does not draw.
    assert "False" not in text
