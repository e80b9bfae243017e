from django.urls import path

from . import views

app_name = "partners"
urlpatterns = [
    path("partners/", views.partner_list, name="list"),
    path("partners/new", views.partner_create, name="create"),
    path("partners/<str:partner_id>/", views.partner_detail, name="detail"),
    path("partners/<str:partner_id>/edit", views.partner_edit, name="edit"),
    path("partners/<str:partner_id>/status", views.partner_status, name="status"),
    path("partners/<str:partner_id>/entitlements", views.entitlement, name="entitlement"),
    path("partners/<str:partner_id>/endpoint", views.endpoint, name="endpoint"),
    path("partners/<str:partner_id>/test-event", views.test_event, name="test_event"),
    path("partners/<str:partner_id>/keys", views.issue_key, name="issue_key"),
    path("partners/<str:partner_id>/keys/<int:pk>/roll", views.roll_key, name="roll_key"),
    path("partners/<str:partner_id>/keys/<int:pk>/revoke", views.revoke_key, name="revoke_key"),
    path("partners/<str:partner_id>/secrets", views.rotate_secret, name="rotate_secret"),
    path(
        "partners/<str:partner_id>/secrets/<int:pk>/retire",
        views.retire_secret,
        name="retire_secret",
    ),
]
