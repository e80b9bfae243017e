"""A support agent in a real browser: Playwright driving Debian's Chromium.

Screenshots land in test-artifacts/ (kept by CI as artefacts).
"""

import os
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import PASSWORD

CHROMIUM = "/usr/bin/chromium"

# Playwright's sync API keeps an event loop running in the test thread from
# its first use on (database set-up included); the ORM calls made here are
# still plain synchronous ones, so Django's guard against async misuse is
# lifted for this process. (Collected with the suite, it changes nothing for
# tests without a running loop.)
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="Debian's chromium is not installed (apt-get install chromium)",
    ),
]


@pytest.fixture(scope="session")
def browser_type_launch_args():
    return {
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args():
    return {"viewport": {"width": 1280, "height": 900}}


@pytest.fixture
def error_pages():
    """Addresses a test opens knowing they answer 4xx: Chromium logs each such
    page as a failed load, which is the test's point, not the page failing."""
    return set()


@pytest.fixture(autouse=True)
def _no_console_errors(page, error_pages):
    """A page that breaks its own Content Security Policy, or throws, fails the test.

    (htmx reports a poll cut short by leaving the page as a sendAbort and its
    afterRequest; that is the test navigating, not the page failing.)
    """
    errors = []
    navigating = ("htmx:sendAbort", "htmx:afterRequest")

    def console(message):
        if message.type != "error" or message.text.startswith(navigating):
            return
        expected = message.text.startswith("Failed to load resource") and any(
            message.location.get("url", "").endswith(url) for url in error_pages
        )
        if not expected:
            errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield
    assert errors == []


def overflow(page):
    """How many pixels the page is wider than the window (0 when it fits)."""
    return page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )


def sign_in(page, live_server, user):
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def test_agent_pastes_an_id_lands_on_the_timeline_sees_the_flag_and_copies_the_summary(
    page, live_server, network, support_user
):
    from records.models import Trade

    trade = Trade.objects.get(order__partner_reference="scn_partner_never_told")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    sign_in(page, live_server, support_user)

    page.keyboard.press("/")
    box = page.locator("#search-box")
    assert box.evaluate("el => el === document.activeElement")
    box.fill(f"  '{trade.transact_id}'  ")
    box.press("Enter")

    page.wait_for_url(f"{live_server.url}/orders/ptn_acme/scn_partner_never_told/")
    flag = page.locator('[data-flag="partner_not_told"]')
    assert flag.is_visible()
    assert "Partner probably never told" in flag.inner_text()
    assert page.locator("#current-status").inner_text() == "settled"

    page.click('button[data-copy="#summary-text"]')
    page.wait_for_function("() => document.querySelector('[data-copy]').textContent === 'Copied'")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == page.locator("#summary-text").inner_text().strip()
    assert "scn_partner_never_told" in copied

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "timeline.png"), full_page=True)

    page.go_back()
    page.wait_for_url(f"{live_server.url}/")


def test_agent_browses_a_list_and_opens_a_timeline_from_it(
    page, live_server, network, support_user
):
    sign_in(page, live_server, support_user)

    page.click("text=Trades")
    page.wait_for_url(f"{live_server.url}/trades/")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "trades-list.png"), full_page=True)

    first = page.locator("table a[href^='/orders/']").first
    href = first.get_attribute("href")
    first.click()
    page.wait_for_url(f"{live_server.url}{href}")
    assert page.locator("#timeline-items").is_visible()


