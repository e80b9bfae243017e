from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.permissions import Action
from records.models import Order


class Run(models.Model):
    """One confirmed guarded action and its progress (one trade, one event, or a bulk set).

    ``key`` comes from the confirm form: a double click, a retry or a
    resubmitted page finds the run that key already made and starts nothing.
    The audit log (``audit.Entry``) holds what was done; this row holds how
    far it got, for the progress shown on the page.
    """

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    key = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=40, choices=Action.choices)
    target = models.CharField(max_length=255)
    order = models.ForeignKey(Order, null=True, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField(blank=True)
    # What a bulk run acts on: the trade ids fixed at confirmation.
    params = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    total = models.PositiveIntegerField(default=1)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    # Heartbeat: moves with every item done, so a run that stopped moving
    # (its worker died) can be told from a long one.
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True)
    # "Retry the failed ones": the run whose failed items this one acts on.
    # A run is retried once; what fails again is retried from the retry.
    retry_of = models.ForeignKey(
        "self", null=True, on_delete=models.PROTECT, related_name="retries"
    )

    class Meta:
        indexes = [
            # Per-user rate limit: WHERE user_id = %s AND created_at > %s;
            # and /runs/ "mine" (the default): WHERE user_id = %s ORDER BY created_at DESC.
            models.Index(fields=["user", "created_at"], name="run_user_created_idx"),
            # /runs/ for everyone: ORDER BY created_at DESC, id DESC LIMIT n,
            # keyset: WHERE created_at <= %s AND (created_at < %s OR id < %s).
            models.Index(fields=["created_at", "id"], name="run_created_idx"),
            # "Last scheduled re-poll": WHERE action = %s ORDER BY created_at DESC.
            models.Index(fields=["action", "-created_at"], name="run_action_created_idx"),
        ]
        constraints = [
            # Two people retrying one run at the same moment make one retry.
            models.UniqueConstraint(fields=["retry_of"], name="run_retried_once"),
        ]

    def __str__(self):
        return f"{self.action} {self.target} ({self.state})"

    @property
    def title(self):
        return self.get_action_display()

    @property
    def finished(self):
        return self.state in (self.State.DONE, self.State.FAILED)

    @property
    def percent(self):
        """How far the run got: items done or failed, as a whole percentage."""
        return int(100 * (self.done + self.failed) / self.total) if self.total else 100

    @property
    def done_percent(self):
        """The bar's two parts (SVG widths out of 100): done, then failed."""
        return _share(self.done, self.total)

    @property
    def failed_percent(self):
        return _share(self.failed, self.total)


def _share(part, total):
    return f"{100 * part / total:.2f}" if total else "0"


class FailedItem(models.Model):
    """One item of a run that failed, written in the transaction that counts it.

    What "Retry the failed ones" acts on. The run's own targets are kept
    (a bulk replay's target is a trade even where its audit entry names
    the event it replayed), and an item whose step crashed, which has no
    audit entry, is here too.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="failed_items")
    target = models.CharField(max_length=255)
    at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.target} (run {self.run_id})"
