"""The query parameters of delivery health and of a recovery (the confirm step
itself is ``actions.forms.ConfirmForm``)."""

from datetime import UTC, timedelta

from django import forms
from django.utils import timezone

from lib.filters import PARTNER_ID
from lib.formats import rfc3339

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


class RecoverForm(forms.Form):
    """Which partner's failed deliveries to replay: those failing since ``since``
    (and before ``until``)."""

    partner = forms.CharField(validators=[PARTNER_ID])
    since = UTCDateTimeField(
        label="Failing since (UTC)",
        error_messages={"required": "Since when? A recovery needs a start time."},
    )
    until = UTCDateTimeField(required=False, label="and before (UTC, optional)")

    def clean_since(self):
        return not_in_the_future(self.cleaned_data["since"])

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and until <= since:
            self.add_error("until", "“Before” must be later than “since”.")
        return cleaned

    def params(self):
        """The choice as query parameters (RFC 3339 times): links, hidden fields, the run."""
        data = self.cleaned_data
        params = {"partner": data["partner"], "since": rfc3339(data["since"])}
        if data.get("until"):
            params["until"] = rfc3339(data["until"])
        return params