def test_operations_dry_runs_a_bulk_repoll_confirms_and_sees_the_trades_leave_the_queue(
    page, live_server, network, upstream, worker, operations_user
):
    from records.models import Trade

    stuck = Trade.objects.get(order__partner_reference="scn_stuck_reserved")
    sign_in(page, live_server, operations_user)

    page.goto(f"{live_server.url}/queues/stuck")
    assert page.locator(f"text={stuck.transact_id}").is_visible()
    assert page.locator("svg title#stuck-hist-title").count() == 1
    page.fill("input[name=partner]", "ptn_acme")
    page.locator("form.filters button[type=submit]").click()
    page.wait_for_url("**/queues/stuck?*partner=ptn_acme*")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "stuck-queue.png"), full_page=True)

    page.click("button[name=action][value=repoll]")
    count = int(page.locator("#dry-run-count").inner_text())
    expected = Trade.objects.filter(
        order__partner__partner_id="ptn_acme", status="reserved"
    ).count()
    assert count == expected >= 1
    page.fill("textarea[name=reason]", "morning sweep of stuck trades")
    page.click("#confirm-button")

    page.wait_for_url("**/actions/runs/*/")
    page.wait_for_function(
        "() => ['done', 'failed'].includes(document.querySelector('#run-progress').dataset.state)",
        timeout=30_000,
    )
    assert page.locator("#run-state").inner_text() == "done"
    page.screenshot(path=str(ARTIFACTS / "bulk-run.png"), full_page=True)

    page.goto(f"{live_server.url}/queues/stuck?partner=ptn_acme")
    assert page.locator(f"text={stuck.transact_id}").count() == 0
    stuck.refresh_from_db()
    assert stuck.status == "settled"


# The pages an agent or operator opens during an incident. What differs by
# role (buttons, forms, a refusal) is on the pages every role opens; the
# rest reads the same whoever reads it, so support alone opens it.
READ_ALIKE = [
    "/",
    "/orders/",
    "/trades/",
    "/events/",
    "/ledger/",
    "/audit/",
    "/search?q=pt_live",
    "/deliveries/",
]


def role_pages(event_id, run_pk, since):
    recover = f"/deliveries/recover?partner=ptn_acme&since={since}"
    return {
        "/orders/ptn_acme/scn_partner_never_told/": 200,
        "/queues/stuck": 200,
        f"/events/{event_id}/": 200,
        "/deliveries/?partner=ptn_acme": 200,
        "/runs/": 200,
        f"/actions/runs/{run_pk}/": 200,
        "/orders/ptn_acme/no_such_order/": 404,  # an error page, in the layout
        recover: {"support": 403, "operations": 200, "admin": 200},
        **dict.fromkeys(
            ["/partners/", "/partners/ptn_acme/", "/team/"],
            {"support": 403, "operations": 403, "admin": 200},
        ),
    }


@pytest.mark.parametrize("width", [1440, 390], ids=["desktop", "phone"])
def test_every_page_fits_the_screen_for_every_role(
    page, live_server, network, request, error_pages, width
):
    from lib.formats import rfc3339
    from records.models import DeliveryAttempt, WebhookEvent
    from tests.factories import RunFactory

    event = WebhookEvent.objects.filter(type="trade.settled").order_by("-created_at").first()
    oldest = DeliveryAttempt.objects.order_by("attempted_at").first().attempted_at
    page.set_viewport_size({"width": width, "height": 900})

    seen, too_wide = {}, {}
    for role in ("support", "operations", "admin"):
        user = request.getfixturevalue(f"{role}_user")
        run = RunFactory(user=user, state="failed", total=1, failed=1)
        pages = role_pages(event.event_id, run.pk, rfc3339(oldest))
        if role == "support":
            pages |= dict.fromkeys(READ_ALIKE, 200)
        page.context.clear_cookies()
        sign_in(page, live_server, user)
        for path, expected in pages.items():
            want = expected[role] if isinstance(expected, dict) else expected
            if want >= 400:
                error_pages.add(path)
            response = page.goto(f"{live_server.url}{path}")
            seen[role, path] = response.status == want
            assert page.locator("header.top nav.sections").count() == 1, (role, path)
            if overflow(page) > 0:
                too_wide[role, path] = overflow(page)
        if role == "support":
            ARTIFACTS.mkdir(exist_ok=True)
            page.goto(f"{live_server.url}/orders/ptn_acme/scn_partner_never_told/")
            page.screenshot(path=str(ARTIFACTS / f"timeline-{width}.png"), full_page=True)

    assert [where for where, right in seen.items() if not right] == []
    assert too_wide == {}


