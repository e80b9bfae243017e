from django.conf import settings
from django.core.checks import Error, Warning, register

from .crypto import DEV_KEY, key_problem


@register()
def secret_keys_valid(app_configs, **kwargs):
    """A mistyped encryption key is caught at start-up, not at the first rotation."""
    return [
        Error(
            f"OPSPANEL_SECRET_KEYS entry #{position} {problem}.",
            hint="Make one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'",
            id="partners.E002",
        )
        for position, key in enumerate(settings.OPSPANEL_SECRET_KEYS, start=1)
        if (problem := key_problem(key))
    ]


@register(deploy=True)
def secret_keys_deployed(app_configs, **kwargs):
    messages = []
    if not settings.OPSPANEL_SECRET_KEYS or DEV_KEY in settings.OPSPANEL_SECRET_KEYS:
        messages.append(
            Error(
                "OPSPANEL_SECRET_KEYS is unset or holds the public development key: "
                "webhook signing secrets would not be protected at rest.",
                id="partners.E001",
            )
        )
    if not settings.OPSPANEL_VERIFY_TOKENS:
        messages.append(
            Warning(
                "OPSPANEL_VERIFY_TOKENS is empty: every POST /internal/keys/verify is refused.",
                id="partners.W001",
            )
        )
    elif any(len(token) < 32 for token in settings.OPSPANEL_VERIFY_TOKENS):
        messages.append(
            Warning(
                "An OPSPANEL_VERIFY_TOKENS entry is shorter than 32 characters.", id="partners.W002"
            )
        )
    return messages
