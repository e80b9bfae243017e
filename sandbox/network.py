"""A simulated 0Pools network, for demos, load runs and tests.

``generate(orders, seed, start)`` plays partner orders through the lifecycle
of the contract (``shared/contract/0POOLS.md``) and yields event envelopes in
the order the network *delivers* them, which is not always the order it
created them in. The same arguments always give the same envelopes: every
choice comes from one ``random.Random(seed)`` and every time is an offset
from ``start``, never the wall clock.

The stream holds:

- the named ``SCENARIOS`` first, one order each, five minutes apart, on
  ``ptn_acme`` live and free of random faults; then ``orders`` random orders,
  one in each 30-second slot, on partners of both modes;
- quotes (firm, expired and asked again, unavailable), acceptances, each
  trade's status events, ledger entries, and the network's attempts to tell
  the partner about most trade events;
- the faults real traffic has: exact duplicates, late and out-of-order
  deliveries, ledger entries before their trade, missing and wrong ledger
  entries, trades stuck in ``reserved`` well past the SLA by the end of the
  stream, and illegal ``failed`` -> ``settled`` moves;
- internal execution detail the contract forbids, in every envelope, at
  varied depths, under the keys in ``FORBIDDEN_KEYS``. Every string in it
  contains one of ``FORBIDDEN_MARKERS`` and no contract value ever does, so
  a test can grep a whole database dump for leaks.

Ledger entries are in the delivered currency: a settlement credits the
trade's ``deliverAmount`` and its fee debits ``feeBps`` of it; a return debits
the delivered amount back out and its reversal credits the fee back.
"""

import heapq
import itertools
import random
import string
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

DEFAULT_START = datetime(2026, 11, 20, tzinfo=UTC)

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
DUPLICATE_RATE = 0.025  # an event delivered twice
LATE_RATE = 0.015  # an event delivered minutes to hours after it happened
NOTIFY_RATE = 0.9  # trade events the network tries to tell the partner about
RETRY_BACKOFF = (30, 120, 600, 3600)  # seconds before attempts 2, 3, 4, 5

FAILURE_CODES = (
    "insufficient_liquidity",
    "compliance_rejected",
    "destination_invalid",
    "network_congestion",
    "amount_limit_exceeded",
)

ALPHANUMERIC = string.ascii_letters + string.digits
CENT = Decimal("0.01")
RATE_STEP = Decimal("0.0001")


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


# --- internal detail the contract forbids -------------------------------------

FORBIDDEN_MARKERS = ("VENUE-", "ROUTE-", "PRV-", "TREASURY-", "MMTERMS-", "INTERNAL-")


# byte -> an alphanumeric character, so random bytes make an id in one call.
_TOKEN_TABLE = bytes(ord(ALPHANUMERIC[byte % len(ALPHANUMERIC)]) for byte in range(256))


def _token(rng, length):
    return rng.randbytes(length).translate(_TOKEN_TABLE).decode()


def _route(rng):
    return "ROUTE-" + rng.choice(("direct", "eu-otc-2", "tron-hot-1", "split-3", "latam-pix"))


def _connector(rng):
    return "PRV-connector-" + rng.choice(("sepa-1", "pix-2", "faster-payments", "spei"))


def _worker(rng):
    return f"INTERNAL-worker-{rng.randint(1, 24)}"


def _wallet(rng):
    return "TREASURY-" + _token(rng, 34)


