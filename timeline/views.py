from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from accounts.permissions import Read, require
from lib.http import wants_json
from records.models import Order

from . import build


def get_order_for_user(user, partner_id, reference):
    """The one way a view reaches an order from the URL (404 when unknown).

    Whoever may read records may read every order; a narrower rule goes
    here and nowhere else.
    """
    return get_object_or_404(
        Order.objects.select_related("partner"),
        partner__partner_id=partner_id,
        partner_reference=reference,
    )


@require(Read.RECORDS)
@require_GET
def order_timeline(request, partner_id, reference):
    """``/orders/<partner id>/<partner order id>/``: the one timeline of an order."""
    order = get_order_for_user(request.user, partner_id, reference)
    timeline = build.build(order)
    if wants_json(request):
        return JsonResponse(timeline.as_json(), json_dumps_params={"indent": 2})
    template = "timeline/order.html"
    if request.htmx:
        template += "#live"
    response = render(request, template, {"t": timeline, "order": order})
    response["Vary"] = "Accept, HX-Request"
    return response
