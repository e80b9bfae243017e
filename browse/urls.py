from django.urls import path

from . import views

app_name = "browse"
urlpatterns = [
    path("orders/", views.orders, name="orders"),
    path("trades/", views.trades, name="trades"),
    path("events/", views.events, name="events"),
    path("events/<str:event_id>/", views.event, name="event"),
    path("ledger/", views.ledger, name="ledger"),
]
