"""Delivery health (``/deliveries/``), the landing page's failing partners, and
recovering a partner's failed deliveries (``/deliveries/recover``)."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from actions.models import Run
from audit.models import Entry
from lib.formats import rfc3339
from partners.services import rotate_secret, set_endpoint
from records.models import DeliveryAttempt, Partner, WebhookEvent
from tests import envelopes
from tests.helpers import import_events, received, wait_for

pytestmark = pytest.mark.django_db

HEALTH = "/deliveries/"
RECOVER = "/deliveries/recover"

# The moment the fixture's windows end at; every attempt is placed before it.
AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
M, H = timedelta(minutes=1), timedelta(hours=1)


def iso(moment):
    return rfc3339(moment)


def event(n, partner="ptn_acme", status="settled"):
    """A trade event ``evt_dlv<n>`` of its own order ``dlv_<n>``."""
    return envelopes.trade(
        status,
        transact_id=f"pt_live_DLV{n}",
        reference=f"dlv_{n}",
        partner=partner,
        event_id=f"evt_dlv{n}",
    )


def tried(n, ago, outcome, *, partner="ptn_acme", duration_ms=100, status=None, attempt=1):
    return envelopes.delivery(
        f"evt_dlv{n}",
        attempt=attempt,
        outcome=outcome,
        partner=partner,
        at=iso(AT - ago),
        duration_ms=duration_ms,
        status=status,
    )


@pytest.fixture
def deliveries(tmp_path):
    """Two partners' deliveries up to ``AT``.

    ptn_acme: evt_dlv1 failed then got through; evt_dlv2 failed twice;
    evt_dlv3 failed, got through, then failed again; evt_dlv4 failed more
    than a day ago. ptn_globex: two deliveries, both through.
    """
    import_events(
        tmp_path,
        *[event(n) for n in (1, 2, 3, 4)],
        *[event(n, partner="ptn_globex") for n in (5, 6)],
        tried(1, 30 * M, "failed", duration_ms=100, status=503),
        tried(1, 20 * M, "succeeded", duration_ms=200, attempt=2),
        tried(2, 50 * M, "failed", duration_ms=300),
        tried(2, 40 * M, "failed", duration_ms=400, status=502, attempt=2),
        tried(3, 3 * H, "failed", duration_ms=1000),
        tried(3, 2 * H + 50 * M, "succeeded", duration_ms=1000, attempt=2),
        tried(3, 10 * M, "failed", duration_ms=500, status=404, attempt=3),
        tried(4, 26 * H, "failed", duration_ms=9000),
        tried(5, 5 * M, "succeeded", partner="ptn_globex", duration_ms=300),
        tried(6, 2 * H, "succeeded", partner="ptn_globex", duration_ms=700),
    )


def at(url, moment=AT):
    return f"{url}{'&' if '?' in url else '?'}at={iso(moment)}"


def row_of(response, partner_id):
    return next(r for r in response.context["rows"] if r["partner"].partner_id == partner_id)


def drawn_hours(page, partner_id):
    """{hours ago: (succeeded, failed)} as drawn in the partner's chart."""
    body = re.search(rf'data-partner="{partner_id}".*?</tr>', page, re.S).group(0)
    return {
        int(ago): (int(ok), int(failed))
        for ago, ok, failed in re.findall(
            r'data-ago="(\d+)" data-succeeded="(\d+)" data-failed="(\d+)"', body
        )
    }


# --- delivery health ---------------------------------------------------------------


@pytest.mark.parametrize("role", ["support", "ops", "admin"])
def test_every_role_reads_delivery_health(request, role, deliveries):
    client = request.getfixturevalue(role)

    assert client.get(at(HEALTH)).status_code == 200
    assert client.get(at(f"{HEALTH}?partner=ptn_acme")).status_code == 200


def test_the_overview_counts_each_partner_s_last_hour_and_day(support, deliveries):
    response = support.get(at(HEALTH))

    acme, globex = row_of(response, "ptn_acme"), row_of(response, "ptn_globex")
    # The last hour: dlv1 twice, dlv2 twice, dlv3's third try; the day adds
    # dlv3's first two; dlv4 is older than a day.
    assert (acme["hour"].attempts, acme["hour"].succeeded) == (5, 1)
    assert (acme["day"].attempts, acme["day"].succeeded) == (7, 2)
    assert (globex["hour"].attempts, globex["hour"].succeeded) == (1, 1)
    assert (globex["day"].attempts, globex["day"].succeeded) == (2, 2)
    page = response.content.decode()
    assert 'data-window="Last hour" data-attempts="5" data-succeeded="1">' in page
    assert "20.0 %</span> of 5" in page
    assert "100.0 %</span> of 2" in page


