"""How values read on a list page and in its CSV: the same text in both."""

from datetime import UTC


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


def rfc3339(moment):
    """``2026-06-28T20:15:03Z``: the contract's own time format, always UTC."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
