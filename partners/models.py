"""Where and how the panel re-delivers events to a partner.

The partner itself (``records.Partner``) is what 0Pools tells us about;
its webhook endpoint and the secrets we sign replays with are ours.
"""

import hashlib

from django.db import models
from django.utils import timezone

from records.models import Partner


class Endpoint(models.Model):
    partner = models.OneToOneField(Partner, on_delete=models.CASCADE, related_name="endpoint")
    url = models.URLField(max_length=500, help_text="The partner's webhook URL (https).")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.partner} → {self.url}"


class SigningSecretQuerySet(models.QuerySet):
    def active(self, now=None):
        """Secrets replays are signed with: the newest, and older ones still in overlap."""
        now = now or timezone.now()
        return self.filter(models.Q(retires_at__isnull=True) | models.Q(retires_at__gt=now))


class SigningSecret(models.Model):
    """A ``whsec_`` secret; the value is needed to sign, so it is kept, and shown once."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="signing_secrets")
    secret = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)
    # Set when a newer secret replaces it: until then replays carry both signatures.
    retires_at = models.DateTimeField(null=True, blank=True)

    objects = SigningSecretQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.partner} secret {self.fingerprint}"

    @property
    def fingerprint(self):
        return "sha256:" + hashlib.sha256(self.secret.encode()).hexdigest()[:8]
