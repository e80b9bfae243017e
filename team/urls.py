from django.urls import path

from . import views

app_name = "team"
urlpatterns = [
    path("team/", views.team, name="list"),
    path("team/new", views.create, name="create"),
    path("team/<int:pk>/role", views.role, name="role"),
    path("team/<int:pk>/deactivate", views.deactivate, name="deactivate"),
]