def test_latency_is_the_median_and_95th_percentile_of_the_durations(support, deliveries):
    response = support.get(at(HEALTH))

    hour = row_of(response, "ptn_acme")["hour"]
    # 100, 200, 300, 400, 500 ms: the median, and 95 % of the way from the
    # 4th to the 5th (PERCENTILE_CONT interpolates).
    assert (hour.p50, hour.p95) == (300, 480)
    assert "p50 300 ms · p95 480 ms" in response.content.decode()


def test_each_partner_s_chart_draws_its_attempts_per_hour(support, deliveries):
    page = support.get(at(HEALTH)).content.decode()

    # Hour k holds (AT - (k+1) h, AT - k h]: three hours before AT is hour 3.
    assert drawn_hours(page, "ptn_acme") == {0: (1, 4), 2: (1, 0), 3: (0, 1)}
    assert drawn_hours(page, "ptn_globex") == {0: (1, 0), 2: (1, 0)}
    assert "<title>" in page and "style=" not in page


def test_a_partner_s_failing_events_are_listed_newest_failure_first_with_their_timelines(
    support, deliveries
):
    response = support.get(at(f"{HEALTH}?partner=ptn_acme"))

    shown = [
        (e["event_id"], e["failing_since"], e["failures"])
        for e in response.context["failing_events"]
    ]
    assert shown == [
        ("evt_dlv3", AT - 10 * M, 1),  # failing again since its success
        ("evt_dlv2", AT - 50 * M, 2),
        ("evt_dlv4", AT - 26 * H, 1),  # failing however old
    ]
    page = response.content.decode()
    assert '<a href="/orders/ptn_acme/dlv_3/">evt_dlv3</a>' in page
    assert "evt_dlv1" not in page  # its latest attempt got through
    assert "<td>404</td>" in page and "<td>0Pools</td>" in page
    assert response.context["row"]["failing"].events == 3


def test_the_endpoint_is_shown_by_its_host_only(support, deliveries, settings):
    settings.OPOOLS_OUTBOUND_ALLOW_PRIVATE = True  # the example host does not resolve here
    partner = Partner.objects.get(partner_id="ptn_acme")
    set_endpoint(partner, "https://hooks.acme.example/0pools/in?token=s3cr3t")
    secret = rotate_secret(partner)

    for url in (HEALTH, f"{HEALTH}?partner=ptn_acme"):
        page = support.get(at(url)).content.decode()
        assert "<code>hooks.acme.example</code>" in page
        assert "s3cr3t" not in page and "/0pools/in" not in page and secret not in page


def test_a_partner_without_an_endpoint_says_replays_fail(support, deliveries):
    page = support.get(at(f"{HEALTH}?partner=ptn_globex")).content.decode()

    assert "no webhook endpoint set" in page
    assert 'id="no-failing"' in page


def test_the_windows_end_now_and_a_quiet_page_links_to_its_newest_attempt(support, deliveries):
    response = support.get(HEALTH)

    assert response.context["chosen"] is None
    assert all(row["day"].attempts == 0 for row in response.context["rows"])
    page = response.content.decode()
    assert 'id="quiet"' in page
    link = re.search(r'<a href="([^"]+)" id="newest-link">', page).group(1)
    assert link == "/deliveries/?at=2026-11-20T11%3A55%3A00Z"  # globex, 5 minutes before AT

    then = support.get(link)
    assert row_of(then, "ptn_globex")["hour"].attempts == 1
    assert 'id="quiet"' not in then.content.decode()


