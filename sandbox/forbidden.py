"""Internal execution detail the contract forbids, leaked the way upstream
payloads leak it: venues, routes, providers, treasury wallets, market-maker
terms, workers.

Every key it adds is in ``FORBIDDEN_KEYS`` and every string it makes holds
one of ``FORBIDDEN_MARKERS``; no contract value ever does, so a test can
grep a whole database dump for leaks.
"""

from sandbox.catalogue import token

FORBIDDEN_MARKERS = ("VENUE-", "ROUTE-", "PRV-", "TREASURY-", "MMTERMS-", "INTERNAL-")


def _route(rng):
    return "ROUTE-" + rng.choice(("direct", "eu-otc-2", "tron-hot-1", "split-3", "latam-pix"))


def _connector(rng):
    return "PRV-connector-" + rng.choice(("sepa-1", "pix-2", "faster-payments", "spei"))


def _worker(rng):
    return f"INTERNAL-worker-{rng.randint(1, 24)}"


def _wallet(rng):
    return "TREASURY-" + token(rng, 34)


# key -> a function making a value for it; every string made contains a marker.
_INTERNAL_FIELDS = {
    "venue": lambda rng: "VENUE-" + rng.choice(("binance-eu", "kraken-otc", "bitstamp", "b2c2")),
    "venueOrderId": lambda rng: "VENUE-ORD-" + token(rng, 10),
    "venue_order_id": lambda rng: "VENUE-ORD-" + token(rng, 10),
    "route": _route,
    "routeId": lambda rng: "ROUTE-" + token(rng, 8),
    "provider": lambda rng: "PRV-" + rng.choice(("circle", "fireblocks", "bitgo", "railsr")),
    "providerId": lambda rng: "PRV-" + token(rng, 12),
    "provider_id": lambda rng: "PRV-" + token(rng, 12),
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
        "providerRef": "PRV-" + token(rng, 16),
        "fills": [
            {"px": f"PRV-{rng.random():.6f}", "qty": f"PRV-{rng.randint(1, 10**6)}"}
            for _ in range(rng.randint(1, 3))
        ],
        "venueTs": f"VENUE-ts-{rng.randint(10**12, 10**13)}",
    },
    "debug": lambda rng: {
        "trace": "INTERNAL-trace-" + token(rng, 16),
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


def add_internal_detail(rng, target, count=1):
    """Put ``count`` internal fields into the dict ``target``."""
    for key in rng.sample(_INTERNAL_KEYS, count):
        target[key] = _INTERNAL_FIELDS[key](rng)


def contaminate(rng, envelope):
    """Hide internal detail in an event envelope at varied depths."""
    data = envelope["data"]
    add_internal_detail(rng, data, rng.randint(1, 3))
    if rng.random() < 0.6:
        add_internal_detail(rng, envelope, rng.randint(1, 2))
    for key in ("amount", "deliverAmount"):
        if key in data and rng.random() < 0.3:
            add_internal_detail(rng, data[key], 1)
    if "statusHistory" in data and rng.random() < 0.4:
        add_internal_detail(rng, rng.choice(data["statusHistory"]), 1)
