from django.apps import AppConfig


class PartnersConfig(AppConfig):
    name = "partners"
    verbose_name = "Partners, their keys, endpoints and signing secrets"

    def ready(self):
        from . import checks  # noqa: F401 - registers the system checks
