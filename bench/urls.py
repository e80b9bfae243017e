"""The product's URLs, and the bench's admin (its changelists reverse admin URLs)."""

from django.urls import path

from opspanel.urls import urlpatterns as product

from .admin import site

urlpatterns = [*product, path("bench-admin/", site.urls)]
