"""``/deliveries/``: how each partner's deliveries are going.

Every role reads delivery health (``accounts.permissions.MATRIX``). Each
view names its one rule on its face.
"""

from urllib.parse import urlencode

from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.permissions import Read, require
from lib.formats import rfc3339
from records.models import FAILING_STREAK

from . import charts, health
from .forms import HealthForm


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
        }
    return render(request, "deliveries/health.html", context)


def _here(*, partner=None, at=None):
    query = {}
    if partner:
        query["partner"] = partner
    if at:
        query["at"] = rfc3339(at)
    return reverse("deliveries:health") + (f"?{urlencode(query)}" if query else "")
