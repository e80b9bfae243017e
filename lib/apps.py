from django.apps import AppConfig


class LibConfig(AppConfig):
    """The panel's small shared library: formats, the list framework, task sending.

    An app only so that its template tags load; it has no models.
    """

    name = "lib"
    verbose_name = "Shared library"

    def ready(self):
        from .database import shorten_reconnect_backoff

        shorten_reconnect_backoff()
