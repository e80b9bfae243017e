"""The daily close: every exception kind built from sandbox data, on the page, in
the CSV and the JSON; the close as a record that late entries do not rewrite; and
operations working an exception (support reads only)."""

import csv
import io
from datetime import UTC, date, datetime

import orjson
import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.permissions import Action
from audit.models import Entry
from reconciliation import kinds, services, tasks
from reconciliation.models import Close, Resolution
from records.models import Trade
from sandbox.catalogue import RECON_PLANS
from tests import envelopes
from tests.helpers import import_events

pytestmark = pytest.mark.django_db

DAY = "2026-11-20"  # the sandbox stream's first day: every scenario plays in it
URL = f"/reconciliation/{DAY}"
# An entry naming no known trade has no order: its line names the trade it claims.
UNKNOWN_TRADE_KINDS = {kinds.SETTLEMENT_UNKNOWN_TRADE, kinds.FEE_WITHOUT_TRADE}


def day_json(client, url=URL):
    response = client.get(url, {"format": "json"})
    assert response.status_code == 200
    return response.json()


def by_reference(exceptions, reference):
    return [e for e in exceptions if e["partnerReference"] == reference]


def trade_of(reference):
    return Trade.objects.get(order__partner_reference=reference)


def test_the_sandbox_kinds_are_the_close_s_kinds():
    assert set(RECON_PLANS) == set(kinds.KINDS)


