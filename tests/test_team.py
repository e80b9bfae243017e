"""``/team/``: admins see and change the panel's users, through the services
``manage.py createuser`` uses, with the password asked again (sudo)."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.roles import role_of
from accounts.services import create_user
from audit.models import Entry
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "a long enough new password 42"


def test_the_team_page_lists_users_their_role_and_last_sign_in(admin, support_user):
    page = admin.get("/team/").content.decode()

    assert 'data-user="sam-support"' in page and 'data-user="ada-admin"' in page
    assert "support" in page and "<time" in page  # the admin's own sign-in


def test_an_admin_creates_a_user_changes_the_role_and_deactivates_them(admin):
    created = admin.post(
        "/team/new",
        {
            "username": "nina",
            "password": NEW_PASSWORD,
            "role": "support",
            "reason": "hired",
            "sudo_password": PASSWORD,
        },
    )
    nina = get_user_model().objects.get(username="nina")
    assert created.status_code == 302 and role_of(nina) == "support"
    admin.post(f"/team/{nina.pk}/role", {"role": "operations", "reason": "moved"})
    nina = get_user_model().objects.get(username="nina")
    assert role_of(nina) == "operations"

    admin.post(f"/team/{nina.pk}/deactivate", {"reason": "left"})

    assert not get_user_model().objects.get(username="nina").is_active
    assert list(Entry.objects.order_by("id").values_list("action", "target", "reason")) == [
        ("team.create", "nina", "hired"),
        ("team.role", "nina", "moved"),
        ("team.deactivate", "nina", "left"),
    ]
    assert not Client().login(username="nina", password=NEW_PASSWORD)


def test_a_deactivated_user_is_signed_out_at_the_next_request(admin, support_user):
    client = Client()
    client.force_login(support_user)
    assert client.get("/").status_code == 200

    admin.post(f"/team/{support_user.pk}/deactivate", {"reason": "left", "sudo_password": PASSWORD})

    assert client.get("/").status_code == 302
    # Reactivated later, they sign in afresh: no session from before comes back.
    support_user.refresh_from_db()
    support_user.is_active = True
    support_user.save()
    assert client.get("/").status_code == 302
    assert admin.get("/team/").status_code == 200  # the admin's own session is kept


def test_team_changes_demand_the_password(admin, support_user):
    asked = admin.post(f"/team/{support_user.pk}/role", {"role": "admin", "reason": "x"})

    assert b'id="sudo"' in asked.content
    assert role_of(get_user_model().objects.get(pk=support_user.pk)) == "support"


def test_the_last_admin_stays_admin_and_no_one_deactivates_themselves(admin, admin_user):
    admin.post(
        f"/team/{admin_user.pk}/role", {"role": "support", "reason": "x", "sudo_password": PASSWORD}
    )
    refused = admin.post(f"/team/{admin_user.pk}/deactivate", {"reason": "x"})

    assert role_of(get_user_model().objects.get(pk=admin_user.pk)) == "admin"
    assert refused.status_code == 409 and get_user_model().objects.get(pk=admin_user.pk).is_active
    create_user("second-admin", PASSWORD, "admin")
    admin.post(f"/team/{admin_user.pk}/role", {"role": "support", "reason": "x"})
    assert role_of(get_user_model().objects.get(pk=admin_user.pk)) == "support"


def test_a_weak_or_taken_username_or_password_is_refused(admin, support_user):
    sudo = {"sudo_password": PASSWORD, "role": "support", "reason": "x"}
    weak = admin.post("/team/new", {"username": "bob", "password": "password", **sudo})
    taken = admin.post("/team/new", {"username": "sam-support", "password": NEW_PASSWORD, **sudo})

    assert weak.status_code == 400 and taken.status_code == 409
    assert not get_user_model().objects.filter(username="bob").exists()
    assert b"hired" not in taken.content and NEW_PASSWORD.encode() not in taken.content


def test_the_password_page_never_echoes_a_password(admin):
    asked = admin.post(
        "/team/new",
        {"username": "nina", "password": NEW_PASSWORD, "role": "support", "reason": "hired"},
    )

    assert b'id="sudo"' in asked.content and b'value="hired"' in asked.content
    assert NEW_PASSWORD.encode() not in asked.content
