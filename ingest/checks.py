from django.conf import settings
from django.core.checks import Error, Warning, register

from .signatures import secret_problem


@register(deploy=True)
def webhook_secrets_configured(app_configs, **kwargs):
    if settings.OPOOLS_WEBHOOK_SECRETS:
        return []
    return [
        Warning(
            "OPOOLS_WEBHOOK_SECRETS is empty: every webhook will be refused with 401.",
            id="ingest.W001",
        )
    ]


@register()
def webhook_secrets(app_configs, **kwargs):
    """Catch a mistyped secret at start-up, not at the first delivery."""
    messages = []
    for position, value in enumerate(settings.OPOOLS_WEBHOOK_SECRETS, start=1):
        problem = secret_problem(value)
        if problem:
            messages.append(
                Error(
                    f"OPOOLS_WEBHOOK_SECRETS entry #{position} {problem}.",
                    hint="Each entry is whsec_ + base64 of 24-64 random bytes, space-separated.",
                    id="ingest.E001",
                )
            )
    return messages