def test_a_stuck_orders_timeline_after_hours_of_re_polls_reads_as_one_line(
    page, live_server, network, upstream, support_user
):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from records.models import Trade
    from tests.helpers import the_beat_repolls, upstream_still_says_reserved

    stuck = Trade.objects.select_related("order__partner").get(
        order__partner_reference="scn_stuck_reserved"
    )
    upstream_still_says_reserved(upstream, stuck.transact_id)
    start = (timezone.now() - timedelta(hours=4)).replace(microsecond=0)
    for n in range(40):  # the beat, every 5 minutes for 3 h 20 min
        with time_machine.travel(start + timedelta(minutes=5 * n)):
            the_beat_repolls(stuck.transact_id)
    sign_in(page, live_server, support_user)

    page.goto(f"{live_server.url}{stuck.order.get_absolute_url()}")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "timeline-after-polls.png"), full_page=True)

    lines = page.locator("#timeline-items li.kind-polls")
    assert lines.count() == 1
    assert "Polled 40 times" in lines.first.inner_text()
    assert lines.locator("a.replay-link").count() == 0
    assert page.locator("#timeline-items li.kind-action").count() == 0


def test_operations_reads_a_partner_s_delivery_health_and_dry_runs_a_recovery_on_a_phone(
    page, live_server, network, operations_user
):
    from lib.formats import rfc3339
    from records.models import DeliveryAttempt

    newest = DeliveryAttempt.objects.latest("attempted_at").attempted_at
    failing = DeliveryAttempt.objects.filter(partner__partner_id="ptn_acme").failing_events()
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, live_server, operations_user)

    page.goto(f"{live_server.url}/deliveries/?at={rfc3339(newest)}")
    page.click("tr[data-partner=ptn_acme] a")
    page.wait_for_url("**/deliveries/?partner=ptn_acme*")
    assert page.locator("svg.delivery-chart.attempts").count() == 1
    assert page.locator("svg.delivery-chart.attempts g.hour").count() >= 1
    assert page.locator("#failing-events tr[data-event]").count() == failing.count() >= 1
    fits = "() => document.querySelector('main').getBoundingClientRect().right <= innerWidth"
    assert page.evaluate(fits)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "delivery-health.png"), full_page=True)

    page.click("#recover-form button[type=submit]")
    page.wait_for_url("**/deliveries/recover?*")
    assert int(page.locator("#dry-run-count").inner_text()) == failing.count()
    assert page.locator("#confirm-button").is_visible()


def test_an_agent_on_a_phone_opens_an_event_and_the_runs_without_sideways_scrolling(
    page, live_server, network, operations_user
):
    from actions.models import FailedItem
    from audit import log as audit
    from records.models import WebhookEvent
    from tests.factories import RunFactory

    event = WebhookEvent.objects.order_by("-created_at", "-id").first()  # atop the list
    run = RunFactory(
        user=operations_user,
        action="bulk.repoll",
        target="3 stuck trades",
        state="failed",
        total=3,
        failed=3,
    )
    for transact_id in ("pt_live_PHONE1", "pt_live_PHONE2", "pt_live_PHONE3"):
        FailedItem.objects.create(run=run, target=transact_id)
        audit.record(
            actor=operations_user,
            action="bulk.repoll",
            target=transact_id,
            reason="ticket 5",
            result="failed",
            detail="gave up after 4 tries: 500 from 0Pools",
            run_id=run.pk,
        )
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, live_server, operations_user)

    def fits():
        """Every card of the page inside the phone's width (wide tables scroll in their box)."""
        right = page.evaluate(
            "() => Math.max(...[...document.querySelectorAll('main .card')]"
            ".map(card => card.getBoundingClientRect().right))"
        )
        return 0 < right <= 390

    page.goto(f"{live_server.url}/events/")
    page.click(f"a[href='/events/{event.event_id}/']")
    page.wait_for_url(f"{live_server.url}/events/{event.event_id}/")
    assert page.locator("#event-payload").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "event-390.png"), full_page=True)
    assert fits()

    page.goto(f"{live_server.url}/runs/")
    page.click(f"a[href='/actions/runs/{run.pk}/']")
    page.wait_for_url(f"{live_server.url}/actions/runs/{run.pk}/")
    assert page.locator("rect.bar-failed").get_attribute("width") == "100.00"
    assert page.locator("#retry-button").is_visible()
    page.screenshot(path=str(ARTIFACTS / "failed-run-390.png"), full_page=True)
    assert fits()

    page.click("#retry-button")
    page.wait_for_url(f"{live_server.url}/actions/runs/{run.pk}/retry")
    assert "pt_live_PHONE1" in page.locator("ul.what").inner_text()
    assert fits()


