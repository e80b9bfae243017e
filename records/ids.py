"""The contract's identifier shapes and event types (shared/contract/0POOLS.md).

One definition, used by parsing (ingest), search (lookup) and list filters
(browse).
"""

import re

# "Identifiers": the shapes of the contract-made ids. Partner order ids and
# idempotency keys are partner-chosen and have no shape beyond printable.
SHAPES = {
    "trade": r"pt_(?:test|live)_[A-Za-z0-9]{3,40}",
    "quote": r"pq_(?:test|live)_[A-Za-z0-9]{4,40}",
    "request": r"req_[A-Za-z0-9]{4,40}",
    "event": r"evt_[A-Za-z0-9]{4,40}",
    "ledger": r"ledger_[A-Za-z0-9_]{3,40}",
    "partner": r"ptn_[a-z0-9_]{1,40}",
    "pool": r"[A-Z0-9]{2,10}-[A-Z0-9]{2,10}",
}
PATTERNS = {kind: re.compile(shape) for kind, shape in SHAPES.items()}

# The shortest value searched as a prefix (the search box, the lists' id
# filter): shorter ones are matched exactly or not at all.
MIN_PREFIX = 6

# "Event envelope": every event type, and the object its data carries.
EVENT_OBJECTS = {
    "quote.created": "quote",
    "quote.unavailable": "quote",
    "quote.expired": "quote",
    "quote.accepted": "quote",
    "trade.reserved": "trade",
    "trade.settled": "trade",
    "trade.failed": "trade",
    "trade.released": "trade",
    "trade.returned": "trade",
    "ledger.posted": "ledger_entry",
    "webhook.delivery_attempted": "delivery_attempt",
}
EVENT_TYPES = tuple(EVENT_OBJECTS)
