"""The forms of the stuck queue (the confirm step itself is ``actions.forms.ConfirmForm``)."""

from django import forms

from accounts.permissions import Action

from .services import SLA_MINUTES

# The form's word -> the guarded action it asks for.
BULK_ACTIONS = {"repoll": Action.BULK_REPOLL, "replay": Action.BULK_REPLAY}


class BulkForm(forms.Form):
    """Which bulk action; the set itself comes from the queue's filters."""

    action = forms.ChoiceField(
        choices=[("repoll", "Re-poll all"), ("replay", "Replay latest state to partners")]
    )


class ClaimForm(forms.Form):
    reason = forms.CharField(max_length=200, required=False, strip=True)


class PoolSlaForm(forms.Form):
    minutes = forms.IntegerField(
        min_value=SLA_MINUTES[0],
        max_value=SLA_MINUTES[1],
        label="SLA (minutes)",
        help_text="A trade reserved longer than this joins the stuck queue (1 to 1440).",
    )
    reason = forms.CharField(
        max_length=1000,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Ticket number and why"}),
        error_messages={"required": "A reason is required: it goes in the audit log."},
    )
