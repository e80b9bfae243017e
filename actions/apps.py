from django.apps import AppConfig


class ActionsConfig(AppConfig):
    name = "actions"
    verbose_name = "Guarded actions: re-poll, replay, the stuck queue"
