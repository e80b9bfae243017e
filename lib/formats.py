"""How the panel writes times, money and durations: the same text on a page,
in a CSV, in JSON and in the support-safe summary."""

from datetime import UTC, datetime


def rfc3339(moment):
    """``2026-06-28T20:15:03Z``: the contract's own time format, always UTC; "" for None."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def datetime_attr(moment):
    """A ``<time datetime>`` value: what ``{{ moment|date:"c" }}`` writes
    (ISO 8601 in UTC, ``+00:00``), made once in Python for a table's rows."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat()


def rfc3339_or_none(moment):
    """``rfc3339`` for JSON, where a missing time is ``null``."""
    return rfc3339(moment) or None


def utc_text(moment, missing="an unknown time", *, zone=True):
    """``2026-06-28 20:15:03 UTC``: a time as a person reads it (``zone=False``
    drops " UTC" where the page already says its times are UTC)."""
    if moment is None:
        return missing
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}" + (" UTC" if zone else "")


def amount(value):
    """A decimal as the contract writes it: plain digits, at least two decimals.

    The columns keep 18 decimal places; ``Decimal("100.000000000000000000")``
    reads ``100.00``, ``0.000120000`` reads ``0.00012``. Never an exponent.
    """
    if value is None:
        return ""
    text = format(value, "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def money(value, currency):
    """``100.00 EUR``; "" when there is no amount."""
    return "" if value is None else f"{amount(value)} {currency}"


def amount_json(value, currency):
    """The contract's amount object, or None."""
    if value is None:
        return None
    return {"value": amount(value), "currency": currency}


def duration(delta, *, smallest="s"):
    """A timedelta as "14 s", "3 min 5 s", "2 h 4 min", "3 days 2 h".

    ``smallest="min"`` drops the seconds ("3 min"), for ages in a work queue
    where seconds are noise.
    """
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    minutes, seconds = divmod(seconds, 60)
    if smallest == "s" and minutes == 0:
        return f"{sign}{seconds} s"
    if minutes < 60:
        return f"{sign}{minutes} min" + (f" {seconds} s" if smallest == "s" else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{sign}{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{sign}{days} days {hours} h"


def ago(moment, now=None):
    """``3 min ago``, ``2 h 4 min ago``; ``in 5 min`` for a time still to come."""
    delta = (now or datetime.now(UTC)) - moment
    if delta.total_seconds() < 0:
        return f"in {duration(-delta, smallest='min')}"
    return f"{duration(delta, smallest='min')} ago"


def percent(value):
    """``99.5 %`` (one decimal, never rounded up to 100 % while anything failed);
    "–" for None, where there was nothing to count."""
    if value is None:
        return "–"
    text = f"{value:.1f}"
    if text == "100.0" and value < 100:
        text = "99.9"
    return f"{text} %"


def milliseconds(value):
    """``1,234 ms``, rounded to the millisecond; "–" for None (no answer timed)."""
    if value is None:
        return "–"
    return f"{round(value):,} ms"
