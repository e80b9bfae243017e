"""``/partners/``: admins' pages for partners, their entitlements, endpoint,
signing secrets and API keys. Every change goes through ``partners.services``
(the same functions as ``manage.py partners``); key and secret operations ask
for the password again (``accounts.sudo``); a new key or secret is on the
answer to its POST, once, and nowhere else.
"""

import secrets

from django.contrib import messages
from django.db.models import Count, Exists, OuterRef, Q
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.permissions import Action, Read, require
from accounts.sudo import in_sudo, require_sudo
from audit.models import Entry
from lib.errors import found_or_404
from records.models import Order, Partner

from . import apikeys, forms, services
from .models import ApiKey, Endpoint, Entitlement, Profile, SigningSecret


def _partner(partner_id):
    return found_or_404(Partner.objects.all(), f"No partner {partner_id}.", partner_id=partner_id)


def _nonce():
    return secrets.token_urlsafe(24)


@require(Read.PARTNERS)
@require_GET
def partner_list(request):
    """One query, however many partners."""
    now = timezone.now()
    usable = Q(api_keys__revoked_at__isnull=True) & (
        Q(api_keys__expires_at__isnull=True) | Q(api_keys__expires_at__gt=now)
    )
    orders = Order.objects.filter(partner=OuterRef("pk"))
    partners = (
        Partner.objects.select_related("profile", "endpoint")
        .annotate(
            usable_keys=Count("api_keys", filter=usable),
            live_orders=Exists(orders.filter(livemode=True)),
            any_orders=Exists(orders),
        )
        .order_by("partner_id")
    )
    rows = []
    for partner in partners:
        endpoint = getattr(partner, "endpoint", None)
        try:
            profile = partner.profile
        except Profile.DoesNotExist:
            mode = services.default_mode(live=partner.live_orders, any=partner.any_orders)
            profile = Profile(partner=partner, mode=mode)
        rows.append(
            {
                "partner": partner,
                "profile": profile,
                "keys": partner.usable_keys,
                "host": services.host_of(endpoint.url) if endpoint else "",
            }
        )
    return render(request, "partners/list.html", {"rows": rows})


def _detail_context(request, partner, **extra):
    now = timezone.now()
    endpoint = Endpoint.objects.filter(partner=partner).first()
    profile = services.profile_of(partner)
    active_secrets = list(SigningSecret.objects.active(now).filter(partner=partner))
    context = {
        "partner": partner,
        "profile": profile,
        "endpoint_host": services.host_of(endpoint.url) if endpoint else "",
        "entitlements": list(Entitlement.objects.filter(partner=partner)),
        "secrets": active_secrets,
        "retired": SigningSecret.objects.filter(partner=partner, retires_at__lte=now)[:5],
        "keys": [(key, key.state(now)) for key in ApiKey.objects.filter(partner=partner)],
        "audit": Entry.objects.filter(target=partner.partner_id)[:20],
        "sudo": in_sudo(request),
        "nonce": _nonce(),
        "overlaps": forms.OVERLAP_LABELS,
        "suspended": profile.status == Profile.Status.SUSPENDED,
        "entitlement_form": forms.EntitlementForm(),
        "endpoint_form": forms.EndpointForm(),
    }
    context.update(extra)
    return context


@require(Read.PARTNERS)
@require_GET
def partner_detail(request, partner_id):
    partner = _partner(partner_id)
    return render(request, "partners/detail.html", _detail_context(request, partner))


def _refused(request, partner, refused, **extra):
    """The detail page again, the refusal on top, nothing changed."""
    context = _detail_context(request, partner, refusal=str(refused), **extra)
    return render(request, "partners/detail.html", context, status=refused.status)


def _invalid(request, partner, form, **extra):
    def label(name):
        field = form.fields.get(name)
        return (field.label if field and field.label else name).replace("_", " ")

    errors = "; ".join(f"{label(name)}: {e}" for name, errs in form.errors.items() for e in errs)
    context = _detail_context(request, partner, refusal=errors, **extra)
    return render(request, "partners/detail.html", context, status=400)


def _back(partner):
    return redirect("partners:detail", partner_id=partner.partner_id)


