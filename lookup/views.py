from django.db.models import Count
from django.shortcuts import render

from records.models import Trade, WebhookEvent


def home(request):
    """The landing page: where the search box lives, and the status mix at a glance."""
    mix = dict(Trade.objects.values_list("status").annotate(n=Count("id")).order_by())
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
        "statuses": statuses,
        "trades": sum(mix.values()),
        "unprocessed": WebhookEvent.objects.exclude(state=WebhookEvent.State.PROCESSED).count(),
    }
    return render(request, "lookup/home.html", context)
