"""Find orders from whatever a support agent pastes.

One range scan of ``records.Identifier`` answers a whole id and an id
prefix alike (``identifier_unique`` leads with ``value`` in collation "C",
where the values starting with a prefix are one range of the index, and
the value itself comes first in it): the exact matches when there are
any, the prefix matches otherwise, each with its order. Partner ids and
pools are filters, not orders: alone or inside a pasted ticket, each
opens its list.

A prefix never passes for complete: past ``MAX_MATCHES`` ids the result
says how many there are (counted up to ``COUNT_BOUND``) and links to the
orders list filtered by the same prefix, which holds them all.
"""

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from django.urls import reverse

from records import ids
from records.models import Identifier, Partner, Pool

from .reads import (
    EXACT_SQL,
    MAX_MATCHES,
    MAX_TICKET_MATCHES,
    RANGE_SQL,
    TOKENS_SQL,
    attach_newest_trades,
    identifiers,
    successor,
)

MIN_PREFIX = ids.MIN_PREFIX
# How far a cut prefix is counted: exact up to here, "more than" beyond.
COUNT_BOUND = 1000
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
# What ends a sentence after an id in a ticket ("the order is order_7841.").
SENTENCE_END = ".:!?"
SECRET_KINDS = ("partner secret key", "webhook signing secret")
# A secret key or signing secret in full: never sent to the database, not
# even as a search term (a short "sk_…" may still be a partner's order id).
SECRET = re.compile(r"(?<![A-Za-z0-9_])(?:sk_(?:test|live)_|whsec_)[A-Za-z0-9+/=_]{16,}")


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


@dataclass(frozen=True)
class Cut:
    """More ids matched than the result lists: how many, and where all of them are."""

    shown: int
    total: int  # exact, unless ``more_than``: then at least this many more
    more_than: bool
    prefix: str = ""  # the prefix cut short; "" for an exact id on too many orders
    url: str = ""  # the list that holds them all ("" when no filter can say it)


@dataclass(frozen=True)
class Listed:
    """A partner or pool: not an order, but the list it opens."""

    kind: str
    value: str
    url: str
    what: str  # what the list shows: "its orders"


@dataclass
class Result:
    query: str
    hits: list = field(default_factory=list)
    waiting: list = field(default_factory=list)
    redirect: str = ""
    kind_guess: str = ""
    hints: list = field(default_factory=list)
    cut: Cut | None = None
    listed: list = field(default_factory=list)

    @property
    def exact_single(self):
        return (
            len(self.hits) == 1
            and not self.waiting
            and all(how == "exact" for _, _, how in self.hits[0].reasons)
        )


def _group(found, how):
    hits, waiting = {}, []
    for ident in found:
        label = Identifier.Kind(ident.kind).label
        if ident.order_id is None:
            waiting.append(Waiting(label, ident.value, ident.partner_id, ident.link_key))
            continue
        hit = hits.setdefault(ident.order_id, OrderHit(ident.order))
        reason = (label, ident.value, how)
        if reason not in hit.reasons:
            hit.reasons.append(reason)
    return list(hits.values()), waiting


def partner_url(partner_id):
    """A partner's orders: what a partner id opens, alone or in a ticket."""
    return reverse("browse:orders") + "?" + urlencode({"partner": partner_id})


def pool_url(pool_id):
    """A pool's trades: what a pool id opens, alone or in a ticket."""
    return reverse("browse:trades") + "?" + urlencode({"pool": pool_id})


def prefix_url(prefix):
    """Every order with an id starting with ``prefix`` (browse's ``id`` filter)."""
    return reverse("browse:orders") + "?" + urlencode({"id": prefix})


def _first_page(value):
    """The first ``MAX_MATCHES`` identifiers whose value is ``value`` or, when
    none is and ``value`` is ``MIN_PREFIX`` long or more, that start with it;
    how they matched ("exact" or "prefix"); and a ``Cut`` when there are
    more (one row more than a page tells, without counting).

    One range scan of identifier_unique answers both: the exact value sorts
    before every longer value it starts, so exact matches, if any, lead the
    rows, and an exact match wins over prefix matches, as a whole pasted id
    must."""
    upper = successor(value) if len(value) >= MIN_PREFIX else None
    if upper is None:
        found, how = identifiers(EXACT_SQL, [value]), "exact"
    else:
        found, how = identifiers(RANGE_SQL, [value, upper]), "prefix"
        exact = [ident for ident in found if ident.value == value]
        if exact:
            # Every exact match; unless the page ended on one, and then the
            # cut below counts them.
            found, how = exact, "exact"
    if len(found) <= MAX_MATCHES:
        return found, how, None
    # Counted only when cut, and only so far: the subquery stops at
    # COUNT_BOUND + 1 rows of the same range scan of identifier_unique
    # (index-only: it reads ``value``), however common the prefix.
    prefix = how == "prefix"
    matching = {"value__startswith" if prefix else "value": value}
    counted = Identifier.objects.filter(**matching).values("value")[: COUNT_BOUND + 1].count()
    cut = Cut(
        shown=MAX_MATCHES,
        total=min(counted, COUNT_BOUND),
        more_than=counted > COUNT_BOUND,
        prefix=value if prefix else "",
        url=prefix_url(value) if prefix else "",
    )
    return found[:MAX_MATCHES], how, cut


