from django.urls import path

from . import views

app_name = "reconciliation"
urlpatterns = [
    path("reconciliation/", views.index, name="index"),
    path("reconciliation/<str:day>", views.day_view, name="day"),
    path("reconciliation/<str:day>/<str:kind>/<str:subject>/work", views.work, name="work"),
]
