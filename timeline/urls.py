from django.urls import path

from . import views

app_name = "timeline"
urlpatterns = [
    # A partner order id may hold any printable character, "/" included.
    path("orders/<str:partner_id>/<path:reference>/", views.order_timeline, name="order"),
]
