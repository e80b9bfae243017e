"""What each list can be narrowed by.

Every query parameter a list acts on is validated here or in
``paging.PageForm``; the view only echoes the raw query back into its links.
"""

import django_filters as filters
from django import forms
from django.core.validators import RegexValidator
from django.db.models import Exists, OuterRef
from django_filters.widgets import DateRangeWidget

from records import ids
from records.models import LedgerEntry, Quote, Trade, WebhookEvent

PARTNER_ID = RegexValidator(rf"\A{ids.SHAPES['partner']}\Z", "A partner id looks like ptn_acme.")
POOL_ID = RegexValidator(rf"\A{ids.SHAPES['pool']}\Z", "A pool id looks like EUR-USDT.")
EVENT_TYPES = ids.EVENT_TYPES

TRADE_STATUSES = [(s, s) for s in Trade.Status.values]


class DayRangeWidget(DateRangeWidget):
    """Two date pickers, sent as ``date_from`` and ``date_to``."""

    suffixes = ["from", "to"]

    def __init__(self):
        super().__init__(attrs={"type": "date"})

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        for subwidget, suffix in zip(context["widget"]["subwidgets"], self.suffixes, strict=True):
            subwidget["attrs"]["aria-label"] = suffix
        return context


def partner_filter(field_name):
    return filters.CharFilter(
        field_name=field_name,
        label="Partner",
        validators=[PARTNER_ID],
        widget=forms.TextInput(attrs={"placeholder": "ptn_…"}),
    )


def pool_filter(field_name="pool__pool_id", **options):
    return filters.CharFilter(
        field_name=field_name,
        label="Pool",
        validators=[POOL_ID],
        widget=forms.TextInput(attrs={"placeholder": "EUR-USDT"}),
        **options,
    )


def date_filter(field_name, label):
    # Whole UTC days, both ends included: date_to=2026-06-28 keeps 23:59:59.
    return filters.DateFromToRangeFilter(
        field_name=field_name, label=label, widget=DayRangeWidget()
    )


def livemode_filter():
    return filters.ChoiceFilter(
        label="Mode",
        choices=[("live", "live"), ("test", "test")],
        empty_label="live and test",
        method=lambda queryset, name, value: queryset.filter(livemode=value == "live"),
    )


class OrderFilter(filters.FilterSet):
    partner = partner_filter("partner__partner_id")
    pool = pool_filter(method="filter_pool")
    livemode = livemode_filter()
    status = filters.ChoiceFilter(
        label="Has a trade",
        choices=TRADE_STATUSES,
        empty_label="any or none",
        method="filter_has_trade",
    )
    date = date_filter("last_activity_at", "Last activity")

    def filter_pool(self, queryset, name, value):
        # An order has no pool of its own: its quotes and trades do.
        return queryset.filter(
            Exists(Trade.objects.filter(order=OuterRef("pk"), pool__pool_id=value))
            | Exists(Quote.objects.filter(order=OuterRef("pk"), pool__pool_id=value))
        )

    def filter_has_trade(self, queryset, name, value):
        # "Has a trade in this status", not "whose latest trade is": an
        # order almost always has one trade, and EXISTS keeps it cheap.
        return queryset.filter(Exists(Trade.objects.filter(order=OuterRef("pk"), status=value)))


class TradeFilter(filters.FilterSet):
    partner = partner_filter("order__partner__partner_id")
    pool = pool_filter()
    livemode = livemode_filter()
    status = filters.ChoiceFilter(choices=TRADE_STATUSES, empty_label="any status")
    date = date_filter("created_at", "Created")


class EventFilter(filters.FilterSet):
    partner = partner_filter("partner_id")
    livemode = livemode_filter()
    type = filters.ChoiceFilter(
        choices=[(t, t) for t in EVENT_TYPES], empty_label="any type", label="Type"
    )
    state = filters.ChoiceFilter(
        choices=[(s, s) for s in WebhookEvent.State.values], empty_label="any state"
    )
    source = filters.ChoiceFilter(
        choices=[(s, s) for s in WebhookEvent.Source.values], empty_label="any source"
    )
    date = date_filter("created_at", "Created")


class LedgerFilter(filters.FilterSet):
    partner = partner_filter("partner__partner_id")
    pool = pool_filter()
    livemode = livemode_filter()
    type = filters.ChoiceFilter(
        field_name="entry_type",
        label="Entry type",
        choices=[(t, t) for t in LedgerEntry.EntryType.values],
        empty_label="any type",
    )
    date = date_filter("posted_at", "Posted")
