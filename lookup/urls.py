from django.urls import path

from . import views

app_name = "lookup"
urlpatterns = [
    path("", views.home, name="home"),
    path("search", views.search_view, name="search"),
    path("id/<path:value>", views.id_view, name="id"),
]
