"""A partner's API keys: issued, rolled, revoked (each audited in the same
transaction, through the partner services' checks), and verified for the
0Pools network (``machine.py``). A key is returned once, in clear, to the
caller; only its hash is stored (``keys.py`` has the format)."""

from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.permissions import Action
from lib.formats import utc_text

from . import keys
from .models import ApiKey, Mode, Profile
from .services import (
    LAST_USED_EVERY,
    OVERLAPS,
    Refused,
    _check_rate,
    _locked_profile,
    _record,
)


@dataclass(frozen=True)
class Issued:
    """A new key: ``value`` is shown once and exists nowhere else."""

    key: ApiKey
    value: str


def _new_key(partner, profile, actor, actor_name, request_key, now):
    if profile.mode == Mode.LIVE and not profile.verified:
        raise Refused("Live keys only for a verified partner: verify it first.")
    value = keys.generate(profile.mode)
    try:
        with transaction.atomic():
            key = ApiKey.objects.create(
                partner=partner,
                mode=profile.mode,
                digest=keys.digest(value),
                last4=value[-4:],
                created_at=now,
                created_by=actor,
                created_by_name=actor.get_username() if actor else actor_name,
                request_key=request_key or None,
            )
    except IntegrityError:
        raise Refused(
            "This form was already sent: its key was shown once. Roll the key if it was lost.",
            status=409,
        ) from None
    return Issued(key, value)


@transaction.atomic
def issue_key(partner, *, actor=None, actor_name="cli", reason="", request_key=None, now=None):
    """A new key for the partner's mode (test keys for test partners, live for live)."""
    _check_rate(actor)
    now = now or timezone.now()
    profile = _locked_profile(partner)
    issued = _new_key(partner, profile, actor, actor_name, request_key, now)
    _record(
        actor, actor_name, Action.PARTNER_KEY_ISSUE, partner, reason, f"new key {issued.key.masked}"
    )
    return issued


@transaction.atomic
def roll_key(key, overlap, *, actor=None, actor_name="cli", reason="", request_key=None, now=None):
    """A new key now; the old one keeps working until now + ``overlap`` (an OVERLAPS name)."""
    _check_rate(actor)
    if overlap not in OVERLAPS:
        raise Refused(f"The old key expires {', '.join(OVERLAPS)}.")
    now = now or timezone.now()
    old = ApiKey.objects.select_for_update().get(pk=key.pk)
    if old.state(now) in ("revoked", "expired"):
        raise Refused(f"{old.masked} no longer works: issue a new key instead.", status=409)
    profile = _locked_profile(old.partner)
    issued = _new_key(old.partner, profile, actor, actor_name, request_key, now)
    until = now + OVERLAPS[overlap]
    old.expires_at = min(until, old.expires_at) if old.expires_at else until
    old.save(update_fields=["expires_at"])
    _record(
        actor,
        actor_name,
        Action.PARTNER_KEY_ROLL,
        old.partner,
        reason,
        f"new key {issued.key.masked}; {old.masked} expires {utc_text(old.expires_at)}",
    )
    return issued


@transaction.atomic
def revoke_key(key, *, actor=None, actor_name="cli", reason="", now=None):
    """Refused from now on, by every verification."""
    _check_rate(actor)
    now = now or timezone.now()
    updated = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
    if not updated:
        return False
    _record(
        actor, actor_name, Action.PARTNER_KEY_REVOKE, key.partner, reason, f"revoked {key.masked}"
    )
    return True


# One statement per verification: the key (usable now), its partner's status
# and entitlements. The unique index on digest finds the key.
VERIFY_SQL = """
SELECT k.id, k.mode, k.last_used_at, p.partner_id, COALESCE(pr.status, 'active'),
       (SELECT COALESCE(json_agg(json_build_array(e.pool_id, e.side, e.max_per_quote::text,
                                                  e.max_per_day::text)
                                 ORDER BY e.pool_id, e.side), '[]'::json)
          FROM partners_entitlement e WHERE e.partner_id = k.partner_id)
  FROM partners_apikey k
  JOIN records_partner p ON p.id = k.partner_id
  LEFT JOIN partners_profile pr ON pr.partner_id = k.partner_id
 WHERE k.digest = %s AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > %s)
"""


def verify_key(value, *, now=None):
    """What the network may do with ``value``, or None, whatever the reason
    (malformed, wrong checksum, unknown, revoked, expired). The checksum is
    checked before any lookup."""
    if keys.parse(value) is None:
        return None
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(VERIFY_SQL, [keys.digest(value), now])
        row = cursor.fetchone()
    if row is None:
        return None
    pk, mode, last_used_at, partner_id, status, entitlements = row
    if last_used_at is None or last_used_at <= now - LAST_USED_EVERY:
        # At most one write a minute per key, however many verifications (and
        # however many processes: the condition is checked again by the UPDATE).
        ApiKey.objects.filter(pk=pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_EVERY)
        ).update(last_used_at=now)
    if status == Profile.Status.SUSPENDED:
        entitlements = []
    return {
        "partnerId": partner_id,
        "environment": mode,
        "status": status,
        "entitlements": [
            {"poolId": pool_id, "side": side, "maxPerQuote": per_quote, "maxPerDay": per_day}
            for pool_id, side, per_quote, per_day in entitlements
        ],
    }
