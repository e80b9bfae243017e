"""A simulated 0Pools network, for demos, load runs and tests.

``generate(orders, seed, start)`` plays partner orders through the lifecycle
of the contract (``shared/contract/0POOLS.md``) and yields event envelopes in
the order the network *delivers* them, which is not always the order it
created them in. The same arguments always give the same envelopes: every
choice comes from one ``random.Random(seed)`` and every time is an offset
from ``start``, never the wall clock.

The stream holds:

- the named scenarios (``sandbox.catalogue.SCENARIOS``) first, one order
  each, five minutes apart, on ``ptn_acme`` live and free of random faults;
  then ``orders`` random orders, one in each 30-second slot, on partners of
  both modes (``sandbox.plans``);
- quotes (firm, expired and asked again, unavailable), acceptances, each
  trade's status events, ledger entries, and the network's attempts to tell
  the partner about most trade events;
- the faults real traffic has: exact duplicates, late and out-of-order
  deliveries, ledger entries before their trade, missing and wrong ledger
  entries, trades stuck in ``reserved`` well past the SLA by the end of the
  stream, and illegal ``failed`` -> ``settled`` moves;
- internal execution detail the contract forbids, in every envelope, at
  varied depths (``sandbox.forbidden``).

Ledger entries are in the delivered currency: a settlement credits the
trade's ``deliverAmount`` and its fee debits ``feeBps`` of it; a return debits
the delivered amount back out and its reversal credits the fee back.
"""

import heapq
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from lib.formats import rfc3339
from sandbox.catalogue import FAILURE_CODES, POOLS, token
from sandbox.forbidden import contaminate
from sandbox.plans import Planner

DEFAULT_START = datetime(2026, 11, 20, tzinfo=UTC)

DUPLICATE_RATE = 0.025  # an event delivered twice
LATE_RATE = 0.015  # an event delivered minutes to hours after it happened
NOTIFY_RATE = 0.9  # trade events the network tries to tell the partner about
RETRY_BACKOFF = (30, 120, 600, 3600)  # seconds before attempts 2, 3, 4, 5

CENT = Decimal("0.01")
RATE_STEP = Decimal("0.0001")


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
    start: datetime  # whole seconds: every time is start plus whole seconds
    times: dict = field(default_factory=dict)  # offset -> RFC 3339 text

    def iso(self, at):
        text = self.times.get(at)
        if text is None:
            text = rfc3339(self.start + timedelta(seconds=at))
            self.times[at] = text
        return text

    def token(self, length):
        return token(self.rng, length)

    def envelope(self, event_type, at, livemode, data):
        envelope = {
            "id": "evt_" + self.token(20),
            "type": event_type,
            "createdAt": self.iso(at),
            "livemode": livemode,
            "data": data,
        }
        contaminate(self.rng, envelope)
        return envelope


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
        if ledger == "wrong_id_settlement":
            self.post(trade, "settlement", "credit", trade.deliver, settled_at + 2, unknown=True)
        elif ledger == "currency_mismatch":
            currency = self.currency  # the amount's currency, not the delivered one
            self.post(trade, "settlement", "credit", trade.deliver, settled_at + 2, currency)
        elif ledger != "missing":
            value = trade.deliver
            if ledger == "mismatch":
                value -= Decimal(self.rng.randint(1, 99)) / 100
            self.post(trade, "settlement", "credit", value, settled_at + 2)
            if ledger == "duplicate_settlement":
                self.post(trade, "settlement", "credit", value, settled_at + 5)
        if ledger != "no_fee":
            self.post(trade, "fee", "debit", trade.fee, settled_at + 3)
        if ledger == "orphan_fee":
            self.post(trade, "fee", "debit", trade.fee, settled_at + 4, unknown=True)
        if ledger == "orphan_return":
            self.post(trade, "return", "debit", trade.deliver, settled_at + 600)

    def post_return(self, trade, returned_at):
        if self.plan.ledger != "no_return":
            self.post(trade, "return", "debit", trade.deliver, returned_at + 2)
        if self.plan.ledger != "no_reversal":
            self.post(trade, "reversal", "credit", trade.fee, returned_at + 3)

    def post(self, trade, entry_type, direction, value, at, currency=None, unknown=False):
        """One ledger entry for ``trade``; ``unknown``: under a transactId that
        names no trade the network ever sent (an entry posted against a wrong id)."""
        transact_id = trade.transact_id
        if unknown:
            transact_id = f"pt_{self.partner.mode}_{self.network.token(12)}"
        data = {
            "object": "ledger_entry",
            "ledgerId": "ledger_0pools_" + self.network.token(10),
            "transactId": transact_id,
            "partnerId": self.partner.partner_id,
            "poolId": self.pool.pool_id,
            "entryType": entry_type,
            "direction": direction,
            "amount": {"value": str(value), "currency": currency or self.deliver_currency},
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


def generate(
    orders: int, seed: int, start: datetime = DEFAULT_START, exceptions=()
) -> Iterator[dict]:
    """Yield the envelopes of the named scenarios plus ``orders`` random orders
    (and, after the scenarios, one order per reconciliation exception kind in
    ``exceptions``: ``sandbox.catalogue.RECON_PLANS``).

    Envelopes come in delivery order. An order's events are all delivered at
    or after its start, so a heap of what is in flight can be drained up to
    each new order's start while the rest of the stream is still unplayed.
    """
    rng = random.Random(seed)
    network = _Network(rng, start.astimezone(UTC).replace(microsecond=0))
    in_flight = []
    tiebreak = itertools.count()
    for t0, plan in Planner(rng).schedule(orders, exceptions):
        while in_flight and in_flight[0][0] <= t0:
            yield heapq.heappop(in_flight)[2]
        for sent in _Run(network, plan, t0).play():
            heapq.heappush(in_flight, (sent.deliver, next(tiebreak), sent.envelope))
    while in_flight:
        yield heapq.heappop(in_flight)[2]
