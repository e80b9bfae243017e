"""Guarded actions end to end: re-poll and replay, on a real Celery worker (the
configured broker), against the sandbox upstream and partner receiver running
as a real HTTP server on loopback."""

import logging

import httpx
import pytest
from django.core.management import call_command

from actions.models import Run
from audit.models import Entry
from partners.models import Endpoint, SigningSecret
from records.models import DeliveryAttempt, StatusChange, Trade, WebhookEvent
from sandbox.forbidden import FORBIDDEN_KEYS, FORBIDDEN_MARKERS
from tests.conftest import PASSWORD
from tests.helpers import received, wait_for

# Tests that need the Celery worker ask for ``worker`` and commit; the rest roll back.
pytestmark = pytest.mark.django_db


@pytest.fixture
def stuck(network):
    return Trade.objects.get(order__partner_reference="scn_stuck_reserved")


def signed_in(client, user):
    client.force_login(user)
    return client


def confirm_page(client, url):
    """GET the confirm step; return the form fields it carries."""
    response = client.get(url)
    assert response.status_code == 200
    form = response.context["form"]
    return {"key": form.initial["key"], "drawn": form.initial["drawn"]}


def post_confirmed(client, url, reason="ticket 4711: partner says pending", **overrides):
    fields = confirm_page(client, url) | {"reason": reason} | overrides
    return client.post(url, fields)


def finished(run_pk):
    return Run.objects.get(pk=run_pk).finished


# --- the permission matrix ----------------------------------------------------


@pytest.mark.parametrize("role", ["support", "operations", "admin"])
def test_every_role_may_repoll_one_trade(client, request, role, stuck, upstream, worker):
    user = request.getfixturevalue(f"{role}_user")

    response = post_confirmed(signed_in(client, user), f"/trades/{stuck.transact_id}/repoll")

    assert response.status_code == 302
    run = Run.objects.get()
    assert response["Location"] == f"/actions/runs/{run.pk}/"
    assert wait_for(lambda: finished(run.pk))


def test_a_user_without_a_role_gets_403_and_nothing_happens(
    client, stuck, upstream, django_user_model
):
    nobody = django_user_model.objects.create_user("nobody", password=PASSWORD)
    client.force_login(nobody)

    assert client.get(f"/trades/{stuck.transact_id}/repoll").status_code == 403
    response = client.post(
        f"/trades/{stuck.transact_id}/repoll",
        {"reason": "x", "key": "k" * 24, "drawn": "whatever"},
    )

    assert response.status_code == 403
    assert not Run.objects.exists()
    assert not Entry.objects.exists()


def test_signed_out_users_are_sent_to_sign_in(client, stuck):
    response = client.post(f"/trades/{stuck.transact_id}/repoll", {"reason": "x"})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert not Run.objects.exists()


# --- the confirm step ----------------------------------------------------------


def test_the_confirm_step_says_exactly_what_will_happen(client, support_user, stuck, upstream):
    page = signed_in(client, support_user).get(f"/trades/{stuck.transact_id}/repoll")

    text = page.content.decode()
    assert stuck.transact_id in text
    assert "127.0.0.1" in text  # the API host asked
    assert "It is reserved here now" in text
    assert not Run.objects.exists()


def test_a_missing_reason_is_400_and_nothing_runs(client, support_user, stuck, upstream):
    response = post_confirmed(
        signed_in(client, support_user), f"/trades/{stuck.transact_id}/repoll", reason=""
    )

    assert response.status_code == 400
    assert "A reason is required" in response.content.decode()
    assert not Run.objects.exists()


