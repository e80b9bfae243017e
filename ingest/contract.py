"""The 0Pools contract as code: the allowlist and the shapes.

``parse_envelope`` takes a decoded JSON envelope and returns an
``Envelope`` holding only the fields that ``shared/contract/0POOLS.md``
names, at every depth. Every other key is dropped and only counted: it is
never stored, logged or echoed (not even in an error message, which names
contract fields only). A value that breaks the contract raises
``ContractError`` with a reason fit to show to whoever sent it.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from lib.formats import rfc3339
from records import ids, states

PARTNER_RE = ids.PATTERNS["partner"]
POOL_RE = ids.PATTERNS["pool"]
QUOTE_RE = ids.PATTERNS["quote"]
TRADE_RE = ids.PATTERNS["trade"]
REQUEST_RE = ids.PATTERNS["request"]
EVENT_RE = ids.PATTERNS["event"]
LEDGER_RE = ids.PATTERNS["ledger"]
# numeric(38, 18) in the database: 20 digits before the point, 18 after.
DECIMAL_RE = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,18})?")
CURRENCY_RE = re.compile(r"[A-Z0-9]{2,12}")
NETWORK_RE = re.compile(r"[a-z0-9_-]{2,40}")
FAILURE_CODE_RE = re.compile(r"[a-z0-9_]{1,64}")

EVENT_OBJECTS = ids.EVENT_OBJECTS


class ContractError(ValueError):
    """The envelope breaks the contract; the message names the field."""


# --- leaf checkers: (value, path) -> clean value -----------------------------


def _fail(path, what):
    """Raise for the field at ``path``; a leaf checker gets ``None`` and its
    caller puts the path in front (see ``_keep``)."""
    raise ContractError(f"{path}: {what}" if path is not None else f": {what}")


def _matching(regex, what, max_len=255):
    def check(value, path):
        if not isinstance(value, str) or len(value) > max_len or not regex.fullmatch(value):
            _fail(path, f"expected {what}")
        return value

    return check


def _boolean(value, path):
    if not isinstance(value, bool):
        _fail(path, "expected true or false")
    return value


def _integer(low, high):
    def check(value, path):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            _fail(path, f"expected an integer from {low} to {high}")
        return value

    return check


basis_points = _integer(-100_000, 100_000)


def _decimal(value, path):
    # Amounts are decimal strings, never floats.
    if not isinstance(value, str) or not DECIMAL_RE.fullmatch(value):
        _fail(path, 'expected a decimal string such as "100.00"')
    try:
        Decimal(value)
    except InvalidOperation:
        _fail(path, "expected a decimal string")
    return value


# RFC 3339, UTC only: "2026-06-28T20:15:03Z", with up to nine fraction
# digits and "+00:00" for Z. Python's fromisoformat alone lets through any
# separator (a NUL or a space), week dates and offsets with seconds.
RFC3339_UTC_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|\+00:00)"
)
# No 0Pools record is older than this, or more than this far ahead of our
# clock (a quote expires in minutes); outside, a time is a mistake, and a
# year-9999 value would skew every "last day" window.
EARLIEST = datetime(2015, 1, 1, tzinfo=UTC)
AHEAD = timedelta(days=30)


def strict_time(value):
    """An RFC 3339 UTC time as an aware datetime (microseconds kept, nanoseconds
    dropped); ``ValueError`` for anything else or outside the sane bounds."""
    match = RFC3339_UTC_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("not an RFC 3339 UTC time")
    *fields, fraction = match.groups()
    microsecond = int((fraction or "0")[:6].ljust(6, "0"))
    moment = datetime(*map(int, fields), microsecond, tzinfo=UTC)  # ValueError: Feb 30
    if not EARLIEST <= moment <= datetime.now(UTC) + AHEAD:
        raise ValueError("outside the times 0Pools can have sent")
    return moment


def _timestamp(value, path):
    try:
        moment = strict_time(value)
    except ValueError as exc:
        _fail(path, f"expected an RFC 3339 UTC time such as 2026-06-28T20:15:03Z ({exc})")
    # Stored, and replayed, in one spelling.
    return rfc3339(moment)


def _one_of(*choices):
    def check(value, path):
        if value not in choices:
            _fail(path, "expected one of " + ", ".join(choices))
        return value

    return check


partner_id = _matching(PARTNER_RE, "a partner id (ptn_...)")
pool_id = _matching(POOL_RE, "a pool id such as EUR-USDT")
quote_id = _matching(QUOTE_RE, "a quote id (pq_test_/pq_live_...)")
transact_id = _matching(TRADE_RE, "a trade id (pt_test_/pt_live_...)")
request_id = _matching(REQUEST_RE, "a request id (req_...)")
event_id = _matching(EVENT_RE, "an event id (evt_...)")
ledger_id = _matching(LEDGER_RE, "a ledger entry id (ledger_...)")


def _printable(what, max_len):
    """Partner-chosen text: printable characters of any script ("注文-42" as
    much as "order_7841"; Unicode's printable, so no control, format or line
    separator character and no NUL), no surrounding whitespace."""

    def check(value, path):
        if (
            not isinstance(value, str)
            or not 1 <= len(value) <= max_len
            or not value.isprintable()
            or value != value.strip()
        ):
            _fail(path, f"expected {what}")
        return value

    return check


partner_reference = _printable("a partner order id (1-128 printable)", 128)
idempotency_key = _printable("an idempotency key (1-255 printable)", 255)
currency = _matching(CURRENCY_RE, "a currency code")
network = _matching(NETWORK_RE, "a network name")
failure_code = _matching(FAILURE_CODE_RE, "a failure code")
quote_type = _matching(re.compile(r"[a-z_]{1,20}"), "a quote type such as firm")


# --- shapes ------------------------------------------------------------------


@dataclass(frozen=True)
class F:
    """A named field of a contract object."""

    check: object  # a leaf checker, a dict shape, or ``ListOf``
    required: bool = True
    nullable: bool = False


@dataclass(frozen=True)
class ListOf:
    item: object
    max_items: int = 50


AMOUNT = {"value": F(_decimal), "currency": F(currency)}

QUOTE = {
    "object": F(_one_of("quote")),
    "quoteId": F(quote_id),
    "partnerId": F(partner_id),
    "partnerReference": F(partner_reference),
    "poolId": F(pool_id),
    "side": F(_one_of("buy", "sell")),
    "network": F(network),
    "amount": F(AMOUNT),
    "available": F(_boolean),
    "type": F(quote_type, required=False),
    "executable": F(_boolean, required=False),
    "rate": F(_decimal, required=False, nullable=True),
    "spreadBps": F(basis_points, required=False, nullable=True),
    "feeBps": F(basis_points, required=False, nullable=True),
    "requestId": F(request_id, required=False),
    "createdAt": F(_timestamp),
    "expiresAt": F(_timestamp, required=False, nullable=True),
}

TRADE = {
    "object": F(_one_of("trade")),
    "transactId": F(transact_id),
    "quoteId": F(quote_id, required=False, nullable=True),
    "partnerId": F(partner_id),
    "partnerReference": F(partner_reference),
    "poolId": F(pool_id),
    "side": F(_one_of("buy", "sell")),
    "network": F(network),
    "amount": F(AMOUNT),
    "deliverAmount": F(AMOUNT, required=False, nullable=True),
    "rate": F(_decimal, required=False, nullable=True),
    "feeBps": F(basis_points, required=False, nullable=True),
    "idempotencyKey": F(idempotency_key, required=False, nullable=True),
    "requestId": F(request_id, required=False, nullable=True),
    "status": F(_one_of(*states.STATUSES)),
    "failureCode": F(failure_code, required=False, nullable=True),
    "statusHistory": F(
        ListOf({"status": F(_one_of(*states.STATUSES)), "at": F(_timestamp)}), required=False
    ),
    "createdAt": F(_timestamp),
    "updatedAt": F(_timestamp, required=False),
}

LEDGER_ENTRY = {
    "object": F(_one_of("ledger_entry")),
    "ledgerId": F(ledger_id),
    "transactId": F(transact_id),
    "partnerId": F(partner_id),
    "poolId": F(pool_id),
    "entryType": F(_one_of("settlement", "fee", "return", "reversal")),
    "direction": F(_one_of("credit", "debit")),
    "amount": F(AMOUNT),
    "postedAt": F(_timestamp),
}

DELIVERY_ATTEMPT = {
    "object": F(_one_of("delivery_attempt")),
    "eventId": F(event_id),
    "partnerId": F(partner_id),
    "attempt": F(_integer(1, 1000)),
    "responseStatus": F(_integer(100, 599), required=False, nullable=True),
    "durationMs": F(_integer(0, 86_400_000), required=False, nullable=True),
    "outcome": F(_one_of("succeeded", "failed")),
    "attemptedAt": F(_timestamp),
}

OBJECTS = {
    "quote": QUOTE,
    "trade": TRADE,
    "ledger_entry": LEDGER_ENTRY,
    "delivery_attempt": DELIVERY_ATTEMPT,
}

ENVELOPE = {
    "id": F(event_id),
    "type": F(_one_of(*EVENT_OBJECTS)),
    "createdAt": F(_timestamp),
    "livemode": F(_boolean),
    # "data" is checked against the shape its "object" names.
}


class _Counter:
    __slots__ = ("dropped",)

    def __init__(self):
        self.dropped = 0


def count_keys(value):
    """How many keys a dropped value held, nested ones included (never kept).

    Iterative: a sender can nest as deep as the JSON parser allows.
    """
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _keep(shape, raw, path, counter):
    """The allowlisted copy of ``raw`` (an object of ``shape``) at ``path``.

    The path of a field is only spelled out when it fails: building it for
    every field was a third of an import's checking time.
    """
    if not isinstance(raw, dict):
        _fail(path, "expected an object")
    clean = {}
    for key, value in raw.items():
        field = shape.get(key)
        if field is None:
            counter.dropped += 1 + count_keys(value) if isinstance(value, dict | list) else 1
            continue
        if value is None:
            if not field.nullable:
                _fail(f"{path}.{key}", "must not be null")
            clean[key] = None
            continue
        check = field.check
        if isinstance(check, dict):
            clean[key] = _keep(check, value, f"{path}.{key}", counter)
        elif isinstance(check, ListOf):
            clean[key] = _list(check, value, f"{path}.{key}", counter)
        else:
            try:
                clean[key] = check(value, None)
            except ContractError as exc:
                raise ContractError(f"{path}.{key}{exc}") from None
    if len(clean) < len(shape):
        for key, field in shape.items():
            if field.required and key not in clean:
                _fail(f"{path}.{key}", "is required")
    return clean


def _list(check, value, path, counter):
    if not isinstance(value, list) or len(value) > check.max_items:
        _fail(path, f"expected a list of at most {check.max_items} items")
    return [_keep(check.item, item, f"{path}[{i}]", counter) for i, item in enumerate(value)]


# --- the parsed envelope -----------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    event_id: str
    type: str
    object: str
    created_at: datetime
    livemode: bool
    data: dict
    dropped: int

    @property
    def payload(self):
        """The allowlisted envelope, as stored and as re-delivered."""
        return {
            "id": self.event_id,
            "type": self.type,
            "createdAt": rfc3339(self.created_at),
            "livemode": self.livemode,
            "data": self.data,
        }

    @property
    def partner_id(self):
        return self.data["partnerId"]

    @property
    def subject_id(self):
        key = {
            "quote": "quoteId",
            "trade": "transactId",
            "ledger_entry": "ledgerId",
            "delivery_attempt": "eventId",
        }[self.object]
        return self.data[key]


def parse_time(value):
    """A time the contract already checked (``_timestamp`` normalised it)."""
    return datetime.fromisoformat(value).astimezone(UTC)


def parse_optional_time(value):
    return parse_time(value) if value else None


def parse_decimal(value):
    return Decimal(value) if value is not None else None


def parse_amount(data, key):
    """An amount field as ``(Decimal, currency)``; ``(None, "")`` when absent."""
    amount = data.get(key)
    if not amount:
        return None, ""
    return Decimal(amount["value"]), amount["currency"]


_MODE_IDS = {
    "quote": ("quoteId",),
    "trade": ("transactId", "quoteId"),
    "ledger_entry": ("transactId",),
}


def parse_envelope(raw):
    """Allowlist and check one decoded envelope; raise ``ContractError``."""
    if not isinstance(raw, dict):
        raise ContractError("envelope: expected a JSON object")
    counter = _Counter()
    data = raw.get("data")
    head = _keep(ENVELOPE, {k: v for k, v in raw.items() if k != "data"}, "envelope", counter)
    if data is None:
        raise ContractError("envelope.data: is required")
    if not isinstance(data, dict):
        raise ContractError("envelope.data: expected an object")
    kind = EVENT_OBJECTS[head["type"]]
    if data.get("object") != kind:
        raise ContractError(f"envelope.data.object: {head['type']} must carry a {kind} object")
    clean = _keep(OBJECTS[kind], data, "data", counter)

    if kind == "trade" and head["type"] != f"trade.{clean['status']}":
        raise ContractError(f"data.status: {head['type']} carries status {clean['status']}")
    if kind == "quote":
        available = clean["available"]
        if (head["type"] == "quote.unavailable") == available:
            raise ContractError("data.available: does not match the event type")
    # test and live ids never mix.
    mode = "live" if head["livemode"] else "test"
    for key in _MODE_IDS.get(kind, ()):
        value = clean.get(key)
        if value and value.split("_")[1] != mode:
            raise ContractError(f"data.{key}: a {value.split('_')[1]} id in a {mode}mode event")

    return Envelope(
        event_id=head["id"],
        type=head["type"],
        object=kind,
        created_at=parse_time(head["createdAt"]),
        livemode=head["livemode"],
        data=clean,
        dropped=counter.dropped,
    )
