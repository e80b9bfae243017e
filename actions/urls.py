from django.urls import path

from . import views

app_name = "actions"
urlpatterns = [
    path("trades/<str:transact_id>/repoll", views.repoll_trade, name="repoll"),
    path("trades/<str:transact_id>/replay-latest", views.replay_latest_state, name="replay_latest"),
    path("events/<str:event_id>/replay", views.replay_event, name="replay"),
    path("actions/runs/<int:pk>/", views.run_status, name="run"),
    path("actions/runs/<int:pk>/retry", views.retry_run, name="retry"),
    path("runs/", views.runs, name="runs"),
]