def test_a_double_submit_runs_the_action_once(client, support_user, stuck, upstream, worker):
    url = f"/trades/{stuck.transact_id}/repoll"
    fields = confirm_page(signed_in(client, support_user), url) | {"reason": "ticket 1"}

    first = client.post(url, fields)
    second = client.post(url, fields, follow=True)

    assert first.status_code == 302
    assert Run.objects.count() == 1
    assert "Already submitted" in second.content.decode()
    run = Run.objects.get()
    assert wait_for(lambda: finished(run.pk))
    assert Entry.objects.filter(action="trade.repoll").count() == 1
    assert [
        r["path"] for r in upstream.state.requests_seen() if stuck.transact_id in r["path"]
    ] == [f"/v1/trades/{stuck.transact_id}"]


def test_an_action_on_a_stale_page_is_refused_not_half_applied(
    client, support_user, stuck, upstream
):
    url = f"/trades/{stuck.transact_id}/repoll"
    fields = confirm_page(signed_in(client, support_user), url) | {"reason": "ticket 2"}
    # Meanwhile the trade settles (a webhook arrives).
    Trade.objects.filter(pk=stuck.pk).update(status="settled")

    response = client.post(url, fields)

    assert response.status_code == 409
    assert "changed since the page was drawn" in response.content.decode()
    assert not Run.objects.exists()
    refusal = Entry.objects.get()
    assert (refusal.result, refusal.actor_name) == ("refused", support_user.username)


def test_actions_are_rate_limited_per_user(
    client, support_user, network, upstream, worker, settings
):
    settings.OPSPANEL_ACTIONS_PER_MINUTE = 2
    # A settled trade: the re-polls that do run change nothing the next
    # confirm page was drawn from.
    settled = Trade.objects.get(order__partner_reference="scn_settled_ok")
    url = f"/trades/{settled.transact_id}/repoll"
    signed_in(client, support_user)

    codes = [post_confirmed(client, url).status_code for _ in range(3)]

    assert codes == [302, 302, 429]
    assert Run.objects.count() == 2
    # (let the worker finish them before the database is emptied)
    assert wait_for(lambda: all(run.finished for run in Run.objects.all()))


# --- re-poll against the sandbox upstream -------------------------------------


def test_repoll_applies_the_authoritative_status_through_the_pipeline(
    client, operations_user, stuck, upstream, worker
):
    response = post_confirmed(
        signed_in(client, operations_user), f"/trades/{stuck.transact_id}/repoll"
    )
    run = Run.objects.get()
    assert wait_for(lambda: finished(run.pk))

    stuck.refresh_from_db()
    assert stuck.status == "settled"
    move = StatusChange.objects.get(trade=stuck, to_status="settled")
    assert (move.source, move.outcome) == ("poll", "applied")
    poll = WebhookEvent.objects.get(source="poll", subject_id=stuck.transact_id)
    text = str(poll.payload)
    assert not [m for m in FORBIDDEN_MARKERS if m in text]
    entry = Entry.objects.get(action="trade.repoll")
    assert (entry.result, entry.before_status, entry.after_status) == ("ok", "reserved", "settled")
    assert entry.reason == "ticket 4711: partner says pending"
    assert entry.role == "operations"
    # The timeline shows the poll, its result and the status it changed.
    timeline = client.get(stuck.order.get_absolute_url(), {"format": "json"}).json()
    kinds = [(i["kind"], i["source"]) for i in timeline["items"]]
    assert ("status", "poll") in kinds
    assert any(i["kind"] == "action" and "Re-poll" in i["summary"] for i in timeline["items"])
    assert response.status_code == 302


def test_repoll_of_a_trade_0pools_does_not_know(client, support_user, network, upstream, worker):
    trade = Trade.objects.get(order__partner_reference="scn_settled_ok")
    httpx.post(
        f"{upstream.url}/_sandbox/faults",
        json={"match": trade.transact_id, "status": 404, "times": 1},
    )

    post_confirmed(signed_in(client, support_user), f"/trades/{trade.transact_id}/repoll")
    run = Run.objects.get()
    assert wait_for(lambda: finished(run.pk))

    entry = Entry.objects.get(action="trade.repoll")
    assert entry.result == "not_found"
    assert "0Pools does not know this trade" in entry.detail
    page = client.get(f"/actions/runs/{run.pk}/").content.decode()
    assert "0Pools does not know this trade" in page


