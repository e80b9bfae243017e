from django.urls import path

from . import views

app_name = "deliveries"
urlpatterns = [
    path("deliveries/", views.health_page, name="health"),
    path("deliveries/recover", views.recover, name="recover"),
]
