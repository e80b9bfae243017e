from django.urls import include, path

from ingest import views as ingest_views

urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("webhooks/0pools", ingest_views.receive_webhook, name="webhook"),
    path("healthz", ingest_views.healthz, name="healthz"),
    path("", include("lookup.urls")),
    path("", include("timeline.urls")),
    path("", include("browse.urls")),
    path("", include("actions.urls")),
    path("", include("actions.queue_urls")),
    path("", include("audit.urls")),
]
