from django.urls import path

from . import views

app_name = "timeline"
urlpatterns = [
    # A partner order id may hold any printable character, "/" included.
    path("orders/<str:partner_id>/<path:reference>/", views.order_timeline, name="order"),
    # The same timeline for an id that cannot be a path segment ("." or "..").
    path("orders/<str:partner_id>/", views.order_timeline_by_query, name="order_by_reference"),
]
