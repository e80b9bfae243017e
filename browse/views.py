"""Orders, trades, events and ledger: filtered, newest first, a page at a time or as CSV.

The lists only read records.
"""

from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from accounts.permissions import Read, require
from lib.listing import show_list

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
