"""Filter builders the lists share; each list's FilterSet lives with its pages.

Every query parameter a list acts on is validated by a FilterSet or by
``paging.PageForm``; a view only echoes the raw query back into its links.
"""

import copy

import django_filters as filters
from django import forms
from django.core.validators import RegexValidator
from django.http import QueryDict
from django_filters.widgets import DateRangeWidget

from records import ids


class FilterSet(filters.FilterSet):
    """django-filter's FilterSet, made for one page load. Every list's filters
    derive from it.

    django-filter makes a FilterSet's filters, then a form class from their
    fields, then the form, deep-copying each on the way, and the list's
    queryset is built before any of it: a third of a millisecond a page on
    the stuck queue, the same every time (issue 14). Here:

    - the form class is made once per FilterSet class: its fields follow
      from the filters' declarations alone (none here reads the request or
      the data; a filter that did would have to say so by overriding
      ``get_form_class``). Each form still gets its own copy of the fields;
    - the filters are copied, not deep-copied: a copy gets its own
      ``parent``, ``model`` and bound ``method``, and the parts it shares
      with the class's (widgets, validators, choices) are never changed per
      request;
    - ``queryset`` may be a function of no arguments, called the first time
      ``qs`` is read: a page read another way (``Listing.page``) never
      builds it.
    """

    def __init__(self, data=None, queryset=None, *, request=None, prefix=None):
        self._make_queryset = queryset if callable(queryset) else None
        if queryset is None:
            queryset = self._meta.model._default_manager.all()
        self.is_bound = data is not None
        self.data = data or QueryDict()
        self.request = request
        self.form_prefix = prefix
        self.filters = {name: copy.copy(each) for name, each in self.base_filters.items()}
        for each in self.filters.values():
            each.parent = self
            if each.method is not None:
                each.method = each.method  # a method bound to this copy, not the class's filter
        if self._make_queryset is None:
            self._set_queryset(queryset)

    def _set_queryset(self, queryset):
        self.queryset = queryset
        for each in self.filters.values():
            each.model = queryset.model

    def _made_queryset(self):
        if self._make_queryset is not None:
            make, self._make_queryset = self._make_queryset, None
            self._set_queryset(make())

    @property
    def qs(self):
        self._made_queryset()
        return super().qs

    def get_form_class(self):
        made = type(self).__dict__.get("_form_class")
        if made is None:
            # The labels django-filter derives for the fields read the model:
            # the first form class of a process is made with it.
            self._made_queryset()
            made = super().get_form_class()
            type(self)._form_class = made  # this class's own, not a subclass's
        return made


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
