"""The list framework: a list described once (``Listing``), shown by ``show_list``.

The orders, trades, events and ledger pages (``browse``), the stuck queue
(``queues``) and the audit log (``audit``) are each one ``Listing``: a
filtered queryset read a keyset page at a time (``paging``), newest or
oldest first, or exported whole as CSV (``exports``). The template is
``lib/list.html``; htmx swaps only its ``results`` partial.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.db.models import QuerySet
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe
from django_htmx.http import push_url

from .drawn import Drawn
from .exports import csv_response
from .paging import PER_PAGE, PageForm, keyset_page, make_cursor


@dataclass(frozen=True)
class Listing:
    name: str  # URL name, CSV file name, cursor salt
    title: str
    filterset: type
    queryset: Callable[[], QuerySet]
    # Sort column, newest first, with the id as tie-break; the (time, id)
    # index that serves each one is named in its model.
    time_field: str
    table: str  # template with the <table> of one page
    csv_columns: list  # (header, values_list lookup): contract names only
    # Sets ``row.timeline`` (a URL, or None) on every row of one page,
    # with no query per row.
    link: Callable[[list], None]
    # The lists read newest first; a work queue oldest first.
    oldest_first: bool = False
    # A template drawn above the table, inside the results htmx swaps (by
    # ``engine`` too).
    summary: str = ""
    # More for the page: ``context(request, filterset)`` -> dict, called
    # only while the filters are valid.
    context: Callable | None = None
    # The engine of ``table`` and ``summary``: "jinja2" for the hot lists
    # (opspanel/jinja2.py says why).
    engine: str = "django"
    # True when the filter form's markup follows from the query string
    # alone (fixed choices, no database read, nothing from the user): it is
    # drawn once per query and kept (``_filter_fields``).
    form_from_query: bool = False
    # ``page(filterset, after, size)`` -> (rows, has_next): the keyset page
    # read another way than ``paging.keyset_page`` of ``filterset.qs``, the
    # same rows in the same order (the stuck queue's is plain SQL). The CSV
    # still reads ``filterset.qs``.
    page: Callable | None = None


def show_list(request, listing):
    """One page of ``listing`` under the request's filters, or all of it as CSV."""
    # The request goes along for filters that read who is asking ("my runs").
    # The queryset is built only if read (``lib.filters.FilterSet``): a page
    # read another way (``listing.page``) never needs it.
    filterset = listing.filterset(request.GET, queryset=listing.queryset, request=request)
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
        if listing.page:
            rows, has_next = listing.page(filterset, after, per_page)
        else:
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
    # The summary and the table, each rendered (and escaped) by the listing's
    # engine. No summary under invalid filters.
    context["summary"] = _render(listing.summary, listing, context, request) if valid else ""
    context["table"] = _render(listing.table, listing, context, request) if rows else ""
    template = "lib/list.html"
    if request.htmx and not request.htmx.history_restore_request:
        template += "#results"
    elif listing.form_from_query:
        context["filter_fields"] = _filter_fields(listing, filterset, request.GET)
    response = render(request, template, context)
    if request.htmx:
        # The address bar gets the tidy query, not every empty form field.
        push_url(response, f"{request.path}?{here}" if here else request.path)
    return response


def _render(template, listing, context, request):
    """``template`` by the listing's engine, which escaped it: safe to place as it is."""
    if not template:
        return ""
    return mark_safe(render_to_string(template, context, request, using=listing.engine))  # noqa: S308


# Drawn filter forms, by listing and query (``Listing.form_from_query``): a
# form was a fifth of the stuck queue's page, the same markup on every load.
_FORMS = Drawn(256)  # queries
_NOT_FORM = ("after", "format", "per_page")  # drawn outside the form's fields


def _filter_fields(listing, filterset, query):
    """The filter form's fields as ``lib/list.html#filter-fields`` draws them,
    kept per listing and query (``lib.drawn``; a key that long is not kept)."""
    asked = tuple((name, tuple(values)) for name, values in query.lists() if name not in _NOT_FORM)
    key = (listing.name, asked)
    return _FORMS.get(
        key,
        lambda: render_to_string("lib/list.html#filter-fields", {"filters": filterset}),
        keep=len(repr(key)) < 1000,
    )


def _query(params, **extra):
    params = params.copy()
    for key, value in extra.items():
        params[key] = value
    return params.urlencode()
