from django import forms


class ConfirmForm(forms.Form):
    """The confirm step of every guarded action."""

    reason = forms.CharField(
        max_length=1000,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Ticket number and why"}),
        error_messages={
            "required": "A reason is required: it goes on the timeline and in the audit log."
        },
    )
    # Made when the page is drawn: the same key twice is the same request.
    key = forms.RegexField(regex=r"\A[A-Za-z0-9_-]{16,64}\Z", widget=forms.HiddenInput)
    # What the record looked like when the page was drawn.
    drawn = forms.CharField(max_length=300, widget=forms.HiddenInput)
