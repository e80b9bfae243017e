from django.apps import AppConfig


class IngestConfig(AppConfig):
    name = "ingest"

    def ready(self):
        from . import checks  # noqa: F401 - registers the system checks
