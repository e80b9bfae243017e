"""/runs/ (every guarded run, yours first), a run's two-colour progress, and
"Retry the failed ones": a new run over exactly the items that failed."""

import csv
import html
import io
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.utils import timezone

from actions.models import Run
from audit.models import Entry
from queues import tasks as queue_tasks
from tests import envelopes
from tests.factories import RunFactory, ScheduledRunFactory
from tests.helpers import import_events, wait_for

pytestmark = pytest.mark.django_db

STUCK = ["pt_live_R01", "pt_live_R02", "pt_live_R03"]


def finished(pk):
    return Run.objects.get(pk=pk).finished


def shown(response):
    assert response.status_code == 200
    return [run.pk for run in response.context["rows"]]


def next_link(response):
    found = re.search(r'<a href="([^"]*)"[^>]*rel="next"', response.content.decode())
    return found and html.unescape(found.group(1))


def bar(text):
    """The run page's bar: (done width, failed width) out of 100."""
    done = re.search(r'<rect class="bar-done"[^>]*width="([0-9.]+)"', text).group(1)
    failed = re.search(r'<rect class="bar-failed"[^>]*width="([0-9.]+)"', text).group(1)
    return float(done), float(failed)


def text_of(text, element_id):
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:p|div)>', text, re.S)
    return found and " ".join(html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).split())


def confirm_fields(response, reason="ticket OPS-7: retry what failed"):
    form = response.context["form"]
    return {"key": form["key"].value(), "drawn": form["drawn"].value(), "reason": reason}


@pytest.fixture
def stuck_trades(tmp_path):
    """Three trades reserved an hour ago, past the 15-minute SLA. The sandbox
    upstream does not know them: a status read answers 404 (not found, done)."""
    at = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    import_events(
        tmp_path,
        *[
            envelopes.trade(
                "reserved",
                transact_id=transact_id,
                reference=f"ref_{transact_id}",
                quoteId=f"pq_live_{transact_id[8:]}q",
                at=at,
                createdAt=at,
            )
            for transact_id in STUCK
        ],
    )


def fail(upstream, match="*", times=100):
    response = httpx.post(
        f"{upstream.url}/_sandbox/faults", json={"match": match, "status": 500, "times": times}
    )
    assert response.status_code == 201


@pytest.fixture
def partly_failed(stuck_trades, upstream):
    """The scheduled re-poll of the three, R02 failing (0Pools answers 500): 2 done, 1 failed."""
    fail(upstream, match="pt_live_R02")
    assert queue_tasks.repoll_stuck_trades() == 3
    run = Run.objects.get(user=None)
    assert (run.done, run.failed) == (2, 1)
    httpx.delete(f"{upstream.url}/_sandbox/faults")
    return run


# --- bug 7: a failed bulk run ------------------------------------------------------


def test_a_bulk_run_whose_items_all_fail_shows_red_the_last_error_and_a_retry(
    client, operations_user, stuck_trades, upstream, worker
):
    fail(upstream)
    client.force_login(operations_user)
    dry_run = client.post("/queues/stuck/bulk", {"action": "repoll"})
    assert dry_run.context["count"] == 3
    client.post("/queues/stuck/bulk/confirm", {"action": "repoll"} | confirm_fields(dry_run))
    run = Run.objects.get()
    assert wait_for(lambda: finished(run.pk), timeout=60)

    text = client.get(f"/actions/runs/{run.pk}/").content.decode()

    assert bar(text) == (0.0, 100.0)  # nothing done, everything failed: red, not a full bar
    assert text_of(text, "run-counts") == "0 done, 3 failed of 3"
    assert "gave up after 4 tries" in text_of(text, "run-last-error")
    assert f'id="retry-button" href="/actions/runs/{run.pk}/retry"' in text
    assert "Retry the failed 3" in text

    # The way on: the same action again, over exactly the three, confirmed.
    httpx.delete(f"{upstream.url}/_sandbox/faults")
    confirm = client.get(f"/actions/runs/{run.pk}/retry")
    assert confirm.status_code == 200
    assert "on exactly the 3 items of run" in confirm.content.decode()
    answer = client.post(f"/actions/runs/{run.pk}/retry", confirm_fields(confirm))

    retry = Run.objects.exclude(pk=run.pk).get()
    assert answer["Location"] == f"/actions/runs/{retry.pk}/"
    assert (retry.action, retry.user, retry.retry_of) == ("bulk.repoll", operations_user, run)
    assert sorted(retry.params["targets"]) == STUCK
    assert wait_for(lambda: finished(retry.pk), timeout=60)
    retry.refresh_from_db()
    assert (retry.state, retry.done, retry.failed) == ("done", 3, 0)
    again = client.get(f"/actions/runs/{run.pk}/").content.decode()
    assert f'<a href="/actions/runs/{retry.pk}/">run {retry.pk}</a> (done)' in again
    assert bar(client.get(f"/actions/runs/{retry.pk}/").content.decode()) == (100.0, 0.0)