def lookup(raw):
    """Resolve one pasted value: exact first, then prefix (6+ characters)."""
    value = clean(raw)
    result = Result(query=value, kind_guess=kind_of(value) or "")
    if not value:
        return result
    kind = result.kind_guess
    if SECRET.fullmatch(value):
        result.hints = _hints(value, kind)
        return result
    if kind == "partner" and Partner.objects.filter(partner_id=value).exists():
        result.redirect = partner_url(value)
        return result
    if kind == "pool" and Pool.objects.filter(pool_id=value).exists():
        result.redirect = pool_url(value)
        return result

    found, how, cut = _first_page(value)
    result.hits, result.waiting = _group(found, how)
    result.cut = cut
    if not result.exact_single:
        # One exact order is a redirect to its timeline: no list to show.
        attach_newest_trades(result.hits)
    if not result.hits and not result.waiting:
        result.hints = _hints(value, kind)
    return result


def extract(raw):
    """Every id in a pasted ticket or log excerpt, resolved and grouped by order.

    Whatever the box understands alone it understands here: contract ids by
    their shape, partner order ids and idempotency keys by looking every
    word up, partners and pools as the lists they open.
    """
    shaped = SHAPED.findall(raw)
    candidates = {}
    for token in [*shaped, *TOKEN_SPLIT.split(raw)]:
        token = clean(token)
        for each in (token, token.rstrip(SENTENCE_END)):
            if each and not SECRET.fullmatch(each):
                candidates[each] = None
    tokens = list(candidates)[:MAX_TOKENS]
    result = Result(query=raw.strip())

    found = identifiers(TOKENS_SQL, [tokens])
    result.hits, result.waiting = _group(found[:MAX_TICKET_MATCHES], "exact")
    attach_newest_trades(result.hits)
    result.listed = _listed(tokens)

    known = {ident.value for ident in found} | {item.value for item in result.listed}
    missing = [token for token in dict.fromkeys(shaped) if token not in known]
    twins = _twins(missing)
    result.hints = [
        Hint(f"{token} ({kind_of(token) or 'id'}) was not found")
        if token not in twins
        else Hint(
            f"{token} was not found; {twins[token]} exists: its other-mode twin.", twins[token]
        )
        for token in missing
    ]
    if len(found) > MAX_TICKET_MATCHES:
        result.hints.append(
            Hint(f"More ids matched than the {MAX_TICKET_MATCHES} shown; paste less text.")
        )
    if len(candidates) > MAX_TOKENS:
        result.hints.append(
            Hint(f"Only the first {MAX_TOKENS} words were looked up; paste less text.")
        )
    for secret in dict.fromkeys(m.group(0) for m in SECRET.finditer(raw)):
        result.hints.append(
            Hint(
                f"A secret ({_secret_head(secret)}…) is in the pasted text. Secrets are never "
                "stored or searchable; have it rotated."
            )
        )
    return result


def _listed(tokens):
    """The partners and pools ``tokens`` name, each with the list it opens alone.

    Only known ones: the pool shape fits dates and the like ("2026-06")."""
    partners = [t for t in tokens if ids.PATTERNS["partner"].fullmatch(t)]
    pools = [t for t in tokens if ids.PATTERNS["pool"].fullmatch(t)]
    known = {}
    if partners:
        for partner_id in Partner.objects.filter(partner_id__in=partners).values_list(
            "partner_id", flat=True
        ):
            known[partner_id] = Listed("partner", partner_id, partner_url(partner_id), "its orders")
    if pools:
        for pool_id in Pool.objects.filter(pool_id__in=pools).values_list("pool_id", flat=True):
            known[pool_id] = Listed("pool", pool_id, pool_url(pool_id), "its trades")
    return [known[token] for token in tokens if token in known]


def _twin(value):
    if "_test_" in value:
        return value.replace("_test_", "_live_", 1)
    if "_live_" in value:
        return value.replace("_live_", "_test_", 1)
    return None


def _twins(values):
    """{value: its other-mode twin} for the values whose twin we hold (one query)."""
    asked = {twin: value for value in values if (twin := _twin(value))}
    if not asked:
        return {}
    held = Identifier.objects.filter(value__in=asked).values_list("value", flat=True)
    return {asked[twin]: twin for twin in held}


def _secret_head(secret):
    """Enough of a secret to recognise it by, not to use it."""
    return secret[: secret.index("_", 3) + 1] if secret.startswith("sk_") else "whsec_"


def _hints(value, kind):
    """Why nothing matched: the other mode's id, or a near miss."""
    hints = []
    if kind in SECRET_KINDS:
        hints.append(
            Hint(
                "That looks like a secret. Secrets are never stored or searchable; "
                "if it was pasted in a ticket, have it rotated."
            )
        )
        return hints
    swapped = _twin(value)
    if swapped and Identifier.objects.filter(value=swapped).exists():
        mode = "live" if "_live_" in swapped else "test"
        hints.append(Hint(f"{swapped} exists: the {mode}-mode twin of this id.", swapped))
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
