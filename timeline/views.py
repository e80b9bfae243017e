from django import forms
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from accounts.permissions import Read, require
from lib.errors import NotFound, wants_json

from . import build, reads


def get_order_for_user(user, partner_id, reference):
    """The one way a view reaches an order from the URL (404 when unknown).

    Whoever may read records may read every order; a narrower rule goes
    here and nowhere else.
    """
    order = reads.order(partner_id, reference)
    if order is None:
        raise NotFound(f"There is no order {reference} of partner {partner_id}.")
    return order


class ReferenceForm(forms.Form):
    reference = forms.CharField(max_length=128, strip=False)


@require(Read.RECORDS)
@require_GET
def order_timeline(request, partner_id, reference):
    """``/orders/<partner id>/<partner order id>/``: the one timeline of an order."""
    return _timeline(request, get_order_for_user(request.user, partner_id, reference))


@require(Read.RECORDS)
@require_GET
def order_timeline_by_query(request, partner_id):
    """``/orders/<partner id>/?reference=…``: the timeline of an order whose id
    cannot be a path segment (see ``records.models.order_url``)."""
    form = ReferenceForm(request.GET)
    if not form.is_valid():
        raise Http404("Say which order: ?reference=<partner order id>.")
    reference = form.cleaned_data["reference"]
    return _timeline(request, get_order_for_user(request.user, partner_id, reference))


def _timeline(request, order):
    timeline = build.build(order)
    if wants_json(request):
        return JsonResponse(timeline.as_json(), json_dumps_params={"indent": 2})
    # Drawn by Jinja2 (opspanel/jinja2.py says why); htmx refreshes it alone.
    live = render_to_string(
        "timeline/live.html", {"t": timeline, "order": order}, request, using="jinja2"
    )
    if request.htmx:
        response = HttpResponse(live)
    else:
        response = render(request, "timeline/order.html", {"order": order, "live": mark_safe(live)})  # noqa: S308 - escaped by Jinja2
    response["Vary"] = "Accept, HX-Request"
    return response
