"""What the simulated network is made of: its partners, pools, failure codes,
the named scenarios, and how its ids look.

These tables are the only fixed part of a stream; every choice made from
them comes from the caller's ``random.Random`` (``sandbox.network``).
"""

import string
from dataclasses import dataclass
from decimal import Decimal

FAILURE_CODES = (
    "insufficient_liquidity",
    "compliance_rejected",
    "destination_invalid",
    "network_congestion",
    "amount_limit_exceeded",
)

ALPHANUMERIC = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Partner:
    partner_id: str
    livemode: bool
    fee_bps: int
    reference_formats: tuple[str, ...]  # str.format() patterns taking n
    weight: int  # share of random orders
    flaky: float  # how often a delivery to the partner's endpoint fails

    @property
    def mode(self):
        return "live" if self.livemode else "test"


@dataclass(frozen=True)
class Pool:
    pool_id: str  # FIAT-COIN
    rate: Decimal  # coin per unit of fiat
    typical_amount: int  # in fiat
    networks: tuple[str, ...]

    @property
    def fiat(self):
        return self.pool_id.split("-")[0]

    @property
    def coin(self):
        return self.pool_id.split("-")[1]


PARTNERS = (
    Partner("ptn_acme", True, 30, ("order_{n}",), 25, 0.2),
    Partner("ptn_globex", True, 25, ("order_{n}", "mobile_checkout_{n}"), 20, 0.3),
    Partner("ptn_initech", True, 40, ("INV-2026-{n:06d}",), 12, 0.1),
    Partner("ptn_umbrella", True, 35, ("umb/{n}/checkout",), 10, 0.6),
    Partner("ptn_hooli", True, 20, ("hooli_web_{n}", "hooli_app_{n}"), 15, 0.35),
    Partner("ptn_piedpiper", False, 30, ("pp-test-{n}",), 10, 0.5),
    Partner("ptn_soylent_sandbox", False, 50, ("order_{n}",), 8, 0.4),
)
ACME = PARTNERS[0]

POOLS = (
    Pool("EUR-USDT", Decimal("1.0731"), 250, ("tron", "ethereum", "polygon", "solana")),
    Pool("USD-USDC", Decimal("0.9998"), 300, ("ethereum", "polygon", "solana", "base")),
    Pool("GBP-USDT", Decimal("1.2664"), 200, ("tron", "ethereum")),
    Pool("BRL-USDT", Decimal("0.1742"), 1500, ("tron", "polygon", "solana")),
    Pool("MXN-USDC", Decimal("0.0583"), 4000, ("polygon", "solana", "base")),
)


# byte -> an alphanumeric character, so random bytes make an id in one call.
_TOKEN_TABLE = bytes(ord(ALPHANUMERIC[byte % len(ALPHANUMERIC)]) for byte in range(256))


def token(rng, length):
    """``length`` random alphanumeric characters: the tail of every id the network makes."""
    return rng.randbytes(length).translate(_TOKEN_TABLE).decode()


# name -> (description, Plan fields); each is one order on ptn_acme live.
SCENARIO_PLANS = {
    "scn_settled_ok": (
        "Settled cleanly: settlement and fee posted, every delivery succeeded first time.",
        {"outcome": "settled"},
    ),
    "scn_settled_no_ledger": (
        "Settled, but no settlement entry was ever posted (the fee was).",
        {"outcome": "settled", "ledger": "missing"},
    ),
    "scn_ledger_without_settle": (
        "The trade failed, yet a settlement credit was posted for it.",
        {"outcome": "failed", "ledger": "orphan_settlement"},
    ),
    "scn_amount_mismatch": (
        "Settled; the settlement credit differs from the trade's deliverAmount.",
        {"outcome": "settled", "ledger": "mismatch"},
    ),
    "scn_returned_no_reversal": (
        "Settled then returned; the return entry was posted, the fee reversal never.",
        {"outcome": "returned", "ledger": "no_reversal"},
    ),
    "scn_returned_with_reversal": (
        "Settled then returned, with both the return and the fee reversal posted.",
        {"outcome": "returned"},
    ),
    "scn_stuck_reserved": (
        "Reserved and never resolved: past the SLA by the end of the stream.",
        {"outcome": "stuck"},
    ),
    "scn_illegal_move": (
        "Failed, then a trade.settled for the same trade: an illegal move.",
        {"outcome": "failed", "settled_after_failed": True},
    ),
    "scn_late_reserved": (
        "Settled; trade.settled was delivered before trade.reserved.",
        {"outcome": "settled", "reserved_late": True},
    ),
    "scn_partner_never_told": (
        "Settled; every delivery of trade.settled failed, only trade.reserved got through.",
        {"outcome": "settled", "partner_never_told": True},
    ),
    "scn_expired_reask": (
        "The first quote expired, the user asked again and accepted the second.",
        {"outcome": "settled", "expired_quotes": 1},
    ),
    "scn_unavailable": (
        "A single quote.unavailable answer: no firm quote, no trade.",
        {"outcome": "unavailable"},
    ),
    "scn_idempotent_retry": (
        "Transact called twice with one idempotency key: two trade.reserved, one trade.",
        {"outcome": "settled", "idempotent_retry": True},
    ),
    "scn_ledger_first": (
        "Settled; its ledger.posted events were delivered before any trade event.",
        {"outcome": "settled", "ledger_first": True},
    ),
}
SCENARIOS = {name: description for name, (description, _) in SCENARIO_PLANS.items()}


# The reconciliation exceptions ``--exceptions`` adds, one order each (on
# ptn_acme live, free of random faults), its partner order id
# ``recon_<kind>``: kind -> (description, Plan fields). The kinds are those
# of the daily close (``reconciliation.kinds``; the sandbox never imports it).
RECON_PLANS = {
    "settled_without_settlement": (
        "Settled; no settlement entry was posted (the fee was).",
        {"outcome": "settled", "ledger": "missing"},
    ),
    "settlement_unknown_trade": (
        "Settled; its settlement was posted under a transactId 0Pools never sent a trade for.",
        {"outcome": "settled", "ledger": "wrong_id_settlement"},
    ),
    "settlement_trade_not_settled": (
        "Failed, yet a settlement credit was posted for it.",
        {"outcome": "failed", "ledger": "orphan_settlement"},
    ),
    "settlement_amount_mismatch": (
        "Settled; the settlement is in the amount's currency, not the delivered one.",
        {"outcome": "settled", "ledger": "currency_mismatch"},
    ),
    "duplicate_settlement": (
        "Settled; the settlement was posted twice, under two ledger ids.",
        {"outcome": "settled", "ledger": "duplicate_settlement"},
    ),
    "returned_without_return": (
        "Settled then returned; the fee reversal was posted, the return entry never.",
        {"outcome": "returned", "ledger": "no_return"},
    ),
    "return_without_returned": (
        "Settled and never returned, yet a return entry was posted for it.",
        {"outcome": "settled", "ledger": "orphan_return"},
    ),
    "fee_without_trade": (
        "Settled; a second fee was posted under a transactId 0Pools never sent a trade for.",
        {"outcome": "settled", "ledger": "orphan_fee"},
    ),
    "settled_without_fee": (
        "Settled with a fee rate; the settlement was posted, the fee never.",
        {"outcome": "settled", "ledger": "no_fee"},
    ),
    "reserved_past_sla": (
        "Reserved and never resolved: past the pool SLA within the hour.",
        {"outcome": "stuck"},
    ),
}