def test_attempts_of_the_last_hour_count_against_the_real_clock(support, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    import_events(
        tmp_path,
        event(7),
        envelopes.delivery("evt_dlv7", outcome="failed", at=iso(now - 10 * M)),
    )

    response = support.get(HEALTH)

    acme = row_of(response, "ptn_acme")
    assert (acme["hour"].attempts, acme["hour"].failed) == (1, 1)
    assert 'id="quiet"' not in response.content.decode()


@pytest.mark.parametrize(
    "query",
    ["at=yesterday", "at=2999-01-01T00:00:00Z", "partner=ACME", "partner=ptn_acme&at=2026-13-01"],
)
def test_a_question_the_page_cannot_read_is_400_with_no_figures(support, deliveries, query):
    response = support.get(f"{HEALTH}?{query}")

    assert response.status_code == 400
    assert "rows" not in response.context
    assert 'id="form-errors"' in response.content.decode()


def test_an_unknown_partner_is_404(support, deliveries):
    assert support.get(f"{HEALTH}?partner=ptn_nobody").status_code == 404


@pytest.mark.parametrize(("url", "queries"), [(HEALTH, 10), (f"{HEALTH}?partner=ptn_acme", 12)])
def test_the_health_page_runs_a_fixed_number_of_queries(
    ops, deliveries, url, queries, django_assert_max_num_queries
):
    # session, user, groups; partners (with newest attempt and failing
    # state), the windows, the hourly chart, the failing counts; a
    # partner's page adds its failing events and their stored events; then
    # the session's idle-timeout save (savepoint, update, release).
    with django_assert_max_num_queries(queries):
        response = ops.get(at(url))
    assert response.status_code == 200
    assert response.context["rows"][0]["day"].attempts


# --- the landing page ----------------------------------------------------------------


def failures_in_a_row(partner, count, start=10):
    return [event(n, partner=partner) for n in range(start, start + count)] + [
        tried(n, (start + count - n) * M, "failed", partner=partner)
        for n in range(start, start + count)
    ]


def test_the_landing_page_lists_partners_whose_last_attempts_all_failed(support, tmp_path):
    import_events(
        tmp_path,
        *failures_in_a_row("ptn_acme", 5),
        event(20, partner="ptn_globex"),
        tried(20, 30 * M, "succeeded", partner="ptn_globex"),
        *failures_in_a_row("ptn_globex", 4, start=21),  # one short of a run
        *failures_in_a_row("ptn_initech", 1, start=30),  # never got through
    )

    response = support.get("/")

    assert [p.partner_id for p in response.context["failing_partners"]] == [
        "ptn_acme",
        "ptn_initech",
    ]
    page = response.content.decode()
    assert '<a href="/deliveries/?partner=ptn_acme">ptn_acme</a>' in page
    assert page.index('id="failing-partners"') < page.index("Trades by status")
    acme = response.context["failing_partners"][0]
    assert acme.failing_since == AT - 5 * M


def test_one_attempt_that_got_through_takes_a_partner_off_the_landing_page(support, tmp_path):
    import_events(tmp_path, *failures_in_a_row("ptn_acme", 6))
    assert support.get("/").context["failing_partners"]

    import_events(tmp_path, tried(15, 0 * M, "succeeded", attempt=2))

    response = support.get("/")
    assert response.context["failing_partners"] == []
    assert "No partner's deliveries are failing now." in response.content.decode()


def test_the_landing_page_runs_a_fixed_number_of_queries(
    support, tmp_path, django_assert_max_num_queries
):
    import_events(tmp_path, *failures_in_a_row("ptn_acme", 5))

    # session, user, groups; newest trade, status mix, unprocessed, refused,
    # failing partners; the session save (savepoint, update, release).
    with django_assert_max_num_queries(11):
        response = support.get("/")
    assert response.context["failing_partners"]


# --- recovery: dry run and confirm ---------------------------------------------------


def dry_run(client, partner="ptn_acme", since=AT - H, until=None):
    query = {"partner": partner, "since": iso(since)}
    if until:
        query["until"] = iso(until)
    return client.get(RECOVER, query)


def confirm_data(response, reason="ticket OPS-77: acme endpoint down 11:00-11:50"):
    form = response.context["form"]
    data = dict(response.context["params"])
    return data | {"key": form["key"].value(), "drawn": form["drawn"].value(), "reason": reason}


def sample(response):
    return [row["event_id"] for row in response.context["sample"]]


def test_the_dry_run_counts_and_lists_events_failing_since_the_time(ops, deliveries):
    response = dry_run(ops)

    assert response.status_code == 200
    # dlv2 started failing 50 minutes before AT, dlv3 again 10 minutes
    # before; dlv4 long before the hour; dlv1 got through.
    assert response.context["count"] == 2
    assert sample(response) == ["evt_dlv2", "evt_dlv3"]  # oldest failure first
    page = response.content.decode()
    assert '<span id="dry-run-count">2</span>' in page
    assert 'id="confirm-button"' in page
    assert not Run.objects.exists()


def test_until_bounds_when_the_failing_started(ops, deliveries):
    response = dry_run(ops, until=AT - 30 * M)

    assert sample(response) == ["evt_dlv2"]


def test_a_since_older_than_every_failure_takes_the_whole_failing_set(ops, deliveries):
    response = dry_run(ops, since=AT - 30 * H)

    assert sample(response) == ["evt_dlv4", "evt_dlv2", "evt_dlv3"]


def test_confirm_makes_one_run_with_exactly_those_targets_and_the_reason(
    ops, operations_user, deliveries
):
    response = ops.post(RECOVER, confirm_data(dry_run(ops)))

    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/actions/runs/{run.pk}/"
    assert (run.action, run.user, run.total, run.state) == (
        "bulk.recover",
        operations_user,
        2,
        "queued",
    )
    assert run.params["targets"] == ["evt_dlv2", "evt_dlv3"]
    assert run.params["partner"] == "ptn_acme"
    assert run.params["since"] == "2026-11-20T11:00:00Z"
    assert run.reason == "ticket OPS-77: acme endpoint down 11:00-11:50"
    assert run.target == "ptn_acme: 2 failed deliveries since 2026-11-20 11:00:00 UTC"


def test_submitting_the_same_confirm_form_twice_makes_one_run(ops, deliveries):
    data = confirm_data(dry_run(ops))

    first = ops.post(RECOVER, data)
    second = ops.post(RECOVER, data, follow=True)

    assert Run.objects.count() == 1
    assert second.redirect_chain[-1][0] == first["Location"]
    assert "Already submitted" in second.content.decode()


def test_support_may_not_recover_and_nothing_is_written(ops, support_user, deliveries):
    data = confirm_data(dry_run(ops))
    support = Client()
    support.force_login(support_user)

    assert dry_run(support).status_code == 403
    assert support.post(RECOVER, data).status_code == 403
    assert not Run.objects.exists()
    assert not Entry.objects.exists()
    page = support.get(at(f"{HEALTH}?partner=ptn_acme")).content.decode()
    assert 'id="recover-form"' not in page


def test_operations_sees_the_recover_form_starting_at_the_oldest_failure(ops, deliveries):
    page = ops.get(at(f"{HEALTH}?partner=ptn_acme")).content.decode()

    assert 'id="recover-form"' in page
    assert 'name="since" id="id_since" required value="2026-11-19T10:00:00"' in page


@pytest.mark.parametrize(
    "change",
    [
        lambda: [event(8), tried(8, 5 * M, "failed")],  # an event started failing
        lambda: [tried(2, 1 * M, "succeeded", attempt=3)],  # one got through
    ],
)
def test_a_set_that_changed_since_the_dry_run_is_refused_and_audited(
    ops, deliveries, tmp_path, change
):
    data = confirm_data(dry_run(ops))
    import_events(tmp_path, *change())

    response = ops.post(RECOVER, data)

    assert response.status_code == 409
    assert "changed since the page was drawn" in response.content.decode()
    assert not Run.objects.exists()
    entry = Entry.objects.get()
    assert (entry.action, entry.result) == ("bulk.recover", "refused")
    assert entry.detail.startswith("stale page: drawn from 2:")
    # The page now shows the set as it is, ready to confirm anew.
    assert response.context["count"] == len(sample(dry_run(ops)))
    assert response.context["form"]["reason"].value() == data["reason"]


def test_a_confirm_without_a_reason_is_400_and_runs_nothing(ops, deliveries):
    response = ops.post(RECOVER, confirm_data(dry_run(ops), reason=" "))

    assert response.status_code == 400
    assert "A reason is required" in response.content.decode()
    assert not Run.objects.exists()


def test_an_empty_set_says_so_and_runs_nothing(ops, deliveries):
    asked = dry_run(ops, partner="ptn_globex")

    assert asked.context["count"] == 0
    assert 'id="nothing"' in asked.content.decode()
    assert 'id="confirm-button"' not in asked.content.decode()
    response = ops.post(RECOVER, confirm_data(asked))
    assert response.status_code == 409
    assert "nothing was run" in response.content.decode()
    assert not Run.objects.exists()


def test_a_set_over_the_cap_is_refused_with_its_exact_count(ops, deliveries, monkeypatch):
    monkeypatch.setattr("deliveries.services.RECOVER_CAP", 2)

    asked = dry_run(ops, since=AT - 30 * H)
    assert (asked.context["too_many"], asked.context["count"]) == (True, 3)
    assert 'id="too-many"' in asked.content.decode()
    assert 'id="confirm-button"' not in asked.content.decode()
    response = ops.post(RECOVER, confirm_data(asked) | {"drawn": "3:whatever"})

    assert response.status_code == 409
    assert "More than 2 failed deliveries match" in response.content.decode()
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    "query",
    [
        {"partner": "ptn_acme"},  # since when?
        {"partner": "ptn_acme", "since": "soon"},
        {"partner": "ptn_acme", "since": "2026-11-20T11:00:00Z", "until": "2026-11-20T10:00Z"},
        {"partner": "ACME", "since": "2026-11-20T11:00:00Z"},
        {"partner": "ptn_acme", "since": "2999-01-01T00:00:00Z"},
    ],
)
def test_a_recovery_the_form_cannot_read_is_400(ops, deliveries, query):
    response = ops.get(RECOVER, query)

    assert response.status_code == 400
    assert 'id="form-errors"' in response.content.decode()