# key -> a function making a value for it; every string made contains a marker.
_INTERNAL_FIELDS = {
    "venue": lambda rng: "VENUE-" + rng.choice(("binance-eu", "kraken-otc", "bitstamp", "b2c2")),
    "venueOrderId": lambda rng: "VENUE-ORD-" + _token(rng, 10),
    "venue_order_id": lambda rng: "VENUE-ORD-" + _token(rng, 10),
    "route": _route,
    "routeId": lambda rng: "ROUTE-" + _token(rng, 8),
    "provider": lambda rng: "PRV-" + rng.choice(("circle", "fireblocks", "bitgo", "railsr")),
    "providerId": lambda rng: "PRV-" + _token(rng, 12),
    "provider_id": lambda rng: "PRV-" + _token(rng, 12),
    "connector": _connector,
    "worker": _worker,
    "treasuryWallet": _wallet,
    "treasury_wallet": _wallet,
    "rebalanceLevel": lambda rng: f"TREASURY-rebalance-{rng.randint(5, 95)}pct",
    "treasury": lambda rng: {
        "balance": f"TREASURY-{rng.randint(10**5, 10**8)}.{rng.randint(0, 99):02d}",
        "wallet": _wallet(rng),
    },
    "mmTerms": lambda rng: {
        "maker": "MMTERMS-" + rng.choice(("wintermute", "gsr", "jump")),
        "markupBps": f"MMTERMS-{rng.randint(1, 40)}bps",
        "tier": "MMTERMS-" + rng.choice(("gold", "silver")),
    },
    "raw": lambda rng: {
        "providerRef": "PRV-" + _token(rng, 16),
        "fills": [
            {"px": f"PRV-{rng.random():.6f}", "qty": f"PRV-{rng.randint(1, 10**6)}"}
            for _ in range(rng.randint(1, 3))
        ],
        "venueTs": f"VENUE-ts-{rng.randint(10**12, 10**13)}",
    },
    "debug": lambda rng: {
        "trace": "INTERNAL-trace-" + _token(rng, 16),
        "host": f"INTERNAL-exec-{rng.randint(1, 9)}.eu-west",
        "hops": [
            {"connector": _connector(rng), "latencyMs": f"INTERNAL-{rng.randint(3, 900)}ms"}
            for _ in range(rng.randint(1, 2))
        ],
    },
    "_internal": lambda rng: {
        "worker": _worker(rng),
        "shard": f"INTERNAL-shard-{rng.randint(0, 15)}",
        "route": _route(rng),
    },
}
_INTERNAL_KEYS = tuple(_INTERNAL_FIELDS)
_NESTED_KEYS = {"balance", "wallet", "maker", "markupBps", "tier", "providerRef", "fills", "px"}
_NESTED_KEYS |= {"qty", "venueTs", "trace", "host", "hops", "latencyMs", "shard"}
FORBIDDEN_KEYS = frozenset(_INTERNAL_KEYS) | frozenset(_NESTED_KEYS)


def _add_internal(rng, target, count):
    for key in rng.sample(_INTERNAL_KEYS, count):
        target[key] = _INTERNAL_FIELDS[key](rng)


def add_internal_detail(rng, target, count=1):
    """Put ``count`` internal fields into the dict ``target`` (for the sandbox server)."""
    _add_internal(rng, target, count)


def _contaminate(rng, envelope):
    """Hide internal detail at varied depths, as upstream payloads do."""
    data = envelope["data"]
    _add_internal(rng, data, rng.randint(1, 3))
    if rng.random() < 0.6:
        _add_internal(rng, envelope, rng.randint(1, 2))
    for key in ("amount", "deliverAmount"):
        if key in data and rng.random() < 0.3:
            _add_internal(rng, data[key], 1)
    if "statusHistory" in data and rng.random() < 0.4:
        _add_internal(rng, rng.choice(data["statusHistory"]), 1)


# --- scenarios ------------------------------------------------------------------