@pytest.mark.parametrize(
    ("faults", "tries", "result"),
    [
        ([{"status": 429, "retry_after": 1, "times": 1}], 2, "ok"),
        ([{"status": 503, "times": 2}], 3, "ok"),
        ([{"delay": 2.0, "times": 1}], 2, "ok"),  # a slow answer times out (1 s), then succeeds
        ([{"status": 500, "times": 10}], 4, "failed"),
    ],
    ids=["429-retry-after", "5xx-then-ok", "timeout-then-ok", "5xx-gives-up"],
)
def test_repoll_retries_a_bounded_number_of_times(
    client, support_user, stuck, upstream, worker, faults, tries, result
):
    for fault in faults:
        httpx.post(f"{upstream.url}/_sandbox/faults", json={"match": stuck.transact_id, **fault})

    post_confirmed(signed_in(client, support_user), f"/trades/{stuck.transact_id}/repoll")
    run = Run.objects.get()
    assert wait_for(lambda: finished(run.pk), timeout=40)

    def asked():
        seen = upstream.state.requests_seen()
        return [r for r in seen if r["path"] == f"/v1/trades/{stuck.transact_id}"]

    # (the sandbox logs a slow answer when it is done, after we gave up on it)
    wait_for(lambda: len(asked()) >= tries, timeout=5)
    assert len(asked()) == tries
    entry = Entry.objects.get(action="trade.repoll")
    assert entry.result == result
    if result == "failed":
        assert "gave up after 4 tries" in entry.detail
        stuck.refresh_from_db()
        assert stuck.status == "reserved"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0.5", 0.5), ("600", 10.0), ("-4", 0.0), ("soon", 1.0), (None, 1.0)],
)
def test_a_429_waits_what_retry_after_asks_within_a_cap(header, seconds):
    from actions.upstream import retry_after

    headers = {"Retry-After": header} if header is not None else {}

    assert retry_after(httpx.Response(429, headers=headers)) == seconds


def test_a_429_retry_after_date_is_read_as_seconds_from_now(time_machine):
    from actions.upstream import retry_after

    time_machine.move_to("2026-11-30T12:00:00Z", tick=False)
    response = httpx.Response(429, headers={"Retry-After": "Mon, 30 Nov 2026 12:00:07 GMT"})

    assert retry_after(response) == 7.0


def test_no_forbidden_field_reaches_the_logs(client, support_user, stuck, upstream, worker, caplog):
    caplog.set_level(logging.DEBUG)
    httpx.post(
        f"{upstream.url}/_sandbox/faults",
        json={"match": stuck.transact_id, "status": 503, "times": 1},
    )

    post_confirmed(signed_in(client, support_user), f"/trades/{stuck.transact_id}/repoll")
    run = Run.objects.get()
    assert wait_for(lambda: finished(run.pk))

    assert caplog.records  # the retry was logged
    assert not [m for m in FORBIDDEN_MARKERS if m in caplog.text]
    assert not [k for k in FORBIDDEN_KEYS if f"'{k}'" in caplog.text or f'"{k}"' in caplog.text]


# --- replay to the partner ------------------------------------------------------


def test_replay_is_received_and_verified_with_the_same_event_id(
    client, support_user, network, receiving_partner, upstream, worker
):
    trade = Trade.objects.get(order__partner_reference="scn_partner_never_told")
    event = WebhookEvent.objects.get(subject_id=trade.transact_id, type="trade.settled")
    before = len(received(upstream))

    signed_in(client, support_user)
    picked = client.get(f"/trades/{trade.transact_id}/replay-latest")
    assert picked["Location"] == f"/events/{event.event_id}/replay"
    post_confirmed(client, picked["Location"], reason="partner never told; ticket 88")
    run = Run.objects.get()
    assert wait_for(lambda: finished(run.pk))

    got = received(upstream)[before:]
    assert len(got) == 1
    assert got[0]["verified"] is True
    assert got[0]["webhook_id"] == event.event_id
    assert got[0]["event"]["id"] == event.event_id
    assert got[0]["event"] == event.payload  # only the allowlisted envelope left
    attempt = DeliveryAttempt.objects.filter(event_id=event.event_id).latest("id")
    assert (attempt.outcome, attempt.response_status, attempt.reported_by) == (
        "succeeded",
        200,
        None,
    )
    assert Entry.objects.get(action="event.replay").result == "ok"


