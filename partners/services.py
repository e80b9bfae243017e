"""Changing where and how a partner is told. Each change writes its audit entry."""

import base64
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone

from accounts.permissions import Action
from audit import log as audit

from .models import Endpoint, SigningSecret

# How long the previous secret keeps signing beside the new one.
ROTATION_OVERLAP = timedelta(hours=24)


def new_secret():
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@transaction.atomic
def set_endpoint(partner, url, *, actor=None, actor_name="cli", reason=""):
    endpoint, _ = Endpoint.objects.update_or_create(partner=partner, defaults={"url": url})
    audit.record(
        actor=actor,
        actor_name=actor_name,
        action=Action.PARTNER_SET_ENDPOINT,
        target=partner.partner_id,
        reason=reason,
        detail=f"endpoint host {host_of(url)}",
    )
    return endpoint


@transaction.atomic
def rotate_secret(partner, *, actor=None, actor_name="cli", reason="", now=None):
    """A new signing secret, returned; the old ones keep signing for ROTATION_OVERLAP."""
    now = now or timezone.now()
    SigningSecret.objects.filter(partner=partner, retires_at__isnull=True).update(
        retires_at=now + ROTATION_OVERLAP
    )
    value = new_secret()
    created = SigningSecret.objects.create(partner=partner, secret=value, created_at=now)
    audit.record(
        actor=actor,
        actor_name=actor_name,
        action=Action.PARTNER_ROTATE_SECRET,
        target=partner.partner_id,
        reason=reason,
        detail=f"new secret {created.fingerprint}; previous ones retire in {ROTATION_OVERLAP}",
    )
    return value


def host_of(url):
    return urlsplit(url).hostname or ""