@require(Action.PARTNER_CREATE)
@require_http_methods(["GET", "POST"])
def partner_create(request):
    form = forms.PartnerForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                partner = services.create_partner(
                    data["partner_id"],
                    data["name"],
                    data["mode"],
                    tier=data["tier"],
                    verified=data["verified"],
                    actor=request.user,
                    reason=data["reason"],
                )
            except services.Refused as refused:
                form.add_error(None, str(refused))
                status = refused.status
            else:
                messages.success(request, f"{partner.partner_id} created.")
                return _back(partner)
        else:
            status = 400
    return render(request, "partners/form.html", {"form": form, "creating": True}, status=status)


@require(Action.PARTNER_EDIT)
@require_http_methods(["GET", "POST"])
def partner_edit(request, partner_id):
    partner = _partner(partner_id)
    profile = services.profile_of(partner)
    initial = {
        "name": partner.name,
        "mode": profile.mode,
        "tier": profile.tier,
        "verified": profile.verified,
    }
    form = forms.EditForm(request.POST or None, initial=initial)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                changed = services.update_partner(
                    partner,
                    name=data["name"],
                    tier=data["tier"],
                    verified=data["verified"],
                    mode=data["mode"],
                    actor=request.user,
                    reason=data["reason"],
                )
            except services.Refused as refused:
                form.add_error(None, str(refused))
                status = refused.status
            else:
                messages.success(request, "Saved." if changed else "Nothing changed.")
                return _back(partner)
        else:
            status = 400
    context = {"form": form, "partner": partner, "creating": False}
    return render(request, "partners/form.html", context, status=status)


@require(Action.PARTNER_STATUS)
@require_POST
def partner_status(request, partner_id):
    partner = _partner(partner_id)
    form = forms.StatusForm(request.POST)
    if not form.is_valid():
        return _invalid(request, partner, form)
    status = form.cleaned_data["status"]
    try:
        services.set_status(partner, status, actor=request.user, reason=form.cleaned_data["reason"])
    except services.Refused as refused:
        return _refused(request, partner, refused)
    messages.success(request, f"{partner.partner_id} is {status}.")
    return _back(partner)


@require(Action.PARTNER_ENTITLEMENT)
@require_POST
def entitlement(request, partner_id):
    partner = _partner(partner_id)
    form = forms.EntitlementForm(request.POST)
    if not form.is_valid():
        return _invalid(request, partner, form, entitlement_form=form)
    data = form.cleaned_data
    try:
        if data["remove"]:
            services.remove_entitlement(
                partner, data["pool_id"], data["side"], actor=request.user, reason=data["reason"]
            )
        else:
            services.set_entitlement(
                partner,
                data["pool_id"],
                data["side"],
                max_per_quote=data["max_per_quote"],
                max_per_day=data["max_per_day"],
                actor=request.user,
                reason=data["reason"],
            )
    except services.Refused as refused:
        return _refused(request, partner, refused, entitlement_form=form)
    messages.success(request, f"Entitlement {data['pool_id']} {data['side']} saved.")
    return _back(partner)


@require(Action.PARTNER_SET_ENDPOINT)
@require_POST
@require_sudo  # where replays send the partner's events, signed: as sensitive as a secret
def endpoint(request, partner_id):
    partner = _partner(partner_id)
    form = forms.EndpointForm(request.POST)
    if not form.is_valid():
        return _invalid(request, partner, form, endpoint_form=form)
    try:
        services.set_endpoint(
            partner,
            form.cleaned_data["url"],
            actor=request.user,
            reason=form.cleaned_data["reason"],
        )
    except services.Refused as refused:
        return _refused(request, partner, refused, endpoint_form=form)
    messages.success(request, f"Endpoint set: {services.host_of(form.cleaned_data['url'])}.")
    return _back(partner)


@require(Action.PARTNER_TEST_EVENT)
@require_POST
def test_event(request, partner_id):
    partner = _partner(partner_id)
    form = forms.ReasonForm(request.POST)
    if not form.is_valid():
        return _invalid(request, partner, form)
    try:
        delivery, event_id = services.send_test_event(
            partner, actor=request.user, reason=form.cleaned_data["reason"]
        )
    except services.Refused as refused:
        return _refused(request, partner, refused)
    answered = (
        f"answered {delivery.status_code}" if delivery.status_code is not None else "no answer"
    )
    text = f"Test event {event_id}: {answered} in {delivery.duration_ms} ms"
    text += f" ({delivery.error})." if delivery.error else "."
    (messages.success if delivery.succeeded else messages.error)(request, text)
    return _back(partner)


