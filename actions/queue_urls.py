from django.urls import path

from . import queue_views

app_name = "queue"
urlpatterns = [
    path("queues/stuck", queue_views.stuck, name="stuck"),
    path("queues/stuck/bulk", queue_views.bulk, name="bulk"),
    path("queues/stuck/bulk/confirm", queue_views.bulk_confirm, name="bulk_confirm"),
    path("queues/stuck/<str:transact_id>/claim", queue_views.claim, name="claim"),
    path("queues/stuck/<str:transact_id>/unclaim", queue_views.unclaim, name="unclaim"),
    path("pools/<str:pool_id>/sla", queue_views.pool_sla, name="pool_sla"),
]