def test_the_bar_shows_done_and_failed_side_by_side(ops, partly_failed):
    text = ops.get(f"/actions/runs/{partly_failed.pk}/").content.decode()

    assert bar(text) == (66.67, 33.33)
    assert re.search(r'<rect class="bar-failed" x="66.67"', text)
    assert "pt_live_R02" in text_of(text, "run-last-error")


def test_a_retry_acts_on_exactly_the_items_that_failed(ops, operations_user, partly_failed):
    confirm = ops.get(f"/actions/runs/{partly_failed.pk}/retry")
    assert "pt_live_R02" in confirm.content.decode()

    ops.post(f"/actions/runs/{partly_failed.pk}/retry", confirm_fields(confirm))

    retry = Run.objects.get(retry_of=partly_failed)
    assert (retry.action, retry.total, retry.params["targets"]) == (
        "bulk.repoll",
        1,
        ["pt_live_R02"],
    )
    assert retry.reason == "ticket OPS-7: retry what failed"
    assert retry.target == f"1 failed of run {partly_failed.pk}"


def test_a_run_is_retried_once_and_what_fails_again_is_retried_from_the_retry(ops, partly_failed):
    first = confirm_fields(ops.get(f"/actions/runs/{partly_failed.pk}/retry"))
    second = confirm_fields(ops.get(f"/actions/runs/{partly_failed.pk}/retry"))
    ops.post(f"/actions/runs/{partly_failed.pk}/retry", first)
    retry = Run.objects.get(retry_of=partly_failed)

    response = ops.post(f"/actions/runs/{partly_failed.pk}/retry", second)

    assert response.status_code == 409
    assert f"Run {retry.pk} already retries these" in response.content.decode()
    assert Run.objects.filter(retry_of=partly_failed).count() == 1
    text = ops.get(f"/actions/runs/{partly_failed.pk}/").content.decode()
    assert "Retry the failed" not in text
    assert text_of(text, "run-retried") == f"Retried as run {retry.pk} (queued)."


def test_two_retries_of_one_run_at_the_same_moment_make_one(operations_user, partly_failed):
    from actions.services import Refused, request_run

    # Both passed the "already retried?" check before either was written.
    def retry(key):
        return request_run(
            operations_user,
            "bulk.repoll",
            f"1 failed of run {partly_failed.pk}",
            key=key,
            reason="ticket 9",
            drawn="same",
            current="same",
            params={"targets": ["pt_live_R02"]},
            retry_of=partly_failed,
        )

    retry("first-of-two-retries-01")
    with pytest.raises(Refused, match="at the same moment"):
        retry("second-of-two-retries-2")

    assert Run.objects.filter(retry_of=partly_failed).count() == 1


def test_a_retry_without_a_reason_is_400_and_runs_nothing(ops, partly_failed):
    confirm = ops.get(f"/actions/runs/{partly_failed.pk}/retry")

    response = ops.post(
        f"/actions/runs/{partly_failed.pk}/retry", confirm_fields(confirm, reason="")
    )

    assert response.status_code == 400
    assert not Run.objects.filter(retry_of=partly_failed).exists()


def test_the_same_retry_form_twice_makes_one_run(ops, partly_failed):
    fields = confirm_fields(ops.get(f"/actions/runs/{partly_failed.pk}/retry"))

    first = ops.post(f"/actions/runs/{partly_failed.pk}/retry", fields)
    second = ops.post(f"/actions/runs/{partly_failed.pk}/retry", fields, follow=True)

    assert Run.objects.filter(retry_of=partly_failed).count() == 1
    assert second.redirect_chain[-1][0] == first["Location"]
    assert "Already submitted" in second.content.decode()


