"""Find orders from whatever a support agent pastes.

One indexed query on ``records.Identifier`` answers any id or id prefix
(the index leads with ``value`` in collation "C", so ``=`` and
``LIKE 'prefix%'`` are range scans; Django escapes ``_`` and ``%`` in
``startswith``). Partner ids and pools are filters, not orders.
"""

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from records import ids
from records.models import Identifier, Partner, Pool, Trade

MIN_PREFIX = 6
MAX_MATCHES = 50
MAX_TOKENS = 300

# What an id looks like, by its shape (the contract's table).
KINDS = list(ids.PATTERNS.items())
PREFIXES = {
    "pt_": "trade",
    "pq_": "quote",
    "req_": "request",
    "evt_": "event",
    "ledger_": "ledger",
    "ptn_": "partner",
    "sk_": "partner secret key",
    "whsec_": "webhook signing secret",
}
# Contract-shaped ids inside free text; the free-form ones (partner order
# ids, idempotency keys) are found by looking every token up.
SHAPED = re.compile(
    r"(?<![A-Za-z0-9_])(?:"
    + "|".join(
        ids.SHAPES[kind] for kind in ("trade", "quote", "request", "event", "ledger", "partner")
    )
    + r")(?![A-Za-z0-9_])"
)
WRAPPERS = "\"'`<>()[]{}“”‘’«»,;"
TOKEN_SPLIT = re.compile(r"[\s\"'`<>()\[\]{}“”‘’«»,;|=]+")


def clean(raw):
    """The id inside a pasted value: no whitespace, quotes, <…> or URL around it."""
    value = raw.strip().strip(WRAPPERS).strip()
    if "://" in value:
        parts = urlsplit(value)
        segments = [unquote(s) for s in parts.path.split("/") if s]
        if segments:
            value = segments[-1]
        elif parts.query:
            value = unquote(parse_qsl(parts.query)[-1][1]) if parse_qsl(parts.query) else value
    return value.strip().strip(WRAPPERS).strip()


def kind_of(value):
    """What the value looks like from its shape or prefix, or None."""
    for kind, pattern in KINDS:
        if pattern.fullmatch(value):
            return kind
    for prefix, kind in PREFIXES.items():
        if value.startswith(prefix):
            return kind
    return None


def looks_like_ticket(raw):
    """Text with spaces in it once unwrapped: extract ids rather than look it up whole.

    (Partner order ids and idempotency keys are printable ASCII without
    surrounding whitespace; one with a space inside is still found by the
    token look-up of ``extract``.)"""
    return any(ch.isspace() for ch in clean(raw))


@dataclass
class OrderHit:
    """One order found, with every id that led to it and why."""

    order: object
    reasons: list = field(default_factory=list)  # (kind label, value, "exact"/"prefix")
    trade: object = None


@dataclass
class Waiting:
    """An id we hold whose order is not known yet (its trade has not arrived)."""

    kind: str
    value: str
    partner_id: str
    link_key: str


@dataclass(frozen=True)
class Hint:
    text: str
    value: str = ""  # an id worth opening instead


@dataclass
class Result:
    query: str
    hits: list = field(default_factory=list)
    waiting: list = field(default_factory=list)
    redirect: str = ""
    kind_guess: str = ""
    hints: list = field(default_factory=list)

    @property
    def exact_single(self):
        return (
            len(self.hits) == 1
            and not self.waiting
            and all(how == "exact" for _, _, how in self.hits[0].reasons)
        )


def _group(identifiers, how_for):
    hits, waiting = {}, []
    for ident in identifiers:
        label = Identifier.Kind(ident.kind).label
        if ident.order_id is None:
            waiting.append(Waiting(label, ident.value, ident.partner_id, ident.link_key))
            continue
        hit = hits.setdefault(ident.order_id, OrderHit(ident.order))
        reason = (label, ident.value, how_for(ident.value))
        if reason not in hit.reasons:
            hit.reasons.append(reason)
    return list(hits.values()), waiting


