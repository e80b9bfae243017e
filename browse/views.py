"""Orders, trades, events and ledger: filtered, newest first, a page at a time or as CSV;
and one event's own page.

The lists only read records.
"""

from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from accounts.permissions import Read, require
from lib.errors import NotFound, wants_json
from lib.listing import show_list
from records import ids
from records.models import WebhookEvent

from . import event as event_page
from . import listings


@require(Read.RECORDS)
@require_GET
@vary_on_headers("HX-Request")
def orders(request):
    return show_list(request, listings.ORDERS)


@require(Read.RECORDS)
@require_GET
@vary_on_headers("HX-Request")
def trades(request):
    return show_list(request, listings.TRADES)


@require(Read.RECORDS)
@require_GET
@vary_on_headers("HX-Request")
def events(request):
    return show_list(request, listings.EVENTS)


@require(Read.RECORDS)
@require_GET
@vary_on_headers("HX-Request")
def ledger(request):
    return show_list(request, listings.LEDGER)


def get_event_for_user(user, event_id):
    """The one way a view reaches a stored event from the URL (404 when unknown).

    Whoever may read records may read every event; a narrower rule goes
    here and nowhere else.
    """
    event = WebhookEvent.objects.select_related("order__partner").filter(event_id=event_id).first()
    if event is not None:
        return event
    if not ids.PATTERNS["event"].fullmatch(event_id):
        raise NotFound("That is not an event id: event ids look like evt_01J4Z9.")
    raise NotFound(
        f"No event {event_id} is stored here. Ids are case-sensitive. An event 0Pools is "
        "still sending is not here yet, and one we refused (bad signature, broken "
        "contract) is never kept: the home page counts the refusals."
    )


@require(Read.RECORDS)
@require_GET
def event(request, event_id):
    """``/events/<eventId>/``: the stored envelope, how it came and every delivery of it."""
    facts = event_page.facts(get_event_for_user(request.user, event_id))
    if wants_json(request):
        response = JsonResponse(facts.as_json(), json_dumps_params={"indent": 2})
    else:
        response = render(request, "browse/event.html", {"facts": facts, "event": facts.event})
    response["Vary"] = "Accept"
    return response
