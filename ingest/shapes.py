"""The contract's shapes as msgspec Structs: the quick way to check a line.

``ingest.contract.parse_envelope`` checks a decoded envelope field by field
in Python, which was the larger part of an import's own time (issue 14,
S5). ``quick_envelope`` has msgspec check the same decoded envelope against
these Structs (types, lengths, patterns, ranges and choices, in C), then
checks in Python only what a Struct cannot say: times, printable text, and
how the fields agree with each other; and counts the keys the allowlist
drops, which msgspec passes over.

It answers only where ``parse_envelope`` would take the line with no change
but the keys it drops: every time already in its stored spelling. For
anything else (a time to respell, any error) it answers ``None`` and the
caller asks ``parse_envelope``, whose result and error messages are the
contract's. So the two never disagree: an envelope ``quick_envelope`` takes
is the ``Envelope`` ``parse_envelope`` makes of it, which
``tests/test_contract_shapes.py`` holds for every kind of event, for the
sandbox's every planted fault, and for envelopes changed in every field.
"""

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from records import ids, states

from .contract import AHEAD, EARLIEST, EVENT_OBJECTS, Envelope, count_keys

# Unknown keys are passed over here and counted by ``_dropped``.
_OPTIONS = {"frozen": True}


def _shape(regex, max_length=255):
    """A string that fully matches ``regex`` (msgspec searches: anchored here)."""
    return Annotated[str, Meta(pattern=rf"\A(?:{regex})\Z", max_length=max_length)]


EventId = _shape(ids.SHAPES["event"])
PartnerId = _shape(ids.SHAPES["partner"])
PoolId = _shape(ids.SHAPES["pool"])
QuoteId = _shape(ids.SHAPES["quote"])
TransactId = _shape(ids.SHAPES["trade"])
RequestId = _shape(ids.SHAPES["request"])
LedgerId = _shape(ids.SHAPES["ledger"])
DecimalText = _shape(r"-?[0-9]{1,20}(\.[0-9]{1,18})?")
Currency = _shape(r"[A-Z0-9]{2,12}")
Network = _shape(r"[a-z0-9_-]{2,40}")
FailureCode = _shape(r"[a-z0-9_]{1,64}")
QuoteType = _shape(r"[a-z_]{1,20}")
# Checked for printable characters and surrounding spaces in Python.
Reference = Annotated[str, Meta(min_length=1, max_length=128)]
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=255)]
# Checked against the stored spelling and the sane bounds in Python.
Time = str
BasisPoints = Annotated[int, Meta(ge=-100_000, le=100_000)]
Status = Literal[states.STATUSES]
Side = Literal["buy", "sell"]


class Amount(Struct, **_OPTIONS):
    value: DecimalText
    currency: Currency


class StatusEntry(Struct, **_OPTIONS):
    status: Status
    at: Time


class Quote(Struct, tag_field="object", tag="quote", **_OPTIONS):
    quoteId: QuoteId
    partnerId: PartnerId
    partnerReference: Reference
    poolId: PoolId
    side: Side
    network: Network
    amount: Amount
    available: bool
    createdAt: Time
    type: QuoteType | UnsetType = UNSET
    executable: bool | UnsetType = UNSET
    rate: DecimalText | None | UnsetType = UNSET
    spreadBps: BasisPoints | None | UnsetType = UNSET
    feeBps: BasisPoints | None | UnsetType = UNSET
    requestId: RequestId | UnsetType = UNSET
    expiresAt: Time | None | UnsetType = UNSET


class Trade(Struct, tag_field="object", tag="trade", **_OPTIONS):
    transactId: TransactId
    partnerId: PartnerId
    partnerReference: Reference
    poolId: PoolId
    side: Side
    network: Network
    amount: Amount
    status: Status
    createdAt: Time
    quoteId: QuoteId | None | UnsetType = UNSET
    deliverAmount: Amount | None | UnsetType = UNSET
    rate: DecimalText | None | UnsetType = UNSET
    feeBps: BasisPoints | None | UnsetType = UNSET
    idempotencyKey: IdempotencyKey | None | UnsetType = UNSET
    requestId: RequestId | None | UnsetType = UNSET
    failureCode: FailureCode | None | UnsetType = UNSET
    statusHistory: Annotated[list[StatusEntry], Meta(max_length=50)] | UnsetType = UNSET
    updatedAt: Time | UnsetType = UNSET


class LedgerEntry(Struct, tag_field="object", tag="ledger_entry", **_OPTIONS):
    ledgerId: LedgerId
    transactId: TransactId
    partnerId: PartnerId
    poolId: PoolId
    entryType: Literal["settlement", "fee", "return", "reversal"]
    direction: Literal["credit", "debit"]
    amount: Amount
    postedAt: Time