def test_a_retry_drawn_from_another_failed_set_is_refused_and_audited(ops, partly_failed):
    fields = confirm_fields(ops.get(f"/actions/runs/{partly_failed.pk}/retry"))
    fields["drawn"] = "2:0000000000000000"

    response = ops.post(f"/actions/runs/{partly_failed.pk}/retry", fields)

    assert response.status_code == 409
    assert not Run.objects.filter(retry_of=partly_failed).exists()
    entry = Entry.objects.get(result="refused")
    assert (entry.action, entry.target) == ("bulk.repoll", f"2 failed of run {partly_failed.pk}")


def test_retries_are_rate_limited_like_every_action(ops, partly_failed, settings):
    settings.OPSPANEL_ACTIONS_PER_MINUTE = 0
    fields = confirm_fields(ops.get(f"/actions/runs/{partly_failed.pk}/retry"))

    response = ops.post(f"/actions/runs/{partly_failed.pk}/retry", fields)

    assert response.status_code == 429
    assert not Run.objects.filter(retry_of=partly_failed).exists()


def test_support_sees_no_retry_of_a_bulk_run_and_may_not_post_one(support, partly_failed):
    text = support.get(f"/actions/runs/{partly_failed.pk}/").content.decode()

    assert "Retry the failed" not in text
    assert "pt_live_R02" in text_of(text, "run-last-error")  # the error is still shown
    assert support.get(f"/actions/runs/{partly_failed.pk}/retry").status_code == 403
    assert support.post(f"/actions/runs/{partly_failed.pk}/retry", {}).status_code == 403


def test_a_run_that_is_still_going_offers_no_retry(ops, partly_failed):
    Run.objects.filter(pk=partly_failed.pk).update(state=Run.State.RUNNING)
    text = ops.get(f"/actions/runs/{partly_failed.pk}/").content.decode()
    assert "Retry the failed" not in text

    fields = confirm_fields(ops.get(f"/actions/runs/{partly_failed.pk}/retry"))
    response = ops.post(f"/actions/runs/{partly_failed.pk}/retry", fields)

    assert response.status_code == 409
    assert "still going" in response.content.decode()
    assert not Run.objects.filter(retry_of=partly_failed).exists()


def test_a_run_with_nothing_failed_has_nothing_to_retry(ops, stuck_trades, upstream):
    queue_tasks.repoll_stuck_trades()
    run = Run.objects.get()
    text = ops.get(f"/actions/runs/{run.pk}/").content.decode()
    assert "run-failures" not in text
    assert bar(text) == (100.0, 0.0)

    confirm = ops.get(f"/actions/runs/{run.pk}/retry")
    assert "Nothing in this run failed" in confirm.content.decode()
    response = ops.post(f"/actions/runs/{run.pk}/retry", confirm_fields(confirm))

    assert response.status_code == 409
    assert Run.objects.count() == 1


def test_a_single_failed_repoll_is_retried_through_its_own_confirm_step(
    support, support_user, stuck_trades, upstream
):
    from actions import tasks

    fail(upstream, match="pt_live_R01")
    confirm = support.get("/trades/pt_live_R01/repoll")
    support.post("/trades/pt_live_R01/repoll", confirm_fields(confirm))
    run = Run.objects.get()
    tasks.carry_out_run(run.pk)  # what the worker does with the task sent on commit

    text = support.get(f"/actions/runs/{run.pk}/").content.decode()

    assert bar(text) == (0.0, 100.0)
    assert 'id="retry-button" href="/trades/pt_live_R01/repoll"' in text
    assert support.get(f"/actions/runs/{run.pk}/retry").status_code == 403  # bulk only


def test_a_single_run_has_no_bulk_retry_and_is_told_where_to_go(ops, operations_user):
    run = RunFactory(user=operations_user, state="failed", done=0, failed=1)

    response = ops.get(f"/actions/runs/{run.pk}/retry")

    assert response.status_code == 404
    assert "retried through its own confirm step" in response.content.decode()


