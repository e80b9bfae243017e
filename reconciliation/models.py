"""The daily close, as a record: what a day looked like when it was closed.

``Close`` is one UTC day closed once (by the beat or ``manage.py
close_day``): the totals and the exceptions as computed at ``closed_at``,
stored, so the report of a past day stays what it was as late events
arrive. ``Resolution`` is what operations did about one exception of a
day (resolved or ignored, with a reason); it is keyed by the exception's
kind and subject, so it holds on the live view of a day not closed yet and
carries over into its close.
"""

from django.conf import settings
from django.db import models

from records.models import ID_COLLATION


class Close(models.Model):
    day = models.DateField(unique=True, help_text="The UTC day closed.")
    closed_at = models.DateTimeField()
    # "schedule" (the beat), "cli" (manage.py close_day) or a username.
    closed_by = models.CharField(max_length=150)
    # [{"poolId", "status", "currency", "trades", "amount", "fees"}], amounts as text.
    totals = models.JSONField()
    took_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day"]

    def __str__(self):
        return f"close of {self.day}"


class ClosedException(models.Model):
    """One exception of a closed day, as it read at the close."""

    close = models.ForeignKey(Close, on_delete=models.CASCADE, related_name="exceptions")
    kind = models.CharField(max_length=40)
    # What the exception is about: a trade's transact id or a ledger entry's id.
    subject = models.CharField(max_length=48, db_collation=ID_COLLATION)
    transact_id = models.CharField(max_length=48, blank=True, db_collation=ID_COLLATION)
    ledger_id = models.CharField(max_length=48, blank=True, db_collation=ID_COLLATION)
    line = models.TextField()
    # The facts the line was written from (amounts as text, times RFC 3339).
    facts = models.JSONField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["close", "kind", "subject"], name="closed_exception_unique"
            )
        ]

    def __str__(self):
        return f"{self.kind} {self.subject}"


class Resolution(models.Model):
    """An exception of ``day`` resolved or ignored by a person, with why."""

    class State(models.TextChoices):
        RESOLVED = "resolved"
        IGNORED = "ignored"

    day = models.DateField()
    kind = models.CharField(max_length=40)
    subject = models.CharField(max_length=48, db_collation=ID_COLLATION)
    state = models.CharField(max_length=10, choices=State.choices)
    reason = models.TextField()
    line = models.TextField(help_text="What the exception said when it was worked.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    at = models.DateTimeField()
    # The confirm form's key: the same form submitted twice is one resolution.
    key = models.CharField(max_length=64, unique=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "kind", "subject"], name="resolution_unique")
        ]

    def __str__(self):
        return f"{self.day} {self.kind} {self.subject} {self.state}"
