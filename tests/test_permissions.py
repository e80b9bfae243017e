"""The permission matrix guards every page, reads included: one rule per view."""

import pytest
from django.urls import resolve

from accounts.permissions import MATRIX, MAY_NOT, Action, Read
from tests.factories import UserFactory
from tests.helpers import url_patterns

pytestmark = pytest.mark.django_db

# Served to anyone: the sign-in page, the signed webhook, the health check.
PUBLIC = {"login", "webhook", "healthz", "keys_verify"}
# Any signed-in user, with a role or not, may sign out.
SIGNED_IN = {"logout"}


def routes():
    """(name, view) of every route."""
    for name, pattern in url_patterns():
        yield name, pattern.callback


def test_every_view_names_one_rule_of_the_matrix_or_is_public():
    unguarded, public_with_rule = [], []
    for name, view in routes():
        rule = getattr(view, "permissions", None)
        if name in SIGNED_IN:
            continue
        if name in PUBLIC:
            if rule or getattr(view, "login_required", True):
                public_with_rule.append(name)
        elif not rule or any(what not in MATRIX for what in rule):
            unguarded.append(name)

    assert unguarded == []
    assert public_with_rule == []


def test_the_matrix_names_every_action_and_read_and_nothing_else():
    assert set(MATRIX) == set(Action) | set(Read)


def test_every_action_and_read_says_in_words_what_a_refused_role_may_not_do():
    assert set(MAY_NOT) == set(MATRIX)
    for what, phrase in MAY_NOT.items():
        # It ends "Your role (support) may not …."
        assert phrase[0].islower() and not phrase.endswith("."), what


# One URL per guarded view, reads and writes; the guard answers before any lookup.
PAGES = [
    "/",
    "/search?q=pt_live_abc123",
    "/id/pt_live_abc123",
    "/orders/",
    "/orders/?format=csv",
    "/trades/",
    "/trades/?format=csv",
    "/events/",
    "/events/evt_abc123/",
    "/events/evt_abc123/?format=json",
    "/ledger/?format=csv",
    "/orders/ptn_acme/order_1/",
    "/orders/ptn_acme/order_1/?format=json",
    "/orders/ptn_acme/?reference=..",
    "/audit/",
    "/audit/?format=csv",
    "/queues/stuck",
    "/queues/stuck?format=csv",
    "/actions/runs/1/",
    "/actions/runs/1/retry",
    "/runs/",
    "/runs/?who=all&format=csv",
    "/trades/pt_live_abc123/repoll",
    "/trades/pt_live_abc123/replay-latest",
    "/events/evt_abc123/replay",
    "/pools/EUR-USDT/sla",
    "/deliveries/",
    "/deliveries/?partner=ptn_acme",
    "/deliveries/recover?partner=ptn_acme&since=2026-11-20T11:00:00Z",
    "/reconciliation/",
    "/reconciliation/2026-11-20",
    "/reconciliation/2026-11-20?format=csv",
    "/reconciliation/2026-11-20?format=json",
    "/reconciliation/2026-11-20/settled_without_fee/pt_live_abc123/work",
    "/partners/",
    "/partners/new",
    "/partners/ptn_acme/",
    "/partners/ptn_acme/edit",
    "/team/",
]
POSTS = [
    "/trades/pt_live_abc123/repoll",
    "/events/evt_abc123/replay",
    "/actions/runs/1/retry",
    "/queues/stuck/pt_live_abc123/claim",
    "/queues/stuck/pt_live_abc123/unclaim",
    "/queues/stuck/bulk",
    "/queues/stuck/bulk/confirm",
    "/pools/EUR-USDT/sla",
    "/deliveries/recover",
    "/reconciliation/2026-11-20/settled_without_fee/pt_live_abc123/work",
    "/partners/new",
    "/partners/ptn_acme/edit",
    "/partners/ptn_acme/status",
    "/partners/ptn_acme/entitlements",
    "/partners/ptn_acme/endpoint",
    "/partners/ptn_acme/test-event",
    "/partners/ptn_acme/keys",
    "/partners/ptn_acme/keys/1/roll",
    "/partners/ptn_acme/keys/1/revoke",
    "/partners/ptn_acme/secrets",
    "/partners/ptn_acme/secrets/1/retire",
    "/team/new",
    "/team/1/role",
    "/team/1/deactivate",
]


