"""CSV export of a whole filtered list, streamed row by row."""

import csv
from datetime import datetime
from decimal import Decimal

from django.http import StreamingHttpResponse
from django.utils import timezone

from lib.formats import amount, rfc3339

# A spreadsheet runs a cell that starts with one of these as a formula.
# Partner order ids and idempotency keys are partner-chosen text, so they can.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return amount(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _Echo:
    """The file-like object csv.writer wants; hands each line back instead of storing it."""

    def write(self, line):
        return line


def csv_response(listing, queryset):
    """Every row of ``queryset`` (already filtered) in the list's order, as a download."""
    headers = [header for header, _ in listing.csv_columns]
    lookups = [lookup for _, lookup in listing.csv_columns]
    if listing.oldest_first:
        ordering = (listing.time_field, "id")
    else:
        ordering = (f"-{listing.time_field}", "-id")
    rows = queryset.order_by(*ordering).values_list(*lookups).iterator(chunk_size=2000)
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow(headers)
        for row in rows:
            yield writer.writerow([cell(value) for value in row])

    filename = f"{listing.name}-{timezone.now():%Y-%m-%d}.csv"
    return StreamingHttpResponse(
        lines(),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
