from django.contrib.auth import views as auth_views
from django.urls import include, path

from ingest import views as ingest_views
from partners import machine as partners_machine

# Every error in the panel's layout, in words, with a way back (lib/errors.py).
handler400 = "lib.errors.bad_request"
handler403 = "lib.errors.permission_denied"
handler404 = "lib.errors.page_not_found"
handler500 = "lib.errors.server_error"

urlpatterns = [
    # Sign-in and sign-out only: an admin resets a password (manage.py createuser).
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("webhooks/0pools", ingest_views.receive_webhook, name="webhook"),
    path("healthz", ingest_views.healthz, name="healthz"),
    # The 0Pools network's key checks: near the top, resolved before the pages.
    path("internal/keys/verify", partners_machine.verify_key, name="keys_verify"),
    path("", include("lookup.urls")),
    path("", include("timeline.urls")),
    path("", include("browse.urls")),
    path("", include("actions.urls")),
    path("", include("queues.urls")),
    path("", include("deliveries.urls")),
    path("", include("reconciliation.urls")),
    path("", include("audit.urls")),
    path("", include("partners.urls")),
    path("", include("team.urls")),
]
