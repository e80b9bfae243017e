"""The audit log page: newest first, filters, keyset pages, CSV, links to timelines."""

import csv
import html
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from audit import log as audit
from audit.models import Entry
from records.models import Order
from tests import envelopes
from tests.helpers import import_events

pytestmark = pytest.mark.django_db

AUDIT = "/audit/"


@pytest.fixture
def order(tmp_path):
    import_events(tmp_path, envelopes.trade("reserved"))
    return Order.objects.get(partner_reference="order_7841")


def at(day, hour=12):
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def record(moment, **fields):
    with time_machine.travel(moment, tick=False):
        return audit.record(**fields)


@pytest.fixture
def entries(order, operations_user, admin_user, support_user):
    """One entry a day from 18 to 23 November, each different in one way."""
    return {
        "claim": record(
            at(18),
            actor=operations_user,
            action="queue.claim",
            target="pt_live_9A2",
            order=order,
            reason="looking into it",
        ),
        "unclaim": record(
            at(19),
            actor=operations_user,
            action="queue.unclaim",
            target="pt_live_9A2",
            order=order,
            reason='=HYPERLINK("http://evil","x")',
        ),
        "schedule": record(
            at(20),
            actor=None,
            actor_name="schedule",
            action="trade.repoll",
            target="pt_live_9A2",
            order=order,
            result=Entry.Result.NOT_FOUND,
            before_status="reserved",
            after_status="reserved",
            run_id=7,
        ),
        "sla": record(
            at(21),
            actor=admin_user,
            action="pool.sla",
            target="EUR-USDT",
            reason="OPS-7",
            detail="15 → 30 min",
        ),
        "refused": record(
            at(22),
            actor=support_user,
            action="event.replay",
            target="evt_t000001",
            result=Entry.Result.REFUSED,
            detail="stale page",
        ),
        "bulk": record(
            at(23, 23),
            actor=operations_user,
            action="bulk.replay",
            target="12 stuck trades",
            result=Entry.Result.REFUSED,
        ),
    }


def shown(response):
    assert response.status_code == 200
    return [entry.pk for entry in response.context["rows"]]


def keys(entries, *names):
    return [entries[name].pk for name in names]


def next_link(response):
    found = re.search(r'<a href="([^"]*)"[^>]*rel="next"', response.content.decode())
    return found and html.unescape(found.group(1))


# --- reading -------------------------------------------------------------------


def test_the_audit_log_asks_for_sign_in(client):
    response = client.get(AUDIT)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("role", ["support", "operations", "admin"])
def test_every_role_reads_the_audit_log_newest_first(client, request, entries, role):
    client.force_login(request.getfixturevalue(f"{role}_user"))

    assert shown(client.get(AUDIT)) == keys(
        entries, "bulk", "refused", "sla", "schedule", "unclaim", "claim"
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("actor=OLGA-operations", ["bulk", "unclaim", "claim"]),
        ("actor=schedule", ["schedule"]),
        ("action=queue.claim", ["claim"]),
        ("action=queue.", ["unclaim", "claim"]),
        ("result=refused", ["bulk", "refused"]),
        ("result=not_found", ["schedule"]),
        ("target=EUR-USDT", ["sla"]),
        ("target=pt_live_9A2&actor=olga-operations", ["unclaim", "claim"]),
        # Whole UTC days, both ends included: 23:00 on the last day counts.
        ("date_from=2026-11-21&date_to=2026-11-23", ["bulk", "refused", "sla"]),
        ("date_to=2026-11-18", ["claim"]),
        ("actor=nobody", []),
    ],
)
def test_filters_narrow_the_audit_log(support, entries, query, expected):
    assert shown(support.get(f"{AUDIT}?{query}")) == keys(entries, *expected)


def test_a_bad_filter_is_a_form_error_with_no_rows(support, entries):
    response = support.get(f"{AUDIT}?result=maybe")

    assert response.context["rows"] == []
    assert "<strong>Result:</strong>" in response.content.decode()


def test_next_links_walk_every_entry_once_newest_first(support, operations_user):
    for i in range(25):
        record(
            at(1) + timedelta(minutes=i // 2),  # pairs share a time: paged by id
            actor=operations_user,
            action="queue.claim",
            target=f"pt_live_P{i:02d}",
        )
    seen, url = [], f"{AUDIT}?per_page=7"
    while url:
        response = support.get(url)
        seen += shown(response)
        url = next_link(response)

    assert seen == list(Entry.objects.order_by("-at", "-id").values_list("pk", flat=True))
    assert len(seen) == 25


# --- links ---------------------------------------------------------------------


def test_rows_link_to_their_order_timeline_and_run(support, entries):
    text = support.get(AUDIT).content.decode()

    rows = dict(
        re.findall(r'<td class="id">([^<]+)</td>.*?<td class="order">(.*?)</td>', text, re.S)
    )
    assert 'href="/orders/ptn_acme/order_7841/"' in rows["pt_live_9A2"]
    assert "href" not in rows["EUR-USDT"]
    assert 'href="/actions/runs/7/"' in text


def test_a_claim_made_through_the_queue_shows_in_the_audit_log(client, operations_user, order):
    client.force_login(operations_user)
    client.post("/queues/stuck/pt_live_9A2/claim")
    response = client.get(f"{AUDIT}?action=queue.claim&target=pt_live_9A2")

    (entry,) = response.context["rows"]
    assert entry.actor_name == "olga-operations"
    assert entry.timeline == "/orders/ptn_acme/order_7841/"


# --- CSV -----------------------------------------------------------------------


def test_csv_holds_the_whole_filtered_log_newest_first_and_defused(support, entries):
    response = support.get(f"{AUDIT}?actor=olga-operations&per_page=1&format=csv")

    assert response["Content-Type"].startswith("text/csv")
    assert re.fullmatch(
        r'attachment; filename="audit-\d{4}-\d{2}-\d{2}\.csv"', response["Content-Disposition"]
    )
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    header, body = rows[0], [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert header[:5] == ["at", "actor", "role", "action", "target"]
    assert [row["action"] for row in body] == ["bulk.replay", "queue.unclaim", "queue.claim"]
    assert body[1]["reason"] == '\'=HYPERLINK("http://evil","x")'
    assert body[2]["at"] == "2026-11-18T12:00:00Z"
    assert body[2]["partnerReference"] == "order_7841"


# --- cost ----------------------------------------------------------------------


def test_the_audit_page_runs_a_fixed_number_of_queries(
    support, entries, django_assert_max_num_queries
):
    # session, user, the user's role, one page of entries with their orders;
    # the session save.
    with django_assert_max_num_queries(7):
        assert len(shown(support.get(AUDIT))) == 6
