"""``/deliveries/``: how each partner's deliveries are going, and recovering the failed ones.

Every role reads delivery health; replaying a partner's failed deliveries
is operations' and admins' (``accounts.permissions.MATRIX``). Each view
names its one rule on its face.
"""

from urllib.parse import urlencode

from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from accounts.permissions import Action, Read, can, require
from actions.forms import ConfirmForm
from actions.services import new_key, set_version
from actions.views import submit
from lib.formats import rfc3339
from partners.models import SigningSecret
from records.querysets import FAILING_STREAK

from . import charts, health, services
from .forms import HealthForm, RecoverForm

SAMPLE = 20  # events a recovery's dry run lists of its set


def get_partner_for_user(user, partner_id):
    """The one way a view reaches a partner from the query (404 when unknown)."""
    return get_object_or_404(health.partners(), partner_id=partner_id)


# --- delivery health -------------------------------------------------------------


@require(Read.DELIVERIES)
@require_GET
def health_page(request):
    """``GET /deliveries/[?partner=ptn_…][&at=…]``: every partner, or one in detail."""
    form = HealthForm(request.GET)
    if not form.is_valid():
        # No figures under a question we could not read: the figures for
        # another moment would pass for its answer.
        return render(request, "deliveries/health.html", {"form": form}, status=400)
    chosen = form.cleaned_data["at"]
    at = chosen or timezone.now()
    partner_id = form.cleaned_data["partner"]
    if partner_id:
        partners = [get_partner_for_user(request.user, partner_id)]
    else:
        partners = list(health.partners())
    ids = [partner.pk for partner in partners]
    windows = health.windows(ids, at)
    hourly = health.hourly(ids, at)
    failing = health.failing(ids)
    size = charts.LARGE if partner_id else charts.SMALL
    rows = [
        {
            "partner": partner,
            "host": health.endpoint_host(partner),
            "hour": windows[partner.pk]["hour"],
            "day": windows[partner.pk]["day"],
            "windows": [
                ("Last hour", windows[partner.pk]["hour"]),
                ("Last day", windows[partner.pk]["day"]),
            ],
            "failing": failing[partner.pk],
            "chart": charts.draw(hourly[partner.pk], at, size),
            "link": _here(partner=partner.partner_id, at=chosen),
        }
        for partner in partners
    ]
    newest = max((p.newest_attempt for p in partners if p.newest_attempt), default=None)
    context = {
        "form": form,
        "at": at,
        "chosen": chosen,
        "rows": rows,
        "newest": newest,
        # Nothing in the day up to ``at`` but attempts before it: the data is
        # older than the windows (an import, the demo), or 0Pools went quiet.
        "quiet": newest is not None
        and newest <= at - health.DAY
        and not any(row["day"].attempts for row in rows),
        "newest_link": newest and _here(partner=partner_id, at=newest),
        "now_link": _here(partner=partner_id),
        "all_link": _here(at=chosen),
        "streak": FAILING_STREAK,
    }
    if partner_id:
        partner = partners[0]
        context |= {
            "partner": partner,
            "row": rows[0],
            "failing_events": health.failing_events(partner),
            "can_recover": can(request.user, Action.BULK_RECOVER),
            # The whole failing set by default; narrowed on the dry run.
            "recover_since": rows[0]["failing"].oldest,
        }
    return render(request, "deliveries/health.html", context)


def _here(*, partner=None, at=None):
    query = {}
    if partner:
        query["partner"] = partner
    if at:
        query["at"] = rfc3339(at)
    return reverse("deliveries:health") + (f"?{urlencode(query)}" if query else "")


# --- recovery: dry run, then confirm ----------------------------------------------------


@require(Action.BULK_RECOVER)
@require_http_methods(["GET", "POST"])
def recover(request):
    """``/deliveries/recover?partner=…&since=…[&until=…]``: GET is the dry run (the
    exact count, a sample, the confirm form); a POST of that form starts one run."""
    choice = RecoverForm(request.POST if request.method == "POST" else request.GET)
    if not choice.is_valid():
        context = {"choice": choice, "invalid": True}
        return render(request, "deliveries/recover.html", context, status=400)
    partner = get_partner_for_user(request.user, choice.cleaned_data["partner"])
    since, until = choice.cleaned_data["since"], choice.cleaned_data["until"]
    events = services.recoverable(partner, since, until)
    ids = list(events.values_list("event_id", flat=True)[: services.RECOVER_CAP + 1])
    current = set_version(ids)
    status = 200
    if request.method == "POST":
        form = ConfirmForm(request.POST)
        if form.is_valid():
            answer, status = submit(
                request,
                lambda: services.request_recover(
                    request.user,
                    partner,
                    ids,
                    since=since,
                    until=until,
                    key=form.cleaned_data["key"],
                    reason=form.cleaned_data["reason"],
                    drawn=form.cleaned_data["drawn"],
                ),
            )
            if answer:
                return answer
            # Refused: the set as it is now, ready to confirm anew; the reason is kept.
            form = ConfirmForm(
                initial={"key": new_key(), "drawn": current, "reason": form.cleaned_data["reason"]}
            )
        else:
            status = 400
    else:
        form = ConfirmForm(initial={"key": new_key(), "drawn": current})
    too_many = len(ids) > services.RECOVER_CAP
    sample = list(events[:SAMPLE]) if ids else []
    health.link_events(sample)
    secrets = SigningSecret.objects.active().filter(partner=partner).count()
    context = {
        "choice": choice,
        "params": choice.params(),
        "partner": partner,
        "host": health.endpoint_host(partner),
        "secrets": secrets,
        "form": form,
        # Exact even over the cap, where only the cap's worth of ids was read.
        "count": events.count() if too_many else len(ids),
        "too_many": too_many,
        "cap": services.RECOVER_CAP,
        "sample": sample,
        "back": _here(partner=partner.partner_id),
    }
    return render(request, "deliveries/recover.html", context, status=status)
