"""The kinds of reconciliation exception, and the one support-safe line each reads as.

A line names the public ids, amounts, statuses and times the contract names
and nothing else (no route, venue, provider or treasury detail is ever
stored, so none can be written).
"""

from lib.formats import duration, money, utc_text

SETTLED_WITHOUT_SETTLEMENT = "settled_without_settlement"
SETTLEMENT_UNKNOWN_TRADE = "settlement_unknown_trade"
SETTLEMENT_TRADE_NOT_SETTLED = "settlement_trade_not_settled"
AMOUNT_MISMATCH = "settlement_amount_mismatch"
DUPLICATE_SETTLEMENT = "duplicate_settlement"
RETURNED_WITHOUT_RETURN = "returned_without_return"
RETURN_WITHOUT_RETURNED = "return_without_returned"
FEE_WITHOUT_TRADE = "fee_without_trade"
SETTLED_WITHOUT_FEE = "settled_without_fee"
RESERVED_PAST_SLA = "reserved_past_sla"

# kind -> short title (the filter, the CSV, the JSON); in the order the page lists them.
KINDS = {
    SETTLED_WITHOUT_SETTLEMENT: "Settled, no settlement entry",
    SETTLEMENT_UNKNOWN_TRADE: "Settlement for an unknown trade",
    SETTLEMENT_TRADE_NOT_SETTLED: "Settlement for a trade not settled",
    AMOUNT_MISMATCH: "Settlement amount or currency differs",
    DUPLICATE_SETTLEMENT: "Duplicate settlement posting",
    RETURNED_WITHOUT_RETURN: "Returned, no return entry",
    RETURN_WITHOUT_RETURNED: "Return or reversal without a returned trade",
    FEE_WITHOUT_TRADE: "Fee for an unknown trade",
    SETTLED_WITHOUT_FEE: "Settled, no fee entry",
    RESERVED_PAST_SLA: "Reserved past its pool SLA",
}


def _money(facts, which):
    return money(facts.get(f"{which}Value"), facts.get(f"{which}Currency") or "") or "no amount"


def describe(f):
    """The one line saying what is wrong, from an exception's facts (``Found.facts``)."""
    kind, trade, entry = f["kind"], f.get("transactId"), f.get("ledgerId")
    at = utc_text(f.get("at"))
    candidate = f.get("candidate")
    if kind == SETTLED_WITHOUT_SETTLEMENT:
        line = (
            f"{trade} is {f['status']} (since {at}) but no settlement entry was posted for it; "
            f"expected a credit of {_money(f, 'expected')}."
        )
        if candidate:
            line += f" {candidate} has that amount and time but names an unknown trade."
        return line
    if kind == SETTLEMENT_UNKNOWN_TRADE:
        line = (
            f"Settlement entry {entry} ({_money(f, 'found')}, posted {at}) names trade "
            f"{trade}, which the panel has never seen."
        )
        if candidate:
            line += f" By amount and time it matches {candidate}, which has no settlement entry."
        return line
    if kind == SETTLEMENT_TRADE_NOT_SETTLED:
        return (
            f"Settlement entry {entry} ({_money(f, 'found')}, posted {at}) credits {trade}, "
            f"which is {f['status']}: only a settled trade is settled in the ledger."
        )
    if kind == AMOUNT_MISMATCH:
        return (
            f"Settlement entry {entry} for {trade} is {_money(f, 'found')}; "
            f"the trade delivers {_money(f, 'expected')}."
        )
    if kind == DUPLICATE_SETTLEMENT:
        return (
            f"{trade} has {f['count']} settlement entries ({', '.join(f['ids'])}): "
            "a duplicate posting."
        )
    if kind == RETURNED_WITHOUT_RETURN:
        return (
            f"{trade} was returned at {at} but no return entry was posted; "
            f"expected a debit of {_money(f, 'expected')}."
        )
    if kind == RETURN_WITHOUT_RETURNED:
        which = f.get("entryType", "return")
        state = f"which is {f['status']}, not returned" if f.get("status") else "an unknown trade"
        return (
            f"{which.capitalize()} entry {entry} ({_money(f, 'found')}, posted {at}) "
            f"names {trade}, {state}."
        )
    if kind == FEE_WITHOUT_TRADE:
        return (
            f"Fee entry {entry} ({_money(f, 'found')}, posted {at}) names trade {trade}, "
            "which the panel has never seen."
        )
    if kind == SETTLED_WITHOUT_FEE:
        return (
            f"{trade} is {f['status']} with a fee of {f['feeBps']} bps, "
            "but no fee entry was posted for it."
        )
    if kind == RESERVED_PAST_SLA:
        return (
            f"{trade} is still reserved (since {at}), {duration(f['overdue'], smallest='min')} "
            f"past its pool's {f['slaMinutes']} min SLA at the close."
        )
    raise ValueError(f"unknown exception kind {kind!r}")
