"""The query parameters of delivery health."""

from datetime import UTC, timedelta

from django import forms
from django.utils import timezone

from lib.filters import PARTNER_ID

# A moment a little ahead of the server's clock is a clock difference, not
# a question about the future.
CLOCK_SKEW = timedelta(minutes=5)


class UTCDateTimeField(forms.DateTimeField):
    """A moment in UTC: RFC 3339 (``2026-11-20T17:00:00Z``, any offset) or what a
    ``datetime-local`` input sends (``2026-11-20T17:00``), read as UTC."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"})

    def to_python(self, value):
        moment = super().to_python(value)
        return moment.astimezone(UTC) if moment else moment


def not_in_the_future(moment):
    if moment and moment > timezone.now() + CLOCK_SKEW:
        raise forms.ValidationError("That is in the future: no delivery has been tried then.")
    return moment


class HealthForm(forms.Form):
    """``/deliveries/?partner=…&at=…``: one partner or all, the windows ending at ``at`` (now)."""

    partner = forms.CharField(required=False, validators=[PARTNER_ID])
    at = UTCDateTimeField(required=False, label="Windows end at (UTC)")

    def clean_at(self):
        return not_in_the_future(self.cleaned_data["at"])
