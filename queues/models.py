from django.conf import settings
from django.db import models
from django.utils import timezone

from records.models import Trade


class Claim(models.Model):
    """Who in operations is looking at a stuck trade."""

    trade = models.OneToOneField(Trade, on_delete=models.CASCADE, related_name="claim")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    claimed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        # Made by the actions app before the queue had its own; the table stays.
        db_table = "actions_claim"

    def __str__(self):
        return f"{self.trade} claimed by {self.user}"