def test_replay_works_for_an_event_with_no_prior_delivery(
    client, support_user, network, receiving_partner, upstream, worker
):
    reported = DeliveryAttempt.objects.values_list("event_id", flat=True)
    event = (
        WebhookEvent.objects.filter(partner_id="ptn_acme", type="quote.created")
        .exclude(event_id__in=reported)
        .first()
    )

    post_confirmed(signed_in(client, support_user), f"/events/{event.event_id}/replay")
    run = Run.objects.get()
    assert wait_for(lambda: finished(run.pk))

    attempt = DeliveryAttempt.objects.get(event_id=event.event_id)
    assert (attempt.attempt, attempt.outcome) == (1, "succeeded")


def test_replay_to_a_private_address_is_refused_without_sending(
    client, support_user, network, receiving_partner, upstream, worker, settings
):
    settings.OPOOLS_OUTBOUND_ALLOW_PRIVATE = False
    event = WebhookEvent.objects.filter(partner_id="ptn_acme", type="trade.settled").first()
    before = len(received(upstream))

    post_confirmed(signed_in(client, support_user), f"/events/{event.event_id}/replay")
    run = Run.objects.get()
    assert wait_for(lambda: finished(run.pk))

    assert len(received(upstream)) == before
    attempt = DeliveryAttempt.objects.filter(event_id=event.event_id).latest("id")
    assert (attempt.outcome, attempt.response_status) == ("failed", None)
    entry = Entry.objects.get(action="event.replay")
    assert entry.result == "failed"
    assert "refused" in entry.detail


def test_a_partner_endpoint_answering_500_is_a_failed_delivery(
    client, support_user, network, receiving_partner, upstream, worker
):
    httpx.post(
        f"{upstream.url}/_sandbox/partners/ptn_acme",
        json={"secrets": [SigningSecret.objects.get().secret], "respond": 500},
    )
    event = WebhookEvent.objects.filter(partner_id="ptn_acme", type="trade.settled").first()

    post_confirmed(signed_in(client, support_user), f"/events/{event.event_id}/replay")
    run = Run.objects.get()
    assert wait_for(lambda: finished(run.pk))

    attempt = DeliveryAttempt.objects.filter(event_id=event.event_id).latest("id")
    assert (attempt.outcome, attempt.response_status) == ("failed", 500)


def test_the_confirm_step_names_the_partner_endpoint_host(
    client, support_user, network, receiving_partner
):
    event = WebhookEvent.objects.filter(partner_id="ptn_acme", type="trade.settled").first()

    page = signed_in(client, support_user).get(f"/events/{event.event_id}/replay").content.decode()

    assert f"to ptn_acme at {Endpoint.objects.get().url.split('/')[2].split(':')[0]}" in page
    assert "signed with 1 current signing secret" in page


# --- partner commands -------------------------------------------------------------


def test_partner_commands_set_the_endpoint_and_print_a_new_secret_once(network, capsys, settings):
    settings.OPOOLS_OUTBOUND_ALLOW_PRIVATE = True  # the example host does not resolve here
    call_command("partners", "set-endpoint", "ptn_acme", "https://hooks.acme.example/0pools")
    call_command("partners", "rotate-secret", "ptn_acme")
    first = capsys.readouterr().out.strip().splitlines()[-1]
    call_command("partners", "rotate-secret", "ptn_acme")
    second = capsys.readouterr().out.strip().splitlines()[-1]

    assert first.startswith("whsec_") and second.startswith("whsec_") and first != second
    active = [s.secret for s in SigningSecret.objects.active()]
    assert set(active) == {first, second}  # the old one signs during the overlap
    assert Endpoint.objects.get().url == "https://hooks.acme.example/0pools"
    actions = list(Entry.objects.order_by("id").values_list("action", "actor_name"))
    assert actions == [
        ("partner.set_endpoint", "cli"),
        ("partner.rotate_secret", "cli"),
        ("partner.rotate_secret", "cli"),
    ]
    assert first not in str(list(Entry.objects.values_list("detail", flat=True)))


