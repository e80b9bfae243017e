"""Orders, trades, events and ledger: filtered, newest first, a page at a time or as CSV.

Every role may read every list; the lists only read records.
"""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import push_url

from . import listings
from .exports import csv_response
from .paging import PER_PAGE, PageForm, keyset_page, make_cursor


@login_required
@require_GET
@vary_on_headers("HX-Request")
def orders(request):
    return show_list(request, listings.ORDERS)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def trades(request):
    return show_list(request, listings.TRADES)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def events(request):
    return show_list(request, listings.EVENTS)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def ledger(request):
    return show_list(request, listings.LEDGER)


def show_list(request, listing):
    filterset = listing.filterset(request.GET, queryset=listing.queryset())
    page_form = PageForm(request.GET, listing=listing)
    page_form.is_valid()  # a bad cursor or page size falls back; the form says so
    after = page_form.cleaned_data.get("after")
    per_page = page_form.cleaned_data.get("per_page") or PER_PAGE
    valid = filterset.is_valid()

    if page_form.cleaned_data.get("format") == "csv" and valid:
        return csv_response(listing, filterset.qs)

    rows, has_next = [], False
    if valid:
        # An invalid filter shows its error and no rows: the unfiltered list
        # under a filter form would pass for the answer to the question.
        rows, has_next = keyset_page(
            filterset.qs, listing.time_field, after, per_page, oldest_first=listing.oldest_first
        )
        listing.link(rows)

    # Links keep the filters as asked (and a chosen page size), minus empty
    # fields, the cursor and the format.
    kept = request.GET.copy()
    for key in ("after", "format"):
        kept.pop(key, None)
    for key in [key for key, value in kept.items() if not value]:
        kept.pop(key)
    here = _query(kept, after=page_form.data["after"]) if after else kept.urlencode()

    context = {
        "listing": listing,
        "filters": filterset,
        "page_errors": page_form.errors,
        "rows": rows,
        "per_page": per_page if "per_page" in kept else None,
        "query": kept.urlencode(),
        "later_page": after is not None,
        "next_query": has_next and _query(kept, after=make_cursor(listing, rows[-1])),
        "csv_query": valid and _query(kept, format="csv"),
    }
    if listing.context and valid:
        context |= listing.context(request, filterset)
    template = "browse/list.html"
    if request.htmx and not request.htmx.history_restore_request:
        template += "#results"
    response = render(request, template, context)
    if request.htmx:
        # The address bar gets the tidy query, not every empty form field.
        push_url(response, f"{request.path}?{here}" if here else request.path)
    return response


def _query(params, **extra):
    params = params.copy()
    for key, value in extra.items():
        params[key] = value
    return params.urlencode()
