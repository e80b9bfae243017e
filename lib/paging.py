"""Keyset pagination on ``(time, id)``, newest first (or oldest first), never a COUNT(*).

A page link carries an opaque ``after`` cursor: the ``(time, id)`` of the
last row shown, signed with the list's name so a hand-edited or foreign
cursor is refused instead of silently showing the wrong rows.
"""

from datetime import datetime

from django import forms
from django.core import signing
from django.db.models import Q

PER_PAGE = 50
MAX_PER_PAGE = 200


def _signer(listing):
    # The salt predates lib/: kept, so page links already shared still work.
    return signing.Signer(salt=f"browse.cursor.{listing.name}")


def make_cursor(listing, row):
    moment = getattr(row, listing.time_field)
    return _signer(listing).sign_object([moment.isoformat(), row.pk])


def read_cursor(listing, token):
    """Return ``(time, id)``; raise ``ValueError`` for anything we did not sign."""
    try:
        moment, pk = _signer(listing).unsign_object(token)
        return datetime.fromisoformat(moment), int(pk)
    except (signing.BadSignature, TypeError, ValueError) as exc:
        raise ValueError("bad cursor") from exc


class PageForm(forms.Form):
    """The query parameters that are not filters: where to start, how many, which format."""

    after = forms.CharField(required=False)
    per_page = forms.IntegerField(required=False, min_value=1)
    format = forms.ChoiceField(required=False, choices=[("", "page"), ("csv", "CSV")])

    def __init__(self, data, *, listing):
        super().__init__(data)
        self.listing = listing

    def clean_after(self):
        token = self.cleaned_data["after"]
        if not token:
            return None
        try:
            return read_cursor(self.listing, token)
        except ValueError:
            raise forms.ValidationError(
                "That page link is broken or out of date, so this is the newest page."
            ) from None

    def clean_per_page(self):
        return min(self.cleaned_data["per_page"] or PER_PAGE, MAX_PER_PAGE)


def keyset_page(queryset, time_field, after, size, *, oldest_first=False):
    """One page newest first (or oldest first), and whether another page follows.

    Fetches ``size + 1`` rows: the extra one only says there is a next page.
    The leading ``time <= t`` (``>=`` oldest first) lets the ``(time, id)``
    index start its scan at the cursor; the OR picks up rows sharing that
    exact time.
    """
    if oldest_first:
        ordered, past, upto = queryset.order_by(time_field, "id"), "gt", "gte"
    else:
        ordered, past, upto = queryset.order_by(f"-{time_field}", "-id"), "lt", "lte"
    if after is not None:
        moment, pk = after
        ordered = ordered.filter(
            Q(**{f"{time_field}__{past}": moment}) | Q(**{time_field: moment, f"id__{past}": pk}),
            **{f"{time_field}__{upto}": moment},
        )
    rows = list(ordered[: size + 1])
    return rows[:size], len(rows) > size
