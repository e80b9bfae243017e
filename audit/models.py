import pgtrigger
from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.permissions import Action
from records.models import Order


class Entry(models.Model):
    """One guarded action, as it happened. Append-only in the database."""

    class Result(models.TextChoices):
        OK = "ok"
        REFUSED = "refused"
        FAILED = "failed"
        NOT_FOUND = "not_found", "not found"

    at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    # Kept as text too: the log reads the same after a user is renamed, and
    # says "schedule" or "cli" where no user acted.
    actor_name = models.CharField(max_length=150)
    role = models.CharField(max_length=20, blank=True)
    action = models.CharField(max_length=40, choices=Action.choices)
    target = models.CharField(max_length=255, help_text="The id acted on.")
    order = models.ForeignKey(Order, null=True, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField(blank=True)
    result = models.CharField(max_length=10, choices=Result.choices)
    detail = models.TextField(blank=True)
    before_status = models.CharField(max_length=10, blank=True)
    after_status = models.CharField(max_length=10, blank=True)
    run_id = models.BigIntegerField(null=True, help_text="The action run it belongs to.")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # /audit/: newest first, keyset on (at, id).
            models.Index(fields=["-at", "-id"], name="audit_at_idx"),
            # The order timeline: WHERE order_id = %s.
            models.Index(fields=["order", "at"], name="audit_order_idx"),
            # Per-user rate limit: WHERE actor_id = %s AND at > now() - 1 min.
            models.Index(fields=["actor", "at"], name="audit_actor_at_idx"),
            # A run's page polls its entries and its last error:
            # WHERE run_id = %s [AND result IN (...)] ORDER BY at DESC, id DESC.
            models.Index(
                fields=["run_id", "-at", "-id"],
                condition=models.Q(run_id__isnull=False),
                name="audit_run_idx",
            ),
        ]
        triggers = [
            pgtrigger.Protect(
                name="audit_append_only", operation=pgtrigger.Update | pgtrigger.Delete
            ),
        ]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_name} {self.action} {self.target}"
