"""What the runs list (``/runs/``) can be narrowed by."""

import django_filters as filters
from django import forms

from accounts.permissions import Action
from lib.filters import FilterSet, date_filter

from .models import Run

# The actions a run carries out; claims and settings changes are not runs.
RUN_ACTIONS = [
    (action.value, action.label)
    for action in (
        Action.TRADE_REPOLL,
        Action.EVENT_REPLAY,
        Action.BULK_REPOLL,
        Action.BULK_REPLAY,
        Action.BULK_RECOVER,
    )
]

MINE, EVERYONE = "mine", "all"
# What the audit log calls the beat's runs; a run with no user is one.
SCHEDULE = "schedule"


class RunFilter(FilterSet):
    """Your own runs unless asked otherwise: ``who=all`` for everyone's, or a username.

    A username is the narrower question, so it wins over ``who``.
    """

    who = filters.ChoiceFilter(
        label="Whose",
        choices=[(MINE, "my runs"), (EVERYONE, "everyone's")],
        empty_label=None,
        method="filter_who",
    )
    user = filters.CharFilter(
        label="User",
        method="filter_user",
        max_length=150,
        widget=forms.TextInput(attrs={"placeholder": "username or schedule"}),
    )
    action = filters.ChoiceFilter(choices=RUN_ACTIONS, empty_label="any action")
    state = filters.ChoiceFilter(choices=Run.State.choices, empty_label="any state")
    date = date_filter("created_at", "Asked")

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        asked = self.form.cleaned_data
        if not asked.get("user") and asked.get("who", MINE) in ("", MINE):
            # No value at all (the first visit) is "mine" too: django-filter
            # calls a filter's method only for a value.
            queryset = queryset.filter(user=self.request.user)
        return queryset

    def filter_who(self, queryset, name, value):
        return queryset  # "mine" is applied in filter_queryset, "all" narrows nothing

    def filter_user(self, queryset, name, value):
        if value.lower() == SCHEDULE:
            return queryset.filter(user__isnull=True)
        return queryset.filter(user__username__iexact=value)

    def whose(self):
        """The page's answer to "whose runs are these?": (label, is it everyone's)."""
        asked = self.form.cleaned_data
        if asked.get("user"):
            name = asked["user"]
            return ("the schedule's" if name.lower() == SCHEDULE else f"{name}'s"), False
        if asked.get("who") == EVERYONE:
            return "everyone's", True
        return "your", False
