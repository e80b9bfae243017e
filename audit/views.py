"""``/audit/``: every guarded action as it happened, newest first."""

import django_filters as filters
from django import forms
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from accounts.permissions import Read, require
from lib.filters import FilterSet, date_filter
from lib.listing import Listing, show_list
from records.models import order_url

from .models import Entry


class EntryFilter(FilterSet):
    actor = filters.CharFilter(
        field_name="actor_name",
        lookup_expr="iexact",
        label="Actor",
        widget=forms.TextInput(attrs={"placeholder": "username or schedule"}),
    )
    # A prefix: "queue." finds claims and unclaims, "bulk." both bulk runs.
    action = filters.CharFilter(
        field_name="action",
        lookup_expr="startswith",
        label="Action",
        widget=forms.TextInput(attrs={"placeholder": "trade.repoll, bulk.…"}),
    )
    result = filters.ChoiceFilter(choices=Entry.Result.choices, empty_label="any result")
    target = filters.CharFilter(
        field_name="target",
        label="Target id",
        widget=forms.TextInput(attrs={"placeholder": "pt_…, evt_…, pool"}),
    )
    date = date_filter("at", "When")


def _link_entries(rows):
    for entry in rows:
        order = entry.order
        entry.timeline = order and order_url(order.partner.partner_id, order.partner_reference)


ENTRIES = Listing(
    name="audit",
    title="Audit log",
    filterset=EntryFilter,
    queryset=lambda: Entry.objects.select_related("order__partner"),
    # Served by audit_at_idx (at DESC, id DESC).
    time_field="at",
    table="audit/table.html",
    csv_columns=[
        ("at", "at"),
        ("actor", "actor_name"),
        ("role", "role"),
        ("action", "action"),
        ("target", "target"),
        ("result", "result"),
        ("reason", "reason"),
        ("detail", "detail"),
        ("beforeStatus", "before_status"),
        ("afterStatus", "after_status"),
        ("runId", "run_id"),
        ("partnerId", "order__partner__partner_id"),
        ("partnerReference", "order__partner_reference"),
    ],
    link=_link_entries,
)


@require(Read.AUDIT)
@require_GET
@vary_on_headers("HX-Request")
def entries(request):
    return show_list(request, ENTRIES)