@pytest.fixture
def no_role(client):
    client.force_login(UserFactory(role=None))
    return client


@pytest.mark.parametrize("url", PAGES)
def test_a_signed_in_user_without_a_role_reads_nothing(no_role, url):
    response = no_role.get(url)

    assert response.status_code == 403
    assert b"pt_live" not in response.content.replace(b"pt_live_abc123", b"")


@pytest.mark.parametrize("url", POSTS)
def test_a_signed_in_user_without_a_role_changes_nothing(no_role, url):
    assert no_role.post(url, {"reason": "try", "action": "repoll"}).status_code == 403


def test_every_guarded_route_is_tried_without_a_role():
    tried = {resolve(url.split("?")[0]).view_name for url in PAGES + POSTS}

    assert tried == {name for name, _ in routes()} - PUBLIC - SIGNED_IN


@pytest.mark.parametrize(
    "url",
    [
        "/orders/ptn_acme/a%00b/",
        "/id/pt_live_%00",
        "/trades/pt_live_%00/repoll",
        "/events/evt_%00/replay",
        "/queues/stuck/pt_live_%00/claim",
        "/pools/EUR%00/sla",
        "/actions/runs/1%00/",
    ],
)
def test_an_address_with_a_nul_is_404_not_a_500(support, url):
    assert support.get(url).status_code == 404


@pytest.mark.parametrize(
    "url",
    ["/audit/?actor=a%00b", "/audit/?target=pt%00", "/search?q=pt_live_%00", "/orders/?x%00=1"],
)
def test_a_nul_in_a_filter_is_400_not_a_500(support, url):
    assert support.get(url).status_code == 400


