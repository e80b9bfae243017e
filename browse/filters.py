"""What the orders, trades, events and ledger lists can be narrowed by."""

import django_filters as filters
from django.db.models import Exists, OuterRef

from lib.filters import (
    FilterSet,
    date_filter,
    id_prefix_filter,
    livemode_filter,
    partner_filter,
    pool_filter,
)
from records import ids, states
from records.models import Identifier, LedgerEntry, Quote, Trade, WebhookEvent

TRADE_STATUSES = [(s, s) for s in states.STATUSES]


class OrderFilter(FilterSet):
    id = id_prefix_filter(method="filter_id_prefix")
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

    def filter_id_prefix(self, queryset, name, value):
        # Any id of the order, of every kind the search box knows, through
        # the search's own index: ids in collation "C" make LIKE 'prefix%'
        # one range scan (PostgreSQL picks identifier_unique, which
        # leads with value and carries order_id: index-only). The search
        # links here when a prefix matches more than it lists.
        return queryset.filter(
            pk__in=Identifier.objects.filter(value__startswith=value).values("order_id")
        )

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


class TradeFilter(FilterSet):
    partner = partner_filter("order__partner__partner_id")
    pool = pool_filter()
    livemode = livemode_filter()
    status = filters.ChoiceFilter(choices=TRADE_STATUSES, empty_label="any status")
    date = date_filter("created_at", "Created")


class EventFilter(FilterSet):
    partner = partner_filter("partner_id")
    livemode = livemode_filter()
    type = filters.ChoiceFilter(
        choices=[(t, t) for t in ids.EVENT_TYPES], empty_label="any type", label="Type"
    )
    state = filters.ChoiceFilter(
        choices=[(s, s) for s in WebhookEvent.State.values], empty_label="any state"
    )
    source = filters.ChoiceFilter(
        choices=[(s, s) for s in WebhookEvent.Source.values], empty_label="any source"
    )
    date = date_filter("created_at", "Created")


class LedgerFilter(FilterSet):
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
