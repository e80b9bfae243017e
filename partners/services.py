"""Everything that changes a partner (its API keys: ``apikeys.py``, on these
helpers): the pages and ``manage.py partners`` call these, and nothing else
writes ``partners`` rows. Each change takes a reason
and writes its audit entry in the same transaction; a secret or a key is
returned once, in clear, to the caller, and never stored or logged so.
"""

import base64
import re
import secrets
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.permissions import Action
from audit import log as audit
from audit.models import Entry
from lib.formats import rfc3339, utc_text
from lib.limits import a_minute_ago, over_the_limit
from outbound.guard import ForbiddenTarget, check_url, guarded_client
from outbound.signing import deliver
from records.models import DeliveryAttempt, Order, Partner

from . import keys
from .models import ApiKey, Endpoint, Entitlement, Mode, Profile, SigningSecret

# How long the previous secret keeps signing beside the new one (the default).
ROTATION_OVERLAP = timedelta(hours=24)
# The choices a roll (keys) or a rotation (secrets) offers for the old one.
OVERLAPS = {
    "now": timedelta(0),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
PARTNER_ID = re.compile(r"^ptn_[a-z0-9_]{1,40}$")
POOL_ID = re.compile(r"^[A-Z0-9]{2,10}-[A-Z0-9]{2,10}$")
# A key's last use is written at most this often (no write per verification).
LAST_USED_EVERY = timedelta(minutes=1)


class Refused(Exception):
    """Nothing was changed; the message says why, ``status`` is the HTTP answer."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def new_secret():
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def host_of(url):
    return urlsplit(url).hostname or ""


def _record(actor, actor_name, action, partner, reason, detail, result=Entry.Result.OK):
    audit.record(
        actor=actor,
        actor_name=actor_name,
        action=action,
        target=partner.partner_id if isinstance(partner, Partner) else partner,
        reason=reason,
        detail=detail,
        result=result,
    )


def _check_rate(actor):
    """Per-user limit on partner and team changes, counted from the audit log."""
    if actor is None:
        return
    recent = Entry.objects.filter(actor=actor, at__gte=a_minute_ago()).filter(
        Q(action__startswith="partner.") | Q(action__startswith="team.")
    )
    limited = over_the_limit(recent, "changes")
    if limited:
        raise Refused(limited, status=429)


# --- the partner and its standing ---------------------------------------------


def default_mode(*, live, any):
    """A partner 0Pools told us about is live if any of its orders is, test
    if it only has test orders; live when nothing was seen yet."""
    return Mode.TEST if any and not live else Mode.LIVE


def infer_mode(partner):
    orders = Order.objects.filter(partner=partner)
    return default_mode(live=orders.filter(livemode=True).exists(), any=orders.exists())


def profile_of(partner):
    """The partner's saved standing, or the defaults it has until someone saves one."""
    try:
        return partner.profile
    except Profile.DoesNotExist:
        return Profile(partner=partner, mode=infer_mode(partner))


def _locked_profile(partner):
    """The partner's profile, locked for this transaction: every change of a
    partner's keys, secrets or standing is taken one at a time. The partner
    row is the lock (it always exists; the profile may not yet, and two
    first changes would both try to create it)."""
    locked = Partner.objects.select_for_update().get(pk=partner.pk)
    profile = Profile.objects.filter(partner=partner).first()
    if profile is None:
        profile = profile_of(locked)
        profile.save()
    return profile


@transaction.atomic
def create_partner(
    partner_id,
    name,
    mode,
    *,
    tier=Profile.Tier.STANDARD,
    verified=False,
    actor=None,
    actor_name="cli",
    reason="",
):
    _check_rate(actor)
    if not PARTNER_ID.match(partner_id or ""):
        raise Refused("A partner id is ptn_ and 1-40 of a-z, 0-9 and _.")
    if mode not in Mode.values:
        raise Refused("A partner is test or live.")
    partner, created = Partner.objects.get_or_create(partner_id=partner_id, defaults={"name": name})
    if not created:
        raise Refused(f"{partner_id} already exists.", status=409)
    Profile.objects.create(partner=partner, mode=mode, tier=tier, verified=verified)
    _record(
        actor,
        actor_name,
        Action.PARTNER_CREATE,
        partner,
        reason,
        f"{mode}, {tier}, {'verified' if verified else 'not verified'}",
    )
    return partner


@transaction.atomic
def update_partner(
    partner, *, name, tier, verified, mode=None, actor=None, actor_name="cli", reason=""
):
    """Name, tier, verified, and the mode while the partner has no key."""
    _check_rate(actor)
    profile = _locked_profile(partner)
    changes = []
    if mode and mode != profile.mode:
        if ApiKey.objects.filter(partner=partner).usable().exists():
            raise Refused("Test and live never mix: revoke its keys before changing the mode.")
        changes.append(f"mode {profile.mode} → {mode}")
        profile.mode = mode
    if name != partner.name:
        changes.append("name")
        Partner.objects.filter(pk=partner.pk).update(name=name)
        partner.name = name
    if tier != profile.tier:
        changes.append(f"tier {profile.tier} → {tier}")
        profile.tier = tier
    if verified != profile.verified:
        live_keys = ApiKey.objects.filter(partner=partner, mode=Mode.LIVE).usable()
        if not verified and live_keys.exists():
            # Live keys are issued to verified partners only; unverifying must
            # not leave them working, nor cut a partner off as a side effect.
            raise Refused(
                "Its live keys are in use: revoke them (or suspend the partner) "
                "before it is no longer verified."
            )
        changes.append("verified" if verified else "no longer verified")
        profile.verified = verified
    if not changes:
        return False
    profile.save()
    _record(actor, actor_name, Action.PARTNER_EDIT, partner, reason, "; ".join(changes))
    return True


@transaction.atomic
def set_status(partner, status, *, actor=None, actor_name="cli", reason=""):
    """Suspend (every key answers ``suspended``: the network quotes nothing) or reactivate."""
    _check_rate(actor)
    if status not in Profile.Status.values:
        raise Refused("A partner is active or suspended.")
    profile = _locked_profile(partner)
    if profile.status == status:
        return False
    before, profile.status = profile.status, status
    profile.save()
    _record(actor, actor_name, Action.PARTNER_STATUS, partner, reason, f"{before} → {status}")
    return True


@transaction.atomic
def set_entitlement(
    partner,
    pool_id,
    side,
    *,
    max_per_quote=None,
    max_per_day=None,
    actor=None,
    actor_name="cli",
    reason="",
):
    _check_rate(actor)
    if not POOL_ID.match(pool_id or ""):
        raise Refused("A pool id looks like EUR-USDT.")
    if side not in Entitlement.Side.values:
        raise Refused("A side is buy or sell.")
    for limit in (max_per_quote, max_per_day):
        if limit is not None and Decimal(limit) <= 0:
            raise Refused("A limit is a positive amount, or empty for none.")
    _locked_profile(partner)
    Entitlement.objects.update_or_create(
        partner=partner,
        pool_id=pool_id,
        side=side,
        defaults={"max_per_quote": max_per_quote, "max_per_day": max_per_day},
    )
    limits = f"per quote {max_per_quote or 'no limit'}, per day {max_per_day or 'no limit'}"
    _record(
        actor,
        actor_name,
        Action.PARTNER_ENTITLEMENT,
        partner,
        reason,
        f"{pool_id} {side}: {limits}",
    )


@transaction.atomic
def remove_entitlement(partner, pool_id, side, *, actor=None, actor_name="cli", reason=""):
    _check_rate(actor)
    deleted, _ = Entitlement.objects.filter(partner=partner, pool_id=pool_id, side=side).delete()
    if not deleted:
        return False
    _record(
        actor, actor_name, Action.PARTNER_ENTITLEMENT, partner, reason, f"{pool_id} {side}: removed"
    )
    return True


# --- endpoint, secrets, test event ---------------------------------------------


@transaction.atomic
def set_endpoint(partner, url, *, actor=None, actor_name="cli", reason=""):
    """The partner's webhook URL, checked now as replays check it (``check_url``:
    http(s), no credentials, a public address) and again at every connection."""
    _check_rate(actor)
    try:
        check_url(url, allow_private=settings.OPOOLS_OUTBOUND_ALLOW_PRIVATE)
    except ForbiddenTarget as exc:
        raise Refused(f"Endpoint refused: {exc}.") from None
    endpoint, _ = Endpoint.objects.update_or_create(partner=partner, defaults={"url": url})
    _record(
        actor,
        actor_name,
        Action.PARTNER_SET_ENDPOINT,
        partner,
        reason,
        f"endpoint host {host_of(url)}",
    )
    return endpoint


@transaction.atomic
def rotate_secret(
    partner, *, overlap="24h", actor=None, actor_name="cli", reason="", request_key=None, now=None
):
    """A new signing secret, returned once; the previous ones keep signing
    beside it until now + ``overlap`` (an OVERLAPS name)."""
    _check_rate(actor)
    if overlap not in OVERLAPS:
        raise Refused(f"The old secret retires {', '.join(OVERLAPS)}.")
    # One change of a partner's secrets at a time: two rotations at once would
    # each miss the other's new secret, and both would sign for good.
    _locked_profile(partner)
    now = now or timezone.now()
    retire_at = now + OVERLAPS[overlap]
    value = new_secret()
    try:
        with transaction.atomic():
            created = SigningSecret.sealed(
                partner, value, created_at=now, request_key=request_key or None
            )
            created.save()
    except IntegrityError:
        raise Refused(
            "This form was already sent: its secret was shown once.", status=409
        ) from None
    older = SigningSecret.objects.active(now).filter(partner=partner).exclude(pk=created.pk)
    older.filter(Q(retires_at__isnull=True) | Q(retires_at__gt=retire_at)).update(
        retires_at=retire_at
    )
    _record(
        actor,
        actor_name,
        Action.PARTNER_ROTATE_SECRET,
        partner,
        reason,
        f"new secret {created.fingerprint}; previous ones retire {utc_text(retire_at)}",
    )
    return value


@transaction.atomic
def retire_secret(secret, *, actor=None, actor_name="cli", reason="", now=None):
    """An older secret stops signing now. The newest one is replaced by a rotation."""
    _check_rate(actor)
    _locked_profile(secret.partner)  # as rotate_secret: one change at a time
    now = now or timezone.now()
    active = list(SigningSecret.objects.active(now).filter(partner=secret.partner))
    if active and active[0].pk == secret.pk:
        raise Refused("This is the newest secret: rotate it (with “now”) instead.", status=409)
    updated = SigningSecret.objects.active(now).filter(pk=secret.pk).update(retires_at=now)
    if not updated:
        return False
    _record(
        actor,
        actor_name,
        Action.PARTNER_RETIRE_SECRET,
        secret.partner,
        reason,
        f"retired {secret.fingerprint}",
    )
    return True


def reencrypt_secrets():
    """Every stored secret under the newest of OPSPANEL_SECRET_KEYS (key rotation)."""
    from . import crypto

    count = 0
    with transaction.atomic():
        for row in SigningSecret.objects.select_for_update().only("id", "ciphertext"):
            SigningSecret.objects.filter(pk=row.pk).update(
                ciphertext=crypto.reencrypt(row.ciphertext)
            )
            count += 1
    return count


def send_test_event(partner, *, actor=None, actor_name="cli", reason=""):
    """A signed ``ping`` through the replays' guarded client, recorded as a
    delivery attempt beside its audit entry. Returns the ``Delivery``."""
    _check_rate(actor)
    endpoint = Endpoint.objects.filter(partner=partner).first()
    signing = [s.secret for s in SigningSecret.objects.active().filter(partner=partner)]
    if endpoint is None:
        raise Refused(f"{partner.partner_id} has no webhook endpoint: set one first.", 409)
    if not signing:
        raise Refused(f"{partner.partner_id} has no signing secret: rotate one first.", 409)
    now = timezone.now()
    event_id = "evt_ping" + "".join(secrets.choice(keys.ALPHABET) for _ in range(20))
    body = orjson.dumps(
        {
            "id": event_id,
            "type": "ping",
            "createdAt": rfc3339(now),
            "livemode": profile_of(partner).mode == Mode.LIVE,
            "data": {"object": "ping", "partnerId": partner.partner_id},
        }
    )
    with guarded_client(allow_private=settings.OPOOLS_OUTBOUND_ALLOW_PRIVATE) as client:
        delivery = deliver(client, endpoint.url, event_id, body, signing)
    where = host_of(endpoint.url)
    if delivery.status_code is not None:
        detail = (
            f"ping {event_id}: {where} answered {delivery.status_code} in {delivery.duration_ms} ms"
        )
    else:
        detail = f"ping {event_id}: no answer from {where}"
    if delivery.error:
        detail += f" ({delivery.error})"
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            event_id=event_id,
            partner=partner,
            attempt=1,
            response_status=delivery.status_code,
            duration_ms=delivery.duration_ms,
            outcome=delivery.outcome,
            attempted_at=now,
        )
        _record(
            actor,
            actor_name,
            Action.PARTNER_TEST_EVENT,
            partner,
            reason,
            detail,
            result=Entry.Result.OK if delivery.succeeded else Entry.Result.FAILED,
        )
    return delivery, event_id
