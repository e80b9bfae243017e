"""The per-person limit on guarded actions and changes (``OPSPANEL_ACTIONS_PER_MINUTE``).

Each service counts its own rows (runs, audit entries) and raises its own
refusal; the window and the words are the same everywhere.
"""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone


def a_minute_ago():
    return timezone.now() - timedelta(minutes=1)


def over_the_limit(recent, noun="actions"):
    """The words of a 429 when ``recent`` (the person's rows since ``a_minute_ago()``)
    has reached the limit; None while under it."""
    limit = settings.OPSPANEL_ACTIONS_PER_MINUTE
    if recent.count() >= limit:
        return (
            f"Rate limit: at most {limit} {noun} a minute. Nothing was done; try again in a minute."
        )
    return None