def test_every_kind_of_exception_from_the_sandbox_is_on_the_page_in_the_csv_and_json(
    support, exceptions_network
):
    data = day_json(support)

    assert data["closed"] is False and data["computedAt"]
    exceptions = data["exceptions"]
    assert {e["kind"] for e in exceptions} == set(kinds.KINDS)
    for kind in set(kinds.KINDS) - UNKNOWN_TRADE_KINDS:
        mine = by_reference(exceptions, f"recon_{kind}")
        assert kind in {e["kind"] for e in mine}, kind
        assert all(e["timeline"].startswith("/orders/ptn_acme/recon_") for e in mine)
    # An entry under an unknown id: paired with its trade by amount and time.
    wrong_id = trade_of("recon_settlement_unknown_trade").transact_id
    [unknown] = [e for e in exceptions if e["kind"] == kinds.SETTLEMENT_UNKNOWN_TRADE]
    assert unknown["partnerReference"] is None and unknown["timeline"].startswith("/id/ledger_")
    assert f"By amount and time it matches {wrong_id}" in unknown["summary"]
    [fee] = [e for e in exceptions if e["kind"] == kinds.FEE_WITHOUT_TRADE]
    assert "which the panel has never seen" in fee["summary"]
    # The named scenarios' own faults are found too.
    assert "settlement_trade_not_settled" in {
        e["kind"] for e in by_reference(exceptions, "scn_ledger_without_settle")
    }
    # One line each, support-safe: ids, amounts, statuses, times.
    [mismatch] = by_reference(exceptions, "recon_settlement_amount_mismatch")
    trade = trade_of("recon_settlement_amount_mismatch")
    assert mismatch["summary"].endswith(
        f"the trade delivers {trade.deliver_value:.2f} {trade.deliver_currency}."
    )
    assert f"{trade.amount_currency};" in mismatch["summary"]

    page = support.get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Not closed: computed live" in html
    for exception in exceptions:
        assert f'data-subject="{exception["subject"]}"' in html
        assert f'href="{exception["timeline"]}"' in html
    assert "Resolve…" not in html  # support reads only
    assert 'class="recon-chart"' in html and '<title id="recon-chart-title">' in html

    response = support.get(URL, {"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    from_csv = {(r["kind"], r["subject"], r["summary"]) for r in rows if r["record"] == "exception"}
    assert from_csv == {(e["kind"], e["subject"], e["summary"]) for e in exceptions}
    totals = [r for r in rows if r["record"] == "total"]
    assert sum(int(r["trades"]) for r in totals) == sum(t["trades"] for t in data["totals"]) > 0


def test_a_partner_order_id_that_reads_as_a_formula_is_escaped_in_the_csv(support, tmp_path):
    settled = [{"status": "reserved", "at": f"{DAY}T10:00:00Z"}]
    settled.append({"status": "settled", "at": f"{DAY}T10:01:00Z"})
    import_events(
        tmp_path,
        envelopes.trade(
            "settled", transact_id="pt_live_FORMULA1", reference="=HYPERLINK(1)",
            history=settled, at=f"{DAY}T10:01:00Z",
        ),
    )  # fmt: skip

    response = support.get(URL, {"format": "csv"})

    rows = [r for r in csv.DictReader(io.StringIO(response.content.decode()))]
    refs = {r["partnerReference"] for r in rows if r["transactId"] == "pt_live_FORMULA1"}
    assert refs == {"'=HYPERLINK(1)"}


def test_a_late_entry_closes_its_exception_by_itself_and_the_close_stays_as_it_was(
    support, exceptions_network, tmp_path
):
    trade = trade_of("recon_settled_without_settlement")
    live = day_json(support)
    assert trade.transact_id in {e["subject"] for e in live["exceptions"]}

    out = io.StringIO()
    call_command("close_day", DAY, stdout=out)
    assert "Closed 2026-11-20" in out.getvalue()
    closed = day_json(support)
    assert closed["closed"] is True and closed["closedBy"] == "cli"
    assert closed["exceptions"] == live["exceptions"]

    # The settlement arrives after the close.
    late = envelopes.ledger(
        "ledger_0pools_LATE01", transact_id=trade.transact_id, value=f"{trade.deliver_value:.2f}"
    )
    late["data"] |= {
        "amount": {"value": f"{trade.deliver_value:.2f}", "currency": trade.deliver_currency}
    }
    late["data"] |= {"postedAt": f"{DAY}T23:59:00Z", "poolId": trade.pool.pool_id}
    import_events(tmp_path, late)

    after = day_json(support)
    assert after["totals"] == closed["totals"]
    assert {e["subject"] for e in after["exceptions"]} == {
        e["subject"] for e in closed["exceptions"]
    }
    [fixed] = [e for e in after["exceptions"] if e["subject"] == trade.transact_id]
    assert fixed["state"] == "fixed"
    assert fixed["summary"] == next(
        e["summary"] for e in closed["exceptions"] if e["subject"] == trade.transact_id
    )
    assert "Closed by itself" in fixed["note"] and "ledger_0pools_LATE01" in fixed["note"]
    [arrival] = after["lateArrivals"]
    assert arrival["closes"] == [trade.transact_id]
    # The stored close itself did not move; closing again changes nothing.
    close = Close.objects.get(day=date(2026, 11, 20))
    assert close.exceptions.filter(subject=trade.transact_id).exists()
    out = io.StringIO()
    call_command("close_day", DAY, stdout=out)
    assert "already closed" in out.getvalue()
    assert Close.objects.count() == 1

    html = support.get(URL).content.decode()
    assert "Arrived after the close" in html and 'data-state="fixed"' in html


def test_on_a_day_not_closed_the_late_entry_simply_closes_the_exception(
    support, exceptions_network, tmp_path
):
    trade = trade_of("recon_returned_without_return")
    assert trade.transact_id in {e["subject"] for e in day_json(support)["exceptions"]}
    late = envelopes.ledger(
        "ledger_0pools_LATE02", transact_id=trade.transact_id, entry_type="return"
    )
    late["data"] |= {"poolId": trade.pool.pool_id, "postedAt": f"{DAY}T22:00:00Z"}
    import_events(tmp_path, late)

    after = day_json(support)

    assert after["closed"] is False
    assert trade.transact_id not in {
        e["subject"] for e in after["exceptions"] if e["kind"] == kinds.RETURNED_WITHOUT_RETURN
    }


def work_url(kind, subject):
    return f"{URL}/{kind}/{subject}/work"


def confirm_form(client, kind, subject):
    page = client.get(work_url(kind, subject))
    assert page.status_code == 200
    form = page.context["form"]
    return {"key": form.initial["key"], "drawn": form.initial["drawn"]}


def test_operations_resolve_an_exception_with_a_reason_shown_on_the_timeline(
    ops, exceptions_network
):
    trade = trade_of("recon_duplicate_settlement")
    kind, subject = kinds.DUPLICATE_SETTLEMENT, trade.transact_id
    drawn = confirm_form(ops, kind, subject)

    answer = ops.post(
        work_url(kind, subject),
        drawn | {"reason": "ticket 88: 0Pools reversed one", "outcome": "resolved"},
    )

    assert answer.status_code == 302 and answer["Location"] == URL
    resolution = Resolution.objects.get()
    assert (resolution.kind, resolution.subject, resolution.state) == (kind, subject, "resolved")
    entry = Entry.objects.get(action=Action.RECON_RESOLVE)
    assert entry.order == trade.order and entry.result == Entry.Result.OK
    assert entry.reason == "ticket 88: 0Pools reversed one"
    timeline = ops.get(trade.order.get_absolute_url()).content.decode()
    assert "Reconciliation exception resolved of " + subject in timeline
    assert "ticket 88: 0Pools reversed one" in timeline
    # Filtered out by default, shown on asking, still there in the exports.
    assert f'data-subject="{subject}"' not in ops.get(URL).content.decode()
    shown = ops.get(URL, {"show": "all"}).content.decode()
    assert f'data-subject="{subject}" data-state="resolved"' in shown
    [exported] = [e for e in day_json(ops)["exceptions"] if e["subject"] == subject]
    assert exported["state"] == "resolved" and exported["resolution"]["by"] == "olga-operations"

    # The same form again: nothing new.
    again = ops.post(work_url(kind, subject), drawn | {"reason": "again", "outcome": "resolved"})
    assert again.status_code == 302
    assert Resolution.objects.count() == 1
    assert Entry.objects.filter(action=Action.RECON_RESOLVE).count() == 1


def test_a_stale_page_is_refused_and_nothing_is_resolved(ops, exceptions_network):
    trade = trade_of("recon_settled_without_fee")
    kind, subject = kinds.SETTLED_WITHOUT_FEE, trade.transact_id
    drawn = confirm_form(ops, kind, subject)

    answer = ops.post(
        work_url(kind, subject),
        drawn | {"drawn": "open:0000000000000000", "reason": "x", "outcome": "ignored"},
    )

    assert answer.status_code == 409
    assert "changed since the page was drawn" in answer.content.decode()
    assert not Resolution.objects.exists()
    refused = Entry.objects.get(action=Action.RECON_IGNORE)
    assert refused.result == Entry.Result.REFUSED and refused.order == trade.order
    # Worked by someone else meanwhile: refused too, the first decision stands.
    ops.post(work_url(kind, subject), drawn | {"reason": "fee waived", "outcome": "ignored"})
    other = confirm_form(ops, kind, subject)
    second = ops.post(work_url(kind, subject), other | {"reason": "late", "outcome": "resolved"})
    assert second.status_code == 409 and "already ignored" in second.content.decode()
    assert Resolution.objects.get().state == "ignored"


def test_support_reads_the_close_but_may_not_work_it(support, exceptions_network):
    trade = trade_of("recon_reserved_past_sla")
    url = work_url(kinds.RESERVED_PAST_SLA, trade.transact_id)

    assert support.get(URL).status_code == 200
    assert support.get(url).status_code == 403
    assert support.post(url, {"reason": "x", "outcome": "resolved"}).status_code == 403
    assert not Resolution.objects.exists()


def test_reconciliation_opens_yesterday_and_a_bad_day_is_a_404(support):
    missing = support.get("/reconciliation/2026-13-01")
    assert missing.status_code == 404 and "YYYY-MM-DD" in missing.content.decode()

    with time_machine.travel(datetime(2026, 12, 1, 9, 0, tzinfo=UTC)):
        answer = support.get("/reconciliation/")

    assert answer.status_code == 302 and answer["Location"] == "/reconciliation/2026-11-30"


def test_a_day_not_over_cannot_be_closed_and_the_beat_closes_each_finished_day_once(settings):
    settings.OPSPANEL_CLOSE_GRACE_MINUTES = 30
    settings.OPSPANEL_CLOSE_CATCH_UP_DAYS = 2
    with time_machine.travel(datetime(2026, 11, 21, 0, 10, tzinfo=UTC)):
        with pytest.raises(CommandError, match="not over yet"):
            call_command("close_day", "2026-11-21", stdout=io.StringIO())
        # The 20th is not 30 minutes over: the two days before it are closed.
        assert tasks.close_finished_days() == ["2026-11-18", "2026-11-19"]
    with time_machine.travel(datetime(2026, 11, 21, 0, 45, tzinfo=UTC)):
        assert tasks.close_finished_days() == ["2026-11-20"]
        assert tasks.close_finished_days() == []
    assert sorted(Close.objects.values_list("closed_by", flat=True)) == ["schedule"] * 3
    assert services.days_to_close(datetime(2026, 11, 21, 1, 0, tzinfo=UTC)) == []


def test_a_late_entry_that_makes_an_exception_shows_as_new_beside_the_close(support, tmp_path):
    call_command("close_day", DAY, stdout=io.StringIO())
    late = envelopes.ledger("ledger_0pools_LATE03", transact_id="pt_live_NOBODY01")
    late["data"]["postedAt"] = f"{DAY}T12:00:00Z"
    import_events(tmp_path, late)

    data = day_json(support)

    assert data["closed"] is True and Close.objects.get().exceptions.count() == 0
    [new] = data["exceptions"]
    assert (new["kind"], new["subject"], new["state"]) == (
        kinds.SETTLEMENT_UNKNOWN_TRADE,
        "ledger_0pools_LATE03",
        "new",
    )
    assert "Not in the close" in new["note"]
    assert data["lateArrivals"][0]["opens"] == ["ledger_0pools_LATE03"]


def generate(*args):
    out = io.StringIO()
    call_command("sandbox", "generate", "--orders", "2", "--seed", "4", *args, stdout=out)
    return out.getvalue().encode()


def test_the_sandbox_switch_adds_one_contract_order_per_kind_asked_and_is_repeatable():
    from ingest.contract import parse_envelope

    asked = "duplicate_settlement,fee_without_trade"
    raw = generate("--exceptions", asked)

    assert raw == generate("--exceptions", asked)
    parsed = [parse_envelope(orjson.loads(line)) for line in raw.splitlines()]
    references = {p.data.get("partnerReference") for p in parsed} - {None}
    assert {r for r in references if r.startswith("recon_")} == {
        "recon_duplicate_settlement",
        "recon_fee_without_trade",
    }
    with pytest.raises(CommandError, match="unknown exception kind"):
        generate("--exceptions", "no_such_kind")