# --- the sweep: every route, every kind of visitor, one table ------------------
#
# For each route: the address tried, the method, and what each visitor gets.
# "in" means the guard lets the visitor through (the view then answers as it
# would: 200, or 404 for an id nobody stored, or 405 for a GET of a POST);
# "403" is the guard refusing; "login" is the sign-in redirect; "public" is
# the same answer signed in or not. A route without a row fails the sweep.
IN, NO, LOGIN = "in", "403", "login"
READ = {"anonymous": LOGIN, "no role": NO, "support": IN, "operations": IN, "admin": IN}
OPERATE = {"anonymous": LOGIN, "no role": NO, "support": NO, "operations": IN, "admin": IN}
ADMIN_ONLY = {"anonymous": LOGIN, "no role": NO, "support": NO, "operations": NO, "admin": IN}
SWEEP = {
    "login": ("GET", "/accounts/login/", dict.fromkeys(READ, "public")),
    "healthz": ("GET", "/healthz", dict.fromkeys(READ, "public")),
    "webhook": ("POST", "/webhooks/0pools", dict.fromkeys(READ, "public")),
    # Signed in or not, role or not: signed out, and sent to sign in.
    "logout": ("POST", "/accounts/logout/", dict.fromkeys(READ, LOGIN)),
    "lookup:home": ("GET", "/", READ),
    "lookup:search": ("GET", "/search?q=pt_live_abc123", READ),
    "lookup:id": ("GET", "/id/pt_live_abc123", READ),
    "timeline:order": ("GET", "/orders/ptn_acme/order_1/", READ),
    "timeline:order_by_reference": ("GET", "/orders/ptn_acme/?reference=..", READ),
    "browse:orders": ("GET", "/orders/?format=csv", READ),
    "browse:trades": ("GET", "/trades/", READ),
    "browse:events": ("GET", "/events/", READ),
    "browse:event": ("GET", "/events/evt_abc123/?format=json", READ),
    "browse:ledger": ("GET", "/ledger/", READ),
    "actions:repoll": ("POST", "/trades/pt_live_abc123/repoll", READ),
    "actions:replay_latest": ("GET", "/trades/pt_live_abc123/replay-latest", READ),
    "actions:replay": ("POST", "/events/evt_abc123/replay", READ),
    "actions:run": ("GET", "/actions/runs/1/", READ),
    "actions:runs": ("GET", "/runs/", READ),
    "actions:retry": ("POST", "/actions/runs/1/retry", OPERATE),
    "queues:stuck": ("GET", "/queues/stuck", READ),
    "queues:bulk": ("POST", "/queues/stuck/bulk", OPERATE),
    "queues:bulk_confirm": ("POST", "/queues/stuck/bulk/confirm", OPERATE),
    "queues:claim": ("POST", "/queues/stuck/pt_live_abc123/claim", OPERATE),
    "queues:unclaim": ("POST", "/queues/stuck/pt_live_abc123/unclaim", OPERATE),
    "queues:pool_sla": ("GET", "/pools/EUR-USDT/sla", OPERATE),
    "deliveries:health": ("GET", "/deliveries/", READ),
    "deliveries:recover": ("POST", "/deliveries/recover", OPERATE),
    "audit:list": ("GET", "/audit/?format=csv", READ),
    "reconciliation:index": ("GET", "/reconciliation/", READ),
    "reconciliation:day": ("GET", "/reconciliation/2026-11-20?format=csv", READ),
    "reconciliation:work": (
        "POST",
        "/reconciliation/2026-11-20/settled_without_fee/pt_live_abc123/work",
        OPERATE,
    ),
    # Machine-authenticated (a bearer token): a session, any role, changes nothing.
    "keys_verify": ("POST", "/internal/keys/verify", dict.fromkeys(READ, "public")),
    "partners:list": ("GET", "/partners/", ADMIN_ONLY),
    "partners:create": ("POST", "/partners/new", ADMIN_ONLY),
    "partners:detail": ("GET", "/partners/ptn_acme/", ADMIN_ONLY),
    "partners:edit": ("POST", "/partners/ptn_acme/edit", ADMIN_ONLY),
    "partners:status": ("POST", "/partners/ptn_acme/status", ADMIN_ONLY),
    "partners:entitlement": ("POST", "/partners/ptn_acme/entitlements", ADMIN_ONLY),
    "partners:endpoint": ("POST", "/partners/ptn_acme/endpoint", ADMIN_ONLY),
    "partners:test_event": ("POST", "/partners/ptn_acme/test-event", ADMIN_ONLY),
    "partners:issue_key": ("POST", "/partners/ptn_acme/keys", ADMIN_ONLY),
    "partners:roll_key": ("POST", "/partners/ptn_acme/keys/1/roll", ADMIN_ONLY),
    "partners:revoke_key": ("POST", "/partners/ptn_acme/keys/1/revoke", ADMIN_ONLY),
    "partners:rotate_secret": ("POST", "/partners/ptn_acme/secrets", ADMIN_ONLY),
    "partners:retire_secret": ("POST", "/partners/ptn_acme/secrets/1/retire", ADMIN_ONLY),
    "team:list": ("GET", "/team/", ADMIN_ONLY),
    "team:create": ("POST", "/team/new", ADMIN_ONLY),
    "team:role": ("POST", "/team/1/role", ADMIN_ONLY),
    "team:deactivate": ("POST", "/team/1/deactivate", ADMIN_ONLY),
}
VISITORS = ["anonymous", "no role", "support", "operations", "admin"]


def test_the_sweep_has_a_row_for_every_route():
    assert set(SWEEP) == {name for name, _ in routes()}
    assert all(resolve(url.split("?")[0]).view_name == name for name, (_, url, _) in SWEEP.items())


def answer(client, method, url):
    return client.post(url, {"reason": "sweep"}) if method == "POST" else client.get(url)


@pytest.mark.parametrize("name", sorted(SWEEP))
def test_every_route_answers_each_visitor_as_the_table_says(client, name):
    method, url, expected = SWEEP[name]
    users = {
        "no role": UserFactory(role=None),
        "support": UserFactory(role="support"),
        "operations": UserFactory(role="operations"),
        "admin": UserFactory(role="admin"),
    }
    anonymous = answer(client, method, url).status_code
    got = {}
    for visitor in VISITORS:
        client.logout()
        if visitor != "anonymous":
            client.force_login(users[visitor])
        response = answer(client, method, url)
        status = response.status_code
        if expected[visitor] == "public":
            got[visitor] = "public" if status == anonymous else status
        elif status == 302 and "/accounts/login/" in response["Location"]:
            got[visitor] = LOGIN
        elif status == 403:
            got[visitor] = NO
        else:
            got[visitor] = IN
    assert got == expected
