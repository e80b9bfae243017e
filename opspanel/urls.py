from django.urls import include, path

from ingest import views as ingest_views
from lookup import views as lookup_views

urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("webhooks/0pools", ingest_views.receive_webhook, name="webhook"),
    path("healthz", ingest_views.healthz, name="healthz"),
    path("", lookup_views.home, name="home"),
]