class DeliveryAttempt(Struct, tag_field="object", tag="delivery_attempt", **_OPTIONS):
    eventId: EventId
    partnerId: PartnerId
    attempt: Annotated[int, Meta(ge=1, le=1000)]
    outcome: Literal["succeeded", "failed"]
    attemptedAt: Time
    responseStatus: Annotated[int, Meta(ge=100, le=599)] | None | UnsetType = UNSET
    durationMs: Annotated[int, Meta(ge=0, le=86_400_000)] | None | UnsetType = UNSET


class Line(Struct, **_OPTIONS):
    id: EventId
    type: Literal[tuple(EVENT_OBJECTS)]
    createdAt: Time
    livemode: bool
    data: Quote | Trade | LedgerEntry | DeliveryAttempt


# The keys each shape keeps, and the shapes of its nested objects.
_KEYS = {
    shape: frozenset(shape.__struct_fields__).union(["object"] * bool(shape.__struct_config__.tag))
    for shape in (Line, Amount, StatusEntry, Quote, Trade, LedgerEntry, DeliveryAttempt)
}
_NESTED = {
    Line: {"data": None},  # the data's own shape: its tag says which
    Amount: {},
    StatusEntry: {},
    Quote: {"amount": Amount},
    Trade: {"amount": Amount, "deliverAmount": Amount, "statusHistory": StatusEntry},
    LedgerEntry: {"amount": Amount},
    DeliveryAttempt: {},
}


# The stored spelling (``lib.formats.rfc3339``): seconds, or six fraction
# digits that are not all zero, and Z.
STORED_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.(?!000000)\d{6})?Z")
# The fields of each object that hold a time.
_TIMES = {
    Quote: ("createdAt", "expiresAt"),
    Trade: ("createdAt", "updatedAt"),
    LedgerEntry: ("postedAt",),
    DeliveryAttempt: ("attemptedAt",),
}
_MODE_IDS = {Quote: ("quoteId",), Trade: ("transactId", "quoteId"), LedgerEntry: ("transactId",)}


def _stored_time(value, latest):
    """The time, if ``value`` is one in its stored spelling within the bounds."""
    if STORED_TIME_RE.fullmatch(value) is None:
        return None
    try:
        moment = datetime.fromisoformat(value)  # ValueError: Feb 30
    except ValueError:
        return None
    return moment if EARLIEST <= moment <= latest else None


def _printable(value):
    return value is None or value is UNSET or (value.isprintable() and value == value.strip())


def _dropped(raw, shape, checked):
    """How many keys ``parse_envelope`` drops from ``raw`` (an object of
    ``shape``; ``checked`` is what msgspec made of it), nested ones included."""
    keys, nested, count = _KEYS[shape], _NESTED[shape], 0
    for key, value in raw.items():
        if key not in keys:
            count += 1 + count_keys(value) if isinstance(value, dict | list) else 1
        elif key in nested and value is not None:
            inner = getattr(checked, key)
            inner_shape = nested[key] or type(inner)
            if isinstance(value, list):
                count += sum(map(_dropped, value, [inner_shape] * len(value), inner))
            else:
                count += _dropped(value, inner_shape, inner)
    return count


def quick_envelope(raw):
    """The ``Envelope`` of a decoded JSON line (``orjson.loads``) whose fields
    the contract takes as they are, or ``None`` (then ask ``parse_envelope``;
    see above)."""
    try:
        return _quick(raw)
    except (msgspec.ValidationError, TypeError, AttributeError, ValueError):
        # msgspec takes Python values JSON never has (a tuple, a str
        # subclass) and some of them break on the way: parse_envelope says.
        return None


def _quick(raw):
    head = msgspec.convert(raw, Line)
    data = head.data
    kind = data.__struct_config__.tag
    if EVENT_OBJECTS[head.type] != kind:
        return None
    latest = datetime.now(UTC) + AHEAD
    created_at = _stored_time(head.createdAt, latest)
    if created_at is None:
        return None
    for name in _TIMES[type(data)]:
        value = getattr(data, name)
        if value is not None and value is not UNSET and _stored_time(value, latest) is None:
            return None
    if kind == "trade":
        if head.type != f"trade.{data.status}" or not _printable(data.idempotencyKey):
            return None
        for entry in data.statusHistory or ():
            if _stored_time(entry.at, latest) is None:
                return None
    elif kind == "quote" and (head.type == "quote.unavailable") == data.available:
        return None
    if kind in ("quote", "trade") and not _printable(data.partnerReference):
        return None
    mode = "live" if head.livemode else "test"
    for key in _MODE_IDS.get(type(data), ()):
        value = getattr(data, key)
        if value and value.split("_")[1] != mode:
            return None
    return Envelope(
        event_id=head.id,
        type=head.type,
        object=kind,
        created_at=created_at,
        livemode=head.livemode,
        data=msgspec.to_builtins(data),
        dropped=_dropped(raw, Line, head),
    )
