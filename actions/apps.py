from django.apps import AppConfig


class ActionsConfig(AppConfig):
    name = "actions"
    verbose_name = "Guarded actions: re-poll, replay, runs"

    def ready(self):
        import stamina.instrumentation

        # actions.upstream logs each retry itself, naming the trade; stamina's
        # own WARNING line per retry would say it twice.
        stamina.instrumentation.set_on_retry_hooks([])
