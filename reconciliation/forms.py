"""The confirm step of resolving or ignoring an exception."""

from django import forms

from actions.forms import ConfirmForm

from .models import Resolution


class WorkForm(ConfirmForm):
    outcome = forms.ChoiceField(
        choices=[
            (Resolution.State.RESOLVED, "Resolve: it was fixed or explained"),
            (Resolution.State.IGNORED, "Ignore: not a problem worth working"),
        ],
        widget=forms.RadioSelect,
        initial=Resolution.State.RESOLVED,
    )
