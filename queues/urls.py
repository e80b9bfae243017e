from django.urls import path

from . import views

app_name = "queues"
urlpatterns = [
    path("queues/stuck", views.stuck_queue, name="stuck"),
    path("queues/stuck/bulk", views.bulk, name="bulk"),
    path("queues/stuck/bulk/confirm", views.bulk_confirm, name="bulk_confirm"),
    path("queues/stuck/<str:transact_id>/claim", views.claim, name="claim"),
    path("queues/stuck/<str:transact_id>/unclaim", views.unclaim, name="unclaim"),
    path("pools/<str:pool_id>/sla", views.pool_sla, name="pool_sla"),
]