def _attach_latest_trades(hits):
    """The newest trade of each order, in one query (its status and age show)."""
    if not hits:
        return
    latest = {}
    for trade in Trade.objects.filter(order__in=[h.order for h in hits]).order_by(
        "order_id", "-created_at", "-id"
    ):
        latest.setdefault(trade.order_id, trade)
    for hit in hits:
        hit.trade = latest.get(hit.order.pk)


def _identifiers():
    return Identifier.objects.select_related("order__partner").order_by("value", "kind")


def lookup(raw):
    """Resolve one pasted value: exact first, then prefix (6+ characters)."""
    value = clean(raw)
    result = Result(query=value, kind_guess=kind_of(value) or "")
    if not value:
        return result
    kind = result.kind_guess
    if kind == "partner" and Partner.objects.filter(partner_id=value).exists():
        result.redirect = f"/orders/?partner={value}"
        return result
    if kind == "pool" and Pool.objects.filter(pool_id=value).exists():
        result.redirect = f"/trades/?pool={value}"
        return result

    # One index range scan answers both: the exact value sorts first among
    # the values it prefixes. An exact match wins over prefix matches.
    if len(value) >= MIN_PREFIX:
        found = list(_identifiers().filter(value__startswith=value)[:MAX_MATCHES])
        exact = [ident for ident in found if ident.value == value]
    else:
        found = exact = list(_identifiers().filter(value=value)[:MAX_MATCHES])
    if exact:
        result.hits, result.waiting = _group(exact, lambda v: "exact")
    else:
        result.hits, result.waiting = _group(found, lambda v: "prefix")
    _attach_latest_trades(result.hits)
    if not result.hits and not result.waiting:
        result.hints = _hints(value, kind)
    return result


def extract(raw):
    """Every id in a pasted ticket or log excerpt, resolved and grouped by order."""
    shaped = SHAPED.findall(raw)
    tokens = []
    for token in [*shaped, *TOKEN_SPLIT.split(raw)]:
        token = clean(token)
        if token and token not in tokens:
            tokens.append(token)
    tokens = tokens[:MAX_TOKENS]
    result = Result(query=raw.strip())
    found = list(_identifiers().filter(value__in=tokens)[: MAX_MATCHES * 4])
    result.hits, result.waiting = _group(found, lambda v: "exact")
    _attach_latest_trades(result.hits)
    known = {ident.value for ident in found}
    result.hints = [
        Hint(f"{token} ({kind_of(token) or 'id'}) was not found")
        for token in dict.fromkeys(shaped)
        if token not in known
    ]
    return result


def _hints(value, kind):
    """Why nothing matched: the other mode's id, or a near miss."""
    hints = []
    swapped = None
    if "_test_" in value:
        swapped = value.replace("_test_", "_live_", 1)
    elif "_live_" in value:
        swapped = value.replace("_live_", "_test_", 1)
    if swapped and Identifier.objects.filter(value=swapped).exists():
        mode = "live" if "_live_" in swapped else "test"
        hints.append(Hint(f"{swapped} exists: the {mode}-mode twin of this id.", swapped))
        return hints
    if kind in ("partner secret key", "webhook signing secret"):
        hints.append(
            Hint(
                "That looks like a secret. Secrets are never stored or searchable; "
                "if it was pasted in a ticket, have it rotated."
            )
        )
        return hints
    # A near miss: same stem, at most two characters different.
    for cut in (1, 2, 3):
        stem = value[: max(len(value) - cut, 0)]
        if len(stem) < MIN_PREFIX:
            break
        candidates = list(
            Identifier.objects.filter(value__startswith=stem)
            .values_list("value", flat=True)
            .distinct()[:MAX_MATCHES]
        )
        near = sorted(
            (c for c in candidates if _distance(c, value) <= 2), key=lambda c: _distance(c, value)
        )
        if near:
            hints.extend(Hint(f"Did you mean {c}?", c) for c in near[:3])
            break
    return hints


def _distance(a, b):
    """Levenshtein distance (ids are short)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
