"""Webhook signing secrets at rest: encrypted with MultiFernet.

``OPSPANEL_SECRET_KEYS`` holds one or more Fernet keys (space-separated):
the first encrypts, every one decrypts, so a key is rotated by putting a new
one first, running ``manage.py partners reencrypt``, then dropping the old
one. The panel needs the clear value to sign, so the secret is encrypted,
not hashed; API keys, which it only compares, are hashed (``keys.py``).
"""

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# DEBUG and tests only (settings refuse it in production: partners.E001 under
# ``check --deploy``). Everyone can read it here, so it protects nothing.
DEV_KEY = base64.urlsafe_b64encode(b"opspanel-dev-only-not-a-secret!!").decode()


@functools.cache
def _multifernet(keys):
    if not keys:
        raise ImproperlyConfigured(
            "OPSPANEL_SECRET_KEYS is not set: signing secrets cannot be encrypted or read."
        )
    return MultiFernet([Fernet(key) for key in keys])


def _current():
    return _multifernet(tuple(settings.OPSPANEL_SECRET_KEYS))


def encrypt(value: str) -> str:
    return _current().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    return _current().decrypt(token.encode()).decode()


def reencrypt(token: str) -> str:
    """The same secret under the first (newest) key."""
    return _current().rotate(token.encode()).decode()


def key_problem(key: str) -> str | None:
    try:
        Fernet(key)
    except (ValueError, TypeError):
        return "is not a Fernet key (url-safe base64 of 32 bytes)"
    return None


__all__ = ["DEV_KEY", "InvalidToken", "decrypt", "encrypt", "key_problem", "reencrypt"]