# --- what the database and the schedule guarantee ---------------------------------


def test_an_action_post_without_a_csrf_token_is_refused(support_user, stuck, upstream):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(support_user)
    fields = confirm_page(browser, f"/trades/{stuck.transact_id}/repoll") | {"reason": "x"}

    response = browser.post(f"/trades/{stuck.transact_id}/repoll", fields)

    assert response.status_code == 403
    assert not Run.objects.exists()


def test_the_database_refuses_to_change_or_delete_an_audit_entry(network):
    from django.db import connection, transaction
    from django.db.utils import ProgrammingError

    from audit import log

    with transaction.atomic():
        log.record(actor=None, actor_name="cli", action="trade.repoll", target="pt_live_x")
    for statement in ("UPDATE audit_entry SET reason = 'changed'", "DELETE FROM audit_entry"):
        with (
            pytest.raises(ProgrammingError, match="Cannot update or delete rows"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement)

    assert Entry.objects.get().reason == ""


def test_the_scheduled_repoll_polls_every_stuck_trade_as_the_schedule(stuck, upstream):
    from queues import tasks

    polled = tasks.repoll_stuck_trades()

    assert polled >= 1
    run = Run.objects.get(user=None)
    assert run.params["scheduled"] is True
    assert (run.state, run.done + run.failed) == ("done", run.total)
    stuck.refresh_from_db()
    assert stuck.status == "settled"
    entry = Entry.objects.get(target=stuck.transact_id)
    assert (entry.actor_name, entry.action, entry.result) == ("schedule", "trade.repoll", "ok")


def test_a_bulk_replay_delivers_the_latest_state_of_each_trade(
    client, operations_user, network, receiving_partner, upstream, worker
):
    trade = Trade.objects.get(order__partner_reference="scn_partner_never_told")
    event = WebhookEvent.objects.get(subject_id=trade.transact_id, type="trade.settled")
    from actions import tasks
    from actions.services import request_run

    asked = request_run(
        operations_user,
        "bulk.replay",
        "1 trade",
        key="bulk-replay-test-key-0001",
        reason="tell partners",
        drawn="same",
        current="same",
        params={"targets": [trade.transact_id]},
        total=1,
    )
    tasks.carry_out_run.delay(asked.run.pk)  # what the confirm view does on commit
    assert wait_for(lambda: finished(asked.run.pk))

    got = [r for r in received(upstream) if r["webhook_id"] == event.event_id]
    assert len(got) == 1 and got[0]["verified"]
    timeline = signed_in(client, operations_user).get(
        trade.order.get_absolute_url(), {"format": "json"}
    )
    flags = [f["code"] for f in timeline.json()["flags"]]
    assert "partner_not_told" not in flags


def test_a_stalled_run_is_resumed_but_a_moving_one_is_left_alone(stuck, upstream):
    from datetime import timedelta

    from django.utils import timezone

    from actions import tasks

    moving = Run.objects.create(
        key="moving-run-key-000001",
        action="trade.repoll",
        target=stuck.transact_id,
        state=Run.State.RUNNING,
    )
    assert tasks.carry_out_run(moving.pk, resume=True) == "skipped"

    Run.objects.filter(pk=moving.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert tasks.carry_out_run(moving.pk, resume=True) == "done"
    moving.refresh_from_db()
    assert (moving.state, moving.done) == ("done", 1)
