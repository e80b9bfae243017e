"""What the panel decides about a partner, and how it re-delivers events to it.

The partner itself (``records.Partner``) is what 0Pools tells us about (or
what an admin created before 0Pools sent anything). Its standing (test or
live, active or suspended, verified, tier), its entitlements, its API keys,
its webhook endpoint and the secrets we sign with are ours. Written only by
``partners.services`` (pages and ``manage.py partners`` alike).
"""

import hashlib

from django.conf import settings
from django.db import models
from django.utils import timezone

from records.models import Partner

from . import crypto


class Mode(models.TextChoices):
    TEST = "test"
    LIVE = "live"


class Profile(models.Model):
    """A partner's standing. A partner 0Pools told us about has none until an
    admin first changes something; until then ``services.profile_of`` reads
    the defaults (its mode from its orders)."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    class Tier(models.TextChoices):
        STANDARD = "standard"
        GROWTH = "growth"
        ENTERPRISE = "enterprise"

    partner = models.OneToOneField(Partner, on_delete=models.CASCADE, related_name="profile")
    mode = models.CharField(max_length=4, choices=Mode.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    verified = models.BooleanField(
        default=False, help_text="Business verification done: live keys may be issued."
    )
    tier = models.CharField(max_length=12, choices=Tier.choices, default=Tier.STANDARD)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.partner} ({self.mode}, {self.status})"


class Entitlement(models.Model):
    """One pool and side a partner may quote, with its limits (in the amount's
    currency, the pool's first one); no limit when empty."""

    class Side(models.TextChoices):
        BUY = "buy"
        SELL = "sell"

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="entitlements")
    pool_id = models.CharField(max_length=21)
    side = models.CharField(max_length=4, choices=Side.choices)
    max_per_quote = models.DecimalField(max_digits=20, decimal_places=2, null=True, blank=True)
    max_per_day = models.DecimalField(max_digits=20, decimal_places=2, null=True, blank=True)

    class Meta:
        ordering = ["pool_id", "side"]
        constraints = [
            models.UniqueConstraint(
                fields=["partner", "pool_id", "side"], name="entitlement_once_per_pool_side"
            )
        ]

    def __str__(self):
        return f"{self.partner} {self.pool_id} {self.side}"


class ApiKeyQuerySet(models.QuerySet):
    def usable(self, now=None):
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    """A partner's ``sk_`` key: only its hash, its prefix and last 4 are kept."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="api_keys")
    mode = models.CharField(max_length=4, choices=Mode.choices)
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the whole key.")
    last4 = models.CharField(max_length=4)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    created_by_name = models.CharField(max_length=150)
    # Set by a roll (a chosen time) or a revoke (now); the key is refused from then on.
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # The form's one-time token: a double submit issues one key, not two.
    request_key = models.CharField(max_length=64, null=True, blank=True, unique=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.masked

    @property
    def prefix(self):
        return f"sk_{self.mode}_"

    @property
    def masked(self):
        return f"{self.prefix}…{self.last4}"

    def state(self, now=None):
        now = now or timezone.now()
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= now:
            return "expired"
        if self.expires_at:
            return "expiring"
        return "active"


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


def fingerprint_of(value):
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:8]


class SigningSecret(models.Model):
    """A ``whsec_`` secret. The value is needed to sign, so it is kept, but
    only encrypted (``crypto``); it is shown once, when made."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="signing_secrets")
    ciphertext = models.TextField()
    fingerprint = models.CharField(max_length=20)
    created_at = models.DateTimeField(default=timezone.now)
    # Set when a newer secret replaces it: until then replays carry both signatures.
    retires_at = models.DateTimeField(null=True, blank=True)
    request_key = models.CharField(max_length=64, null=True, blank=True, unique=True)

    objects = SigningSecretQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.partner} secret {self.fingerprint}"

    @property
    def secret(self):
        """The clear value, for signing only."""
        return crypto.decrypt(self.ciphertext)

    @classmethod
    def sealed(cls, partner, value, **fields):
        return cls(
            partner=partner,
            ciphertext=crypto.encrypt(value),
            fingerprint=fingerprint_of(value),
            **fields,
        )
