"""Filter builders the lists share; each list's FilterSet lives with its pages.

Every query parameter a list acts on is validated by a FilterSet or by
``paging.PageForm``; a view only echoes the raw query back into its links.
"""

import django_filters as filters
from django import forms
from django.core.validators import RegexValidator
from django_filters.widgets import DateRangeWidget

from records import ids

PARTNER_ID = RegexValidator(rf"\A{ids.SHAPES['partner']}\Z", "A partner id looks like ptn_acme.")
POOL_ID = RegexValidator(rf"\A{ids.SHAPES['pool']}\Z", "A pool id looks like EUR-USDT.")
# Ids hold no whitespace; a prefix as short as the search box allows, so
# the range scan it asks for stays narrow.
ID_PREFIX = RegexValidator(
    rf"\A\S{{{ids.MIN_PREFIX},255}}\Z",
    f"Paste {ids.MIN_PREFIX} or more characters of an id, without spaces.",
)


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


def id_prefix_filter(method):
    """Rows with an id starting with the value (case-sensitive, ``_`` and ``%``
    literal: Django escapes them in ``startswith``)."""
    return filters.CharFilter(
        label="Id starts with",
        method=method,
        validators=[ID_PREFIX],
        widget=forms.TextInput(attrs={"placeholder": "pt_live_…", "spellcheck": "false"}),
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
