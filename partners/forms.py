from django import forms

from . import services
from .models import Entitlement, Mode, Profile
from .services import OVERLAPS

REASON = {
    "max_length": 1000,
    "strip": True,
    "error_messages": {"required": "A reason is required: it goes in the audit log."},
}
OVERLAP_LABELS = {"now": "now", "1h": "in 1 hour", "24h": "in 24 hours", "7d": "in 7 days"}


def reason_field():
    return forms.CharField(
        **REASON, widget=forms.TextInput(attrs={"placeholder": "Ticket number and why"})
    )


class ReasonForm(forms.Form):
    reason = reason_field()


class PartnerForm(forms.Form):
    partner_id = forms.RegexField(
        regex=services.PARTNER_ID,
        label="Partner id",
        error_messages={"invalid": "ptn_ and 1-40 of a-z, 0-9 and _."},
    )
    name = forms.CharField(max_length=200, required=False)
    mode = forms.ChoiceField(choices=Mode.choices, help_text="Test keys for test, live for live.")
    tier = forms.ChoiceField(choices=Profile.Tier.choices, initial=Profile.Tier.STANDARD)
    verified = forms.BooleanField(required=False, help_text="Live keys need a verified partner.")
    reason = reason_field()


class EditForm(PartnerForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.fields["partner_id"]


class StatusForm(ReasonForm):
    status = forms.ChoiceField(choices=Profile.Status.choices)


class EntitlementForm(ReasonForm):
    pool_id = forms.RegexField(
        regex=services.POOL_ID,
        label="Pool",
        error_messages={"invalid": "A pool id looks like EUR-USDT."},
    )
    side = forms.ChoiceField(choices=Entitlement.Side.choices)
    max_per_quote = forms.DecimalField(
        required=False, min_value=0.01, max_digits=20, decimal_places=2
    )
    max_per_day = forms.DecimalField(
        required=False, min_value=0.01, max_digits=20, decimal_places=2
    )
    remove = forms.BooleanField(required=False)


class EndpointForm(ReasonForm):
    url = forms.CharField(max_length=500, label="Webhook URL")


class NonceForm(ReasonForm):
    """A form whose every render carries a one-time token: sent twice, done once."""

    nonce = forms.CharField(max_length=64, widget=forms.HiddenInput)


class OverlapForm(NonceForm):
    overlap = forms.ChoiceField(choices=[(k, OVERLAP_LABELS[k]) for k in OVERLAPS], initial="24h")