def test_a_recovery_for_an_unknown_partner_is_404(ops, deliveries):
    assert dry_run(ops, partner="ptn_nobody").status_code == 404


def test_a_datetime_local_input_is_read_as_utc(ops, deliveries):
    response = ops.get(RECOVER, {"partner": "ptn_acme", "since": "2026-11-20T11:00"})

    assert response.context["params"]["since"] == "2026-11-20T11:00:00Z"
    assert response.context["count"] == 2


# --- end to end: the worker replays to the sandbox partner receiver ------------------------


def test_a_recovery_redelivers_each_failed_event_and_records_its_attempt(
    client, operations_user, network, receiving_partner, upstream, worker, tmp_path
):
    acme = DeliveryAttempt.objects.filter(partner=receiving_partner)
    [(told, since)] = acme.failing_events().values_list("event_id", "failing_since")
    untried = list(
        WebhookEvent.objects.filter(partner_id="ptn_acme")
        .exclude(event_id__in=acme.values("event_id"))
        .order_by("event_id")
        .values_list("event_id", flat=True)[:3]
    )
    # Two more start failing after it, one failed (and still fails) long before.
    import_events(
        tmp_path,
        envelopes.delivery(untried[0], outcome="failed", at=iso(since + H)),
        envelopes.delivery(untried[1], outcome="failed", at=iso(since + 2 * H), status=503),
        envelopes.delivery(untried[2], outcome="failed", at=iso(since - 30 * H)),
    )
    expected = sorted([told, untried[0], untried[1]])
    before = len(received(upstream))
    client.force_login(operations_user)

    asked = dry_run(client, since=since)
    assert sorted(sample(asked)) == expected
    response = client.post(RECOVER, confirm_data(asked))
    run = Run.objects.get()
    assert response["Location"] == f"/actions/runs/{run.pk}/"
    assert wait_for(lambda: Run.objects.get(pk=run.pk).finished, timeout=60)

    run.refresh_from_db()
    assert (run.state, run.done, run.failed) == ("done", 3, 0)
    got = received(upstream)[before:]
    assert sorted(r["webhook_id"] for r in got) == expected
    assert all(r["verified"] for r in got)
    ours = DeliveryAttempt.objects.filter(reported_by__isnull=True)
    assert sorted(ours.values_list("event_id", flat=True)) == expected
    assert set(ours.values_list("outcome", "response_status")) == {("succeeded", 200)}
    entries = Entry.objects.filter(run_id=run.pk)
    assert sorted(entries.values_list("target", flat=True)) == expected
    assert set(entries.values_list("action", "result")) == {("event.replay", "ok")}
    # Recovered: only the event that failed before ``since`` is failing still.
    page = client.get(f"{HEALTH}?partner=ptn_acme")
    assert [e["event_id"] for e in page.context["failing_events"]] == [untried[2]]
    assert "a panel replay" not in page.content.decode()