# name -> (description, Plan fields); each is one order on ptn_acme live.
_SCENARIOS = {
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
SCENARIOS = {name: description for name, (description, _) in _SCENARIOS.items()}


# --- the simulation ---------------------------------------------------------------


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
    ledger: str = "ok"  # ok, missing, mismatch, no_reversal, orphan_settlement
    ledger_first: bool = False
    reserved_late: bool = False
    partner_never_told: bool = False
    noisy: bool = True  # random duplicates, late deliveries, failed attempts


@dataclass
class _Quote:
    quote_id: str
    request_id: str
    number: int  # 1 for the order's first quote
    created: int
    expires: int | None
    rate: Decimal | None  # None: unavailable
    spread_bps: int


@dataclass
class _Trade:
    transact_id: str
    quote: _Quote
    idempotency_key: str
    request_id: str
    deliver: Decimal
    fee: Decimal
    history: list[tuple[str, int]]
    failure_code: str | None = None


@dataclass
class _Sent:
    deliver: int  # seconds after start at which the network delivers it
    envelope: dict


@dataclass
class _Network:
    rng: random.Random
    start: datetime
    counters: dict = field(default_factory=dict)  # partner id -> last order number
    references: dict = field(default_factory=dict)  # partner id -> order ids used
    recent: deque = field(default_factory=lambda: deque(maxlen=50))  # (partner id, order id)
    times: dict = field(default_factory=dict)  # offset -> RFC 3339 text

    def iso(self, at):
        text = self.times.get(at)
        if text is None:
            text = (self.start + timedelta(seconds=at)).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.times[at] = text
        return text

    def token(self, length):
        return _token(self.rng, length)

    def envelope(self, event_type, at, livemode, data):
        envelope = {
            "id": "evt_" + self.token(20),
            "type": event_type,
            "createdAt": self.iso(at),
            "livemode": livemode,
            "data": data,
        }
        _contaminate(self.rng, envelope)
        return envelope

    def schedule(self, orders):
        """(start offset, plan) of every order, in start order."""
        self.references[ACME.partner_id] = set(_SCENARIOS)
        for k, (name, (_, knobs)) in enumerate(_SCENARIOS.items()):
            yield k * SCENARIO_SPACING, Plan(ACME, name, noisy=False, **knobs)
        first = len(_SCENARIOS) * SCENARIO_SPACING
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


class _Run:
    """One partner order played through the network."""

    def __init__(self, network, plan, t0):
        rng = network.rng
        self.network = network
        self.rng = rng
        self.plan = plan
        self.partner = plan.partner
        self.t0 = t0
        self.pool = rng.choice(POOLS)
        self.side = "buy" if rng.random() < 0.8 else "sell"
        self.chain = rng.choice(self.pool.networks)
        self.amount = self.choose_amount()
        buying = self.side == "buy"
        self.currency = self.pool.fiat if buying else self.pool.coin
        self.deliver_currency = self.pool.coin if buying else self.pool.fiat
        self.sent: list[_Sent] = []
        self.trade_sent: list[_Sent] = []
        self.ledger_sent: list[_Sent] = []
        self.quotes = 0

    def play(self):
        accepted = self.ask_for_quotes()
        if accepted is not None:
            self.transact(*accepted)
        self.reorder()
        return self.sent + self.duplicates()

    # quote clock

    def ask_for_quotes(self):
        """Quotes until one is accepted: (quote, accepted at), or None."""
        plan, rng, t = self.plan, self.rng, self.t0
        if plan.unavailable_first or plan.outcome == "unavailable":
            quote = self.new_quote(t, available=False)
            self.emit("quote.unavailable", t, self.quote_data(quote))
            if plan.outcome == "unavailable":
                return None
            t += rng.randint(20, 180)
        for _ in range(plan.expired_quotes + int(plan.outcome == "abandoned")):
            quote = self.new_quote(t)
            self.emit("quote.created", t, self.quote_data(quote))
            self.emit("quote.expired", quote.expires, self.quote_data(quote))
            t = quote.expires + rng.randint(5, 90)
        if plan.outcome == "abandoned":
            return None
        quote = self.new_quote(t)
        self.emit("quote.created", t, self.quote_data(quote))
        accepted_at = rng.randint(t + 2, quote.expires - 2)
        self.emit("quote.accepted", accepted_at, self.quote_data(quote))
        return quote, accepted_at

    def new_quote(self, at, available=True):
        rng = self.rng
        self.quotes += 1
        rate = None
        if available:
            rate = (self.pool.rate * Decimal(1 + rng.uniform(-0.003, 0.003))).quantize(RATE_STEP)
        return _Quote(
            quote_id=f"pq_{self.partner.mode}_{self.network.token(14)}",
            request_id="req_" + self.network.token(16),
            number=self.quotes,
            created=at,
            expires=at + rng.randint(15, 30) if available else None,
            rate=rate,
            spread_bps=rng.randint(8, 45),
        )

    # execution and settlement clocks

    def transact(self, quote, accepted_at):
        plan, rng = self.plan, self.rng
        reserved_at = accepted_at + rng.randint(1, 2)
        deliver = self.deliver_value(quote.rate)
        trade = _Trade(
            transact_id=f"pt_{self.partner.mode}_{self.network.token(12)}",
            quote=quote,
            idempotency_key=f"{plan.reference}:accept:{quote.number}",
            request_id="req_" + self.network.token(16),
            deliver=deliver,
            fee=max(CENT, (deliver * self.partner.fee_bps / 10_000).quantize(CENT, ROUND_HALF_UP)),
            history=[("reserved", reserved_at)],
        )
        self.trade_event(trade, reserved_at)
        if plan.idempotent_retry:
            retry_request = "req_" + self.network.token(16)
            self.trade_event(trade, reserved_at + rng.randint(1, 8), retry_request)

        if plan.outcome in ("settled", "returned"):
            settled_at = reserved_at + self.settle_delay()
            self.move(trade, "settled", settled_at)
            self.post_settlement(trade, settled_at)
            if plan.outcome == "returned":
                returned_at = settled_at + rng.randint(1200, 6 * 3600 if plan.noisy else 1800)
                self.move(trade, "returned", returned_at)
                self.post_return(trade, returned_at)
        elif plan.outcome == "failed":
            failed_at = reserved_at + rng.randint(5, 300)
            trade.failure_code = rng.choice(FAILURE_CODES)
            self.move(trade, "failed", failed_at)
            if plan.ledger == "orphan_settlement":
                self.post(trade, "settlement", "credit", trade.deliver, failed_at + 2)
            if plan.settled_after_failed:
                trade.failure_code = None
                self.move(trade, "settled", failed_at + rng.randint(30, 600))
        elif plan.outcome == "released":
            self.move(trade, "released", reserved_at + rng.randint(30, 900))

    def settle_delay(self):
        """Mostly well inside the SLA; a few slow settles pass it and still land."""
        rng = self.rng
        if not self.plan.noisy:
            return 45
        roll = rng.random()
        if roll < 0.7:
            return rng.randint(20, 180)
        if roll < 0.95:
            return rng.randint(180, 600)
        return rng.randint(900, 2400)

    def move(self, trade, status, at):
        trade.history.append((status, at))
        self.trade_event(trade, at)

    def trade_event(self, trade, at, request_id=None):
        status = trade.history[-1][0]
        data = self.trade_data(trade, request_id or trade.request_id)
        sent = self.emit(f"trade.{status}", at, data)
        self.trade_sent.append(sent)
        never_told = self.plan.partner_never_told and status == self.plan.outcome
        if never_told or not self.plan.noisy or self.rng.random() < NOTIFY_RATE:
            self.notify_partner(sent.envelope["id"], at, never_told)

    def notify_partner(self, event_id, at, never_told):
        """The network's tries at POSTing one event to the partner's endpoint."""
        rng = self.rng
        attempted_at = at + rng.randint(1, 3)
        last = rng.randint(3, 5) if never_told else len(RETRY_BACKOFF) + 1
        for attempt in range(1, last + 1):
            if attempt > 1:
                backoff = RETRY_BACKOFF[attempt - 2]
                attempted_at += backoff + rng.randint(0, backoff // 5)
            fails = never_told or (self.plan.noisy and rng.random() < self.partner.flaky)
            data = self.attempt_data(event_id, attempt, attempted_at, fails)
            self.emit("webhook.delivery_attempted", attempted_at, data)
            if not fails:
                return

    def post_settlement(self, trade, settled_at):
        ledger = self.plan.ledger
        if ledger != "missing":
            value = trade.deliver
            if ledger == "mismatch":
                value -= Decimal(self.rng.randint(1, 99)) / 100
            self.post(trade, "settlement", "credit", value, settled_at + 2)
        self.post(trade, "fee", "debit", trade.fee, settled_at + 3)

    def post_return(self, trade, returned_at):
        self.post(trade, "return", "debit", trade.deliver, returned_at + 2)
        if self.plan.ledger != "no_reversal":
            self.post(trade, "reversal", "credit", trade.fee, returned_at + 3)

    def post(self, trade, entry_type, direction, value, at):
        data = {
            "object": "ledger_entry",
            "ledgerId": "ledger_0pools_" + self.network.token(10),
            "transactId": trade.transact_id,
            "partnerId": self.partner.partner_id,
            "poolId": self.pool.pool_id,
            "entryType": entry_type,
            "direction": direction,
            "amount": {"value": str(value), "currency": self.deliver_currency},
            "postedAt": self.network.iso(at),
        }
        self.ledger_sent.append(self.emit("ledger.posted", at, data))

    # delivery

    def emit(self, event_type, at, data):
        envelope = self.network.envelope(event_type, at, self.partner.livemode, data)
        deliver = at
        if self.plan.noisy:
            deliver += self.rng.randint(0, 2)
            if self.rng.random() < LATE_RATE:
                deliver += self.rng.randint(120, 3 * 3600)
        sent = _Sent(deliver, envelope)
        self.sent.append(sent)
        return sent

    def reorder(self):
        """Deliver trade events behind the ledger or each other where the plan says."""
        rng = self.rng
        if self.plan.reserved_late:
            reserved, settled = (
                next(s for s in self.trade_sent if s.envelope["type"] == t)
                for t in ("trade.reserved", "trade.settled")
            )
            reserved.deliver = max(reserved.deliver, settled.deliver + rng.randint(5, 120))
        if self.plan.ledger_first and self.ledger_sent:
            first_ledger = min(s.deliver for s in self.ledger_sent)
            first_trade = min(s.deliver for s in self.trade_sent)
            shift = max(0, first_ledger + rng.randint(2, 30) - first_trade)
            for sent in self.trade_sent:
                sent.deliver += shift

    def duplicates(self):
        if not self.plan.noisy:
            return []
        rng = self.rng
        return [
            _Sent(sent.deliver + rng.randint(1, 600), sent.envelope)
            for sent in self.sent
            if rng.random() < DUPLICATE_RATE
        ]

    # objects

    def choose_amount(self):
        rng, typical = self.rng, self.pool.typical_amount
        if rng.random() < 0.4:
            fiat = Decimal(rng.randint(typical // 10, typical * 8))
        else:
            fiat = Decimal(rng.randint(typical * 10, typical * 800)) / 100
        value = fiat if self.side == "buy" else fiat * self.pool.rate
        return value.quantize(CENT, ROUND_HALF_UP)

    def deliver_value(self, rate):
        value = self.amount * rate if self.side == "buy" else self.amount / rate
        return value.quantize(CENT, ROUND_HALF_UP)

    def order_fields(self):
        return {
            "partnerId": self.partner.partner_id,
            "partnerReference": self.plan.reference,
            "poolId": self.pool.pool_id,
            "side": self.side,
            "network": self.chain,
            "amount": {"value": str(self.amount), "currency": self.currency},
        }

    def quote_data(self, quote):
        available = quote.rate is not None
        data = {"object": "quote", "quoteId": quote.quote_id, **self.order_fields()}
        data |= {"available": available, "type": "firm", "executable": available}
        if available:
            data |= {
                "rate": str(quote.rate),
                "spreadBps": quote.spread_bps,
                "feeBps": self.partner.fee_bps,
            }
        data |= {"requestId": quote.request_id, "createdAt": self.network.iso(quote.created)}
        if available:
            data["expiresAt"] = self.network.iso(quote.expires)
        return data

    def trade_data(self, trade, request_id):
        iso = self.network.iso
        return {
            "object": "trade",
            "transactId": trade.transact_id,
            "quoteId": trade.quote.quote_id,
            **self.order_fields(),
            "deliverAmount": {"value": str(trade.deliver), "currency": self.deliver_currency},
            "rate": str(trade.quote.rate),
            "feeBps": self.partner.fee_bps,
            "idempotencyKey": trade.idempotency_key,
            "requestId": request_id,
            "status": trade.history[-1][0],
            "failureCode": trade.failure_code,
            "statusHistory": [{"status": status, "at": iso(at)} for status, at in trade.history],
            "createdAt": iso(trade.history[0][1]),
            "updatedAt": iso(trade.history[-1][1]),
        }

    def attempt_data(self, event_id, attempt, at, fails):
        rng = self.rng
        if fails:
            status = rng.choice((500, 502, 503, 504, 404, None))  # None: timed out
            duration = 10_000 if status is None else rng.randint(30, 3000)
        else:
            status = rng.choice((200, 200, 200, 204))
            duration = rng.randint(40, 900)
        return {
            "object": "delivery_attempt",
            "eventId": event_id,
            "partnerId": self.partner.partner_id,
            "attempt": attempt,
            "responseStatus": status,
            "durationMs": duration,
            "outcome": "failed" if fails else "succeeded",
            "attemptedAt": self.network.iso(at),
        }


def generate(orders: int, seed: int, start: datetime = DEFAULT_START) -> Iterator[dict]:
    """Yield the envelopes of the named scenarios plus ``orders`` random orders.

    Envelopes come in delivery order. An order's events are all delivered at
    or after its start, so a heap of what is in flight can be drained up to
    each new order's start while the rest of the stream is still unplayed.
    """
    network = _Network(random.Random(seed), start.astimezone(UTC).replace(microsecond=0))
    in_flight = []
    tiebreak = itertools.count()
    for t0, plan in network.schedule(orders):
        while in_flight and in_flight[0][0] <= t0:
            yield heapq.heappop(in_flight)[2]
        for sent in _Run(network, plan, t0).play():
            heapq.heappush(in_flight, (sent.deliver, next(tiebreak), sent.envelope))
    while in_flight:
        yield heapq.heappop(in_flight)[2]
