"""What happens to each order: the named scenarios first, then random orders
with the faults real traffic has, each decided before the order is played.

``Planner.schedule`` draws from the network's one ``random.Random``, lazily:
``sandbox.network`` plays each order before the next is planned, and the
order of those draws is part of what makes a seed give the same bytes.
"""

import random
from collections import deque
from dataclasses import dataclass, field

from sandbox.catalogue import ACME, PARTNERS, RECON_PLANS, SCENARIO_PLANS, Partner

SCENARIO_SPACING = 300  # seconds between the starts of two named scenarios
ORDER_SLOT = 30  # each random order starts somewhere in its own slot
# A random order is only left stuck in reserved when the stream runs on for
# this long after it starts, so every stuck trade is past the 15-minute SLA.
STUCK_MARGIN = 3600

# Random orders only.
OUTCOME_WEIGHTS = {
    "settled": 68,
    "failed": 7,
    "released": 6,
    "returned": 5,
    "stuck": 3,
    "abandoned": 6,  # the last quote expired; no trade
    "unavailable": 5,  # only an unavailable answer; no trade
}
REUSE_RATE = 0.02  # partner order id another partner already used


@dataclass
class Plan:
    """What happens to one partner order."""

    partner: Partner
    reference: str
    outcome: str  # a key of OUTCOME_WEIGHTS
    expired_quotes: int = 0  # quotes that expire before the accepted one
    unavailable_first: bool = False
    idempotent_retry: bool = False
    settled_after_failed: bool = False
    # ok, missing, mismatch, no_reversal, orphan_settlement; and for --exceptions:
    # wrong_id_settlement, currency_mismatch, duplicate_settlement, no_return,
    # orphan_return, orphan_fee, no_fee
    ledger: str = "ok"
    ledger_first: bool = False
    reserved_late: bool = False
    partner_never_told: bool = False
    noisy: bool = True  # random duplicates, late deliveries, failed attempts


@dataclass
class Planner:
    rng: random.Random  # the network's one source of choices
    counters: dict = field(default_factory=dict)  # partner id -> last order number
    references: dict = field(default_factory=dict)  # partner id -> order ids used
    recent: deque = field(default_factory=lambda: deque(maxlen=50))  # (partner id, order id)

    def schedule(self, orders, exceptions=()):
        """(start offset, plan) of every order, in start order: the named scenarios,
        one order per reconciliation exception kind in ``exceptions``, the random ones."""
        named = list(SCENARIO_PLANS.items())
        named += [(f"recon_{kind}", RECON_PLANS[kind]) for kind in exceptions]
        self.references[ACME.partner_id] = {name for name, _ in named}
        for k, (name, (_, knobs)) in enumerate(named):
            yield k * SCENARIO_SPACING, Plan(ACME, name, noisy=False, **knobs)
        first = len(named) * SCENARIO_SPACING
        end = first + orders * ORDER_SLOT
        for i in range(orders):
            t0 = first + i * ORDER_SLOT + self.rng.randrange(ORDER_SLOT)
            yield t0, self.random_plan(may_stick=t0 + STUCK_MARGIN <= end)

    def random_plan(self, may_stick):
        rng = self.rng
        partner = rng.choices(PARTNERS, weights=[p.weight for p in PARTNERS])[0]
        outcome = rng.choices(tuple(OUTCOME_WEIGHTS), weights=tuple(OUTCOME_WEIGHTS.values()))[0]
        if outcome == "stuck" and not may_stick:
            outcome = "settled"
        trades = outcome not in ("abandoned", "unavailable")
        settles = outcome in ("settled", "returned")
        ledger = self.ledger_fault(outcome)
        return Plan(
            partner,
            self.reference(partner),
            outcome,
            expired_quotes=rng.choices((0, 1, 2), weights=(85, 12, 3))[0],
            unavailable_first=rng.random() < 0.04,
            idempotent_retry=trades and rng.random() < 0.04,
            settled_after_failed=outcome == "failed" and rng.random() < 0.05,
            ledger=ledger,
            ledger_first=(settles or ledger == "orphan_settlement") and rng.random() < 0.03,
            reserved_late=settles and rng.random() < 0.03,
            partner_never_told=trades and outcome != "stuck" and rng.random() < 0.03,
        )

    def ledger_fault(self, outcome):
        roll = self.rng.random()
        if outcome == "settled" and roll < 0.02:
            return "missing"
        if outcome == "settled" and roll < 0.04:
            return "mismatch"
        if outcome == "returned" and roll < 0.25:
            return "no_reversal"
        if outcome == "failed" and roll < 0.03:
            return "orphan_settlement"
        return "ok"

    def reference(self, partner):
        """A fresh order id for the partner; now and then one another partner used."""
        rng = self.rng
        pid = partner.partner_id
        used = self.references.setdefault(pid, set())
        reference = None
        if self.recent and rng.random() < REUSE_RATE:
            other, candidate = rng.choice(self.recent)
            if other != pid and candidate not in used:
                reference = candidate
        while reference is None or reference in used:
            self.counters[pid] = self.counters.get(pid, rng.randint(1000, 9000)) + rng.randint(1, 7)
            reference = rng.choice(partner.reference_formats).format(n=self.counters[pid])
        used.add(reference)
        self.recent.append((pid, reference))
        return reference
