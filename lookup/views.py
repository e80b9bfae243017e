from datetime import timedelta

from django.db.models import Count
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.permissions import Read, require
from records.models import Partner, RejectedDelivery, Trade, WebhookEvent
from records.querysets import FAILING_STREAK

from . import search
from .forms import SearchForm


@require(Read.RECORDS)
@require_GET
def home(request):
    """The landing page: partners whose deliveries are failing now, and how the
    last day of trades stands.

    The status mix counts trades created in the 24 hours up to the newest
    one (``trade_created_idx`` bounds the scan), not the whole table.
    """
    newest = Trade.objects.order_by("-created_at").values_list("created_at", flat=True).first()
    recent = Trade.objects.none()
    if newest:
        recent = Trade.objects.filter(created_at__gt=newest - timedelta(hours=24))
    mix = dict(recent.values_list("status").annotate(n=Count("id")).order_by())
    total = sum(mix.values()) or 1
    statuses, offset = [], 0.0
    for status in Trade.Status.values:
        width = 100 * mix.get(status, 0) / total
        statuses.append(
            {
                "status": status,
                "count": mix.get(status, 0),
                "x": f"{offset:.2f}",
                "w": f"{width:.2f}",
            }
        )
        offset += width
    context = {
        # Clock-free: see PartnerQuerySet.with_delivery_state.
        "failing_partners": list(Partner.objects.failing_deliveries().order_by("partner_id")),
        "streak": FAILING_STREAK,
        "statuses": statuses,
        "trades": sum(mix.values()),
        "newest": newest,
        # event_unprocessed_idx (partial): only the few not yet applied.
        "unprocessed": WebhookEvent.objects.exclude(state=WebhookEvent.State.PROCESSED).count(),
        "refused": RejectedDelivery.objects.filter(
            received_at__gte=timezone.now() - timedelta(hours=1)
        ).count(),
    }
    return render(request, "lookup/home.html", context)


@require(Read.RECORDS)
@require_GET
def search_view(request):
    """``GET /search?q=…``: one id (exact, then prefix) or a whole pasted ticket."""
    form = SearchForm(request.GET)
    if not form.is_valid():
        return render(request, "lookup/results.html", {"form": form, "result": None}, status=400)
    raw = form.cleaned_data["q"]
    if search.looks_like_ticket(raw):
        result = search.extract(raw)
        return render(
            request,
            "lookup/results.html",
            {"form": form, "result": result, "ticket": True, "search_query": ""},
        )
    return _answer(request, search.lookup(raw), form=form)


@require(Read.RECORDS)
@require_GET
def id_view(request, value):
    """``GET /id/<value>``: the link form for tickets and chat."""
    return _answer(request, search.lookup(value), not_found_status=404)


def _answer(request, result, form=None, not_found_status=200):
    if result.redirect:
        return HttpResponseRedirect(result.redirect)
    if result.exact_single:
        return HttpResponseRedirect(result.hits[0].order.get_absolute_url())
    found = result.hits or result.waiting
    return render(
        request,
        "lookup/results.html",
        {"form": form, "result": result, "search_query": result.query},
        status=200 if found else not_found_status,
    )
