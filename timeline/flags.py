"""The consistency checks of an order: each ``Flag`` names something a person
should look at (the ledger and the trade disagree, the partner was never
told, a status move was late or illegal, a pending trade is past its SLA).
"""

from dataclasses import dataclass
from datetime import timedelta

from lib.formats import duration, money
from records import states
from records.models import DeliveryAttempt, LedgerEntry

# A status change not simply applied: the title of its flag, by outcome.
MOVE_TITLES = {
    states.LATE: "A late status move",
    states.ILLEGAL: "An illegal status move",
    states.OVERRIDE: "A status read overrode an illegal move",
}


@dataclass
class Flag:
    code: str
    title: str
    explanation: str

    def as_json(self):
        return {"code": self.code, "title": self.title, "explanation": self.explanation}


def consistency_flags(trades, changes, ledger, deliveries, events, now):
    flags = []
    event_type = {e.event_id: e.type for e in events}
    for trade in trades:
        tid = trade.transact_id
        entries = [e for e in ledger if e.transact_id == tid]
        settlements = [e for e in entries if e.entry_type == LedgerEntry.EntryType.SETTLEMENT]
        # A returned trade settled first: its settlement entry stays.
        if trade.status in (states.SETTLED, states.RETURNED) and not settlements:
            flags.append(
                Flag(
                    "settled_without_ledger",
                    "Settled without a settlement ledger entry",
                    f"{tid} is {trade.status} but the ledger has no settlement entry for it.",
                )
            )
        if settlements and trade.status not in (states.SETTLED, states.RETURNED):
            flags.append(
                Flag(
                    "ledger_without_settled",
                    "Ledger entry without a settled trade",
                    f"{settlements[0].ledger_id} posts a settlement for {tid}, "
                    f"which is {trade.status}.",
                )
            )
        expected = (trade.deliver_value, trade.deliver_currency)
        for entry in settlements:
            if (
                trade.deliver_value is not None
                and (entry.amount_value, entry.amount_currency) != expected
            ):
                flags.append(
                    Flag(
                        "amount_mismatch",
                        "Amount mismatch between trade and ledger",
                        f"{entry.ledger_id} posts "
                        f"{money(entry.amount_value, entry.amount_currency)}; "
                        f"{tid} delivers {money(*expected)}.",
                    )
                )
        if trade.status == states.RETURNED and not any(
            e.entry_type == LedgerEntry.EntryType.REVERSAL for e in entries
        ):
            flags.append(
                Flag(
                    "returned_without_reversal",
                    "Returned without a reversal",
                    f"{tid} was returned but the ledger has no reversal entry for it.",
                )
            )
        if trade.status == states.RESERVED and trade.reserved_at:
            age = now - trade.reserved_at
            if age > timedelta(minutes=trade.pool.sla_minutes):
                flags.append(
                    Flag(
                        "reserved_past_sla",
                        "Reserved past the pool SLA",
                        f"{tid} has been pending for {duration(age)}; "
                        f"{trade.pool.pool_id} settles within {trade.pool.sla_minutes} min.",
                    )
                )
        for change in changes:
            if change.trade_id == trade.pk and change.outcome != states.APPLIED:
                flags.append(
                    Flag(
                        f"{change.outcome}_move",
                        MOVE_TITLES[change.outcome],
                        f"{tid}: {change.note}.",
                    )
                )
        if trade.status in states.FINAL_STATUSES:
            told = [
                d
                for d in deliveries
                if d.outcome == DeliveryAttempt.Outcome.SUCCEEDED
                and event_type.get(d.event_id, "").startswith("trade.")
            ]
            last = max(told, key=lambda d: (d.attempted_at, d.pk), default=None)
            if last is None or event_type[last.event_id] != f"trade.{trade.status}":
                told_what = (
                    f"the last successful delivery was {event_type[last.event_id]}"
                    if last
                    else "no delivery of a trade event succeeded"
                )
                flags.append(
                    Flag(
                        "partner_not_told",
                        "Partner probably never told the final status",
                        f"{tid} is {trade.status}, but {told_what}.",
                    )
                )
    return flags