def test_an_item_whose_step_crashed_is_failed_and_retried_too(
    ops, stuck_trades, upstream, monkeypatch
):
    from actions import services

    real = services.STEPS["bulk.repoll"]

    def crashing(target, run):
        if target == "pt_live_R03":
            raise RuntimeError("a bug in a step")
        return real(target, run)

    monkeypatch.setitem(services.STEPS, "bulk.repoll", crashing)
    queue_tasks.repoll_stuck_trades()
    run = Run.objects.get()

    text = ops.get(f"/actions/runs/{run.pk}/").content.decode()
    confirm = ops.get(f"/actions/runs/{run.pk}/retry")

    assert (run.done, run.failed) == (2, 1)
    assert "worker log" in text_of(text, "run-last-error")
    assert "pt_live_R03" in confirm.content.decode()


def test_the_run_page_is_a_handful_of_queries(ops, partly_failed, django_assert_max_num_queries):
    # Session, user, role (3); the run (1); its entries, its last error, its retries (3);
    # the idle timeout's session save (3).
    with django_assert_max_num_queries(10):
        response = ops.get(f"/actions/runs/{partly_failed.pk}/")
    assert response.status_code == 200


# --- /runs/ -----------------------------------------------------------------------------


@pytest.fixture
def runs(support_user, operations_user):
    """Runs of two people and of the schedule, an hour apart, newest last."""
    now = timezone.now()
    made = [
        RunFactory(user=operations_user, created_at=now - timedelta(hours=5)),
        RunFactory(
            user=support_user,
            created_at=now - timedelta(hours=4),
            action="event.replay",
            target="evt_replay01",
            state="failed",
            done=0,
            failed=1,
        ),
        ScheduledRunFactory(created_at=now - timedelta(hours=3), state="done", total=3, done=3),
        RunFactory(user=operations_user, created_at=now - timedelta(hours=2), state="failed"),
        RunFactory(user=operations_user, created_at=now - timedelta(hours=1)),
    ]
    return [run.pk for run in made]


def test_the_runs_list_shows_my_runs_newest_first(ops, runs):
    response = ops.get("/runs/")

    assert shown(response) == [runs[4], runs[3], runs[0]]
    assert text_of(response.content.decode(), "runs-whose") == "Showing your runs. All users"


def test_all_users_is_one_click_away(ops, runs):
    first = ops.get("/runs/?state=done").content.decode()
    everyone = html.unescape(re.search(r'<a id="runs-everyone" href="([^"]+)"', first).group(1))

    response = ops.get(everyone)

    assert everyone == "/runs/?state=done&who=all"
    assert shown(response) == [runs[4], runs[2], runs[0]]
    assert "Only mine" in response.content.decode()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("user=sam-support", [1]),
        ("user=SAM-SUPPORT&who=mine", [1]),  # a username is the narrower question
        ("user=schedule", [2]),
        ("who=all&action=event.replay", [1]),
        ("who=all&state=failed", [3, 1]),
        ("action=trade.repoll&state=failed", [3]),
    ],
)
def test_filters_narrow_the_runs(ops, runs, query, expected):
    assert shown(ops.get(f"/runs/?{query}")) == [runs[i] for i in expected]


def test_a_bad_filter_is_a_form_error_with_no_rows(ops, runs):
    response = ops.get("/runs/?state=exploded")

    assert response.context["rows"] == []
    assert "Fix the filters" in response.content.decode()


def test_each_row_links_to_its_run_page_and_an_event_target_to_its_event(ops, runs):
    text = ops.get("/runs/?who=all").content.decode()

    for pk in runs:
        assert f'<a href="/actions/runs/{pk}/">#{pk}</a>' in text
    assert '<a href="/events/evt_replay01/">evt_replay01</a>' in text


def test_pages_walk_every_run_newest_first(ops, runs):
    seen, url = [], "/runs/?who=all&per_page=2"
    while url:
        response = ops.get(url)
        seen += shown(response)
        url = next_link(response)

    assert seen == list(reversed(runs))


def test_csv_holds_every_matching_run(ops, runs, operations_user):
    response = ops.get("/runs/?who=all&format=csv")

    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:5] == ["id", "createdAt", "user", "action", "target"]
    assert [int(row[0]) for row in rows[1:]] == list(reversed(runs))
    assert rows[1][2] == operations_user.username
    assert rows[3][2] == ""  # the schedule's run has no user


def test_the_runs_list_is_a_handful_of_queries(ops, runs, django_assert_max_num_queries):
    with django_assert_max_num_queries(8):
        assert len(shown(ops.get("/runs/?who=all"))) == 5