def _shown_once(request, partner, what, value, note):
    context = {
        "partner": partner,
        "what": what,
        "value": value,
        "note": note,
        "back": reverse("partners:detail", args=[partner.partner_id]),
    }
    return render(request, "partners/shown_once.html", context)


@require(Action.PARTNER_KEY_ISSUE)
@require_POST
@require_sudo
def issue_key(request, partner_id):
    partner = _partner(partner_id)
    form = forms.NonceForm(request.POST)
    if not form.is_valid():
        return _invalid(request, partner, form)
    try:
        issued = apikeys.issue_key(
            partner,
            actor=request.user,
            reason=form.cleaned_data["reason"],
            request_key=form.cleaned_data["nonce"],
        )
    except services.Refused as refused:
        return _refused(request, partner, refused)
    return _shown_once(
        request,
        partner,
        f"API key {issued.key.masked}",
        issued.value,
        "Give it to the partner now: it is not kept and cannot be shown again.",
    )


def _key(partner, pk):
    return found_or_404(ApiKey.objects.filter(partner=partner), f"No such key of {partner}.", pk=pk)


@require(Action.PARTNER_KEY_ROLL)
@require_POST
@require_sudo
def roll_key(request, partner_id, pk):
    partner = _partner(partner_id)
    key = _key(partner, pk)
    form = forms.OverlapForm(request.POST)
    if not form.is_valid():
        return _invalid(request, partner, form)
    overlap = form.cleaned_data["overlap"]
    try:
        issued = apikeys.roll_key(
            key,
            overlap,
            actor=request.user,
            reason=form.cleaned_data["reason"],
            request_key=form.cleaned_data["nonce"],
        )
    except services.Refused as refused:
        return _refused(request, partner, refused)
    note = (
        f"{key.masked} stops working {forms.OVERLAP_LABELS[overlap]}. Give the new key to the "
        "partner now: it is not kept and cannot be shown again."
    )
    return _shown_once(request, partner, f"API key {issued.key.masked}", issued.value, note)


@require(Action.PARTNER_KEY_REVOKE)
@require_POST
@require_sudo
def revoke_key(request, partner_id, pk):
    partner = _partner(partner_id)
    key = _key(partner, pk)
    form = forms.ReasonForm(request.POST)
    if not form.is_valid():
        return _invalid(request, partner, form)
    try:
        revoked = apikeys.revoke_key(key, actor=request.user, reason=form.cleaned_data["reason"])
    except services.Refused as refused:
        return _refused(request, partner, refused)
    if revoked:
        messages.success(request, f"{key.masked} revoked: every verification refuses it now.")
    else:
        messages.info(request, f"{key.masked} was already revoked.")
    return _back(partner)


@require(Action.PARTNER_ROTATE_SECRET)
@require_POST
@require_sudo
def rotate_secret(request, partner_id):
    partner = _partner(partner_id)
    form = forms.OverlapForm(request.POST)
    if not form.is_valid():
        return _invalid(request, partner, form)
    overlap = form.cleaned_data["overlap"]
    try:
        value = services.rotate_secret(
            partner,
            overlap=overlap,
            actor=request.user,
            reason=form.cleaned_data["reason"],
            request_key=form.cleaned_data["nonce"],
        )
    except services.Refused as refused:
        return _refused(request, partner, refused)
    note = (
        f"The previous secret keeps signing beside it until it retires "
        f"({forms.OVERLAP_LABELS[overlap]}): the partner sees both signatures meanwhile. "
        "It is stored encrypted and cannot be shown again."
    )
    return _shown_once(request, partner, "Webhook signing secret", value, note)


@require(Action.PARTNER_RETIRE_SECRET)
@require_POST
@require_sudo
def retire_secret(request, partner_id, pk):
    partner = _partner(partner_id)
    secret = found_or_404(
        SigningSecret.objects.filter(partner=partner), f"No such secret of {partner}.", pk=pk
    )
    form = forms.ReasonForm(request.POST)
    if not form.is_valid():
        return _invalid(request, partner, form)
    try:
        retired = services.retire_secret(
            secret, actor=request.user, reason=form.cleaned_data["reason"]
        )
    except services.Refused as refused:
        return _refused(request, partner, refused)
    if retired:
        messages.success(request, f"{secret.fingerprint} retired: it no longer signs.")
    else:
        messages.info(request, f"{secret.fingerprint} was already retired.")
    return _back(partner)
