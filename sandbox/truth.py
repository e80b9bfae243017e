"""What the upstream says about each trade: the truth the status API answers.

Where the truth comes from: ``generate(orders, seed, start)`` is replayed
and, per ``transactId``, the trade object with the longest ``statusHistory``
is kept: the last one the network made, whatever order it was delivered in
(ties keep the first delivered, so an idempotent retry does not replace the
original ``requestId``). ``scn_late_reserved`` is therefore ``settled``, and
``scn_illegal_move`` is ``settled`` with history reserved, failed, settled:
a re-poll of it shows the panel an authoritative illegal move.

The stuck-resolution rule: a trade still ``reserved`` at the end of the
stream has, upstream, mostly been resolved since. Each one draws from
``random.Random(f"{seed}:{transactId}")``; below ``RESOLVED_SHARE`` (0.8) it
becomes ``settled`` at the stream's last event time plus 2 to 30 minutes
(``statusHistory`` extended, ``updatedAt`` set to that time); otherwise it
stays ``reserved``. The scenario order ``scn_stuck_reserved`` always
resolves to ``settled``. The same draw then adds the internal detail the
contract forbids (``sandbox.forbidden``) at the top level, inside ``amount``
or ``deliverAmount`` and inside a ``statusHistory`` entry, so the same
``orders``, ``seed`` and ``start`` always give the same bytes.
"""

import random
from contextlib import suppress
from datetime import UTC, datetime, timedelta

import orjson

from ingest.contract import parse_time
from lib.formats import rfc3339
from records import states
from sandbox.forbidden import add_internal_detail
from sandbox.network import DEFAULT_START, generate
from sandbox.refusals import bad_request

RESOLVED_SHARE = 0.8  # of trades stuck in reserved at the end of the stream
ALWAYS_RESOLVED = "scn_stuck_reserved"


def copied(value):
    """A deep copy of a JSON value; nothing handed out shares the stored truth."""
    return orjson.loads(orjson.dumps(value))


def upstream_trades(orders, seed, start=DEFAULT_START):
    """transactId -> the upstream's trade object after the stream (module docstring)."""
    trades = {}
    stream_end = None
    for envelope in generate(orders, seed, start):
        if stream_end is None or envelope["createdAt"] > stream_end:
            stream_end = envelope["createdAt"]  # one RFC 3339 format: text order is time order
        data = envelope["data"]
        if data.get("object") != "trade":
            continue
        known = trades.get(data["transactId"])
        if known is None or len(data["statusHistory"]) > len(known["statusHistory"]):
            trades[data["transactId"]] = data
    end = parse_time(stream_end) if stream_end else start
    truth = {}
    for transact_id, trade in trades.items():
        rng = random.Random(f"{seed}:{transact_id}")
        trade = copied(trade)
        _resolve_stuck(rng, trade, end)
        add_internal_detail(rng, trade, rng.randint(1, 2))
        add_internal_detail(rng, trade[rng.choice(("amount", "deliverAmount"))], 1)
        add_internal_detail(rng, rng.choice(trade["statusHistory"]), 1)
        truth[transact_id] = trade
    return truth


def _resolve_stuck(rng, trade, stream_end):
    if trade["status"] != states.RESERVED:
        return
    roll = rng.random()
    settled_at = rfc3339(stream_end + timedelta(seconds=rng.randint(120, 1800)))
    if roll < RESOLVED_SHARE or trade["partnerReference"] == ALWAYS_RESOLVED:
        trade["status"] = states.SETTLED
        trade["statusHistory"].append({"status": states.SETTLED, "at": settled_at})
        trade["updatedAt"] = settled_at


def moved(trade, change):
    """``trade`` after a ``{"status": ...}`` move from the control API."""
    unknown = set(change) - {"status", "failureCode", "at"}
    if unknown:
        raise bad_request(
            f"unknown fields {sorted(unknown)}: send a whole trade object "
            '({"object": "trade", ...}) to set anything but status, failureCode, at'
        )
    status = change.get("status")
    if status not in states.STATUSES:
        raise bad_request(f"status must be one of {', '.join(states.STATUSES)}")
    at = change.get("at")
    if at is None:
        at = datetime.now(UTC)
        # A hand-made trade without a readable history: now will do.
        with suppress(KeyError, IndexError, TypeError, ValueError):
            at = max(at, parse_time(trade["statusHistory"][-1]["at"]) + timedelta(seconds=1))
        at = rfc3339(at.replace(microsecond=0))
    elif not isinstance(at, str):
        raise bad_request("at must be an RFC 3339 time")
    trade = copied(trade)
    trade["status"] = status
    if "failureCode" in change:
        trade["failureCode"] = change["failureCode"]
    history = trade.get("statusHistory")
    history = history if isinstance(history, list) else []
    trade["statusHistory"] = [*history, {"status": status, "at": at}]
    trade["updatedAt"] = at
    return trade