def test_operations_resolve_a_reconciliation_exception_on_a_phone(
    page, live_server, exceptions_network, operations_user
):
    from records.models import Trade

    trade = Trade.objects.get(order__partner_reference="recon_settled_without_settlement")
    item = f'li.recon-item[data-subject="{trade.transact_id}"]'
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, live_server, operations_user)

    page.goto(f"{live_server.url}/reconciliation/2026-11-20")
    assert page.locator("#close-state").inner_text().startswith("live")
    assert page.locator("svg.recon-chart g.pool").count() >= 1
    assert overflow(page) == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "reconciliation-day.png"), full_page=True)

    page.click(f"{item} a.resolve-link")
    page.fill("textarea[name=reason]", "ticket 4411: settlement posted under a wrong id")
    page.click("#confirm-button")

    page.wait_for_url("**/reconciliation/2026-11-20")
    assert "resolved" in page.locator("ul.messages").inner_text()
    assert page.locator(item).count() == 0
    page.click("#show-all")
    assert page.locator(item).get_attribute("data-state") == "resolved"
    page.goto(live_server.url + trade.order.get_absolute_url())
    assert page.locator("text=ticket 4411: settlement posted under a wrong id").count() >= 1


def test_an_admin_creates_a_partner_issues_and_rolls_a_key_rotates_a_secret_and_pings_it(
    page, live_server, admin_user, upstream
):
    import httpx

    from partners.models import ApiKey
    from tests.helpers import received

    sign_in(page, live_server, admin_user)
    page.click("header nav.sections >> text=Partners")
    page.click("#new-partner")
    page.fill("#id_partner_id", "ptn_browser")
    page.fill("#id_name", "Browser Ltd")
    page.select_option("#id_mode", "live")
    page.check("#id_verified")
    page.fill("#id_reason", "signed contract")
    page.click("#partner-form button[type=submit]")
    page.wait_for_url("**/partners/ptn_browser/")

    page.fill("#endpoint-form input[name=url]", f"{upstream.url}/partners/ptn_browser/webhooks")
    page.fill("#endpoint-form input[name=reason]", "onboarding")
    page.fill("#endpoint-form input[name=sudo_password]", PASSWORD)
    page.click("#endpoint-form button[type=submit]")
    page.wait_for_url("**/partners/ptn_browser/")

    # In sudo mode since the endpoint: no password asked again.
    page.fill("#issue-form input[name=reason]", "first key")
    page.click("#issue-form button[type=submit]")
    first = page.locator("#secret-value").inner_text()
    assert first.startswith("sk_live_")
    page.click("#done")
    assert first not in page.content() and first[-4:] in page.content()

    roll = page.locator(".roll-form").first
    roll.locator("select[name=overlap]").select_option("1h")
    roll.locator("input[name=reason]").fill("yearly roll")
    roll.locator("button[type=submit]").click()
    second = page.locator("#secret-value").inner_text()
    assert second.startswith("sk_live_") and second != first
    page.click("#done")
    states = page.locator("#keys tr[data-key]").evaluate_all(
        "rows => rows.map(r => r.dataset.state)"
    )
    assert sorted(states) == ["active", "expiring"]
    assert ApiKey.objects.filter(expires_at__isnull=False).count() == 1

    page.fill("#rotate-form input[name=reason]", "first secret")
    page.click("#rotate-form button[type=submit]")
    secret = page.locator("#secret-value").inner_text()
    assert secret.startswith("whsec_")
    httpx.post(
        f"{upstream.url}/_sandbox/partners/ptn_browser", json={"secrets": [secret], "respond": 200}
    )
    page.click("#done")

    page.click("#test-event-form button[type=submit]")
    page.wait_for_url("**/partners/ptn_browser/")
    assert "answered 200" in page.locator("ul.messages").inner_text()
    assert [(r["verified"], r["event"]["type"]) for r in received(upstream, "ptn_browser")] == [
        (True, "ping")
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "partner-1280.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(ARTIFACTS / "partner.png"), full_page=True)
    assert overflow(page) == 0
