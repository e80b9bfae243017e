"""The day's reconciliation, computed in SQL: totals and exceptions.

Two statements, whatever the size of the day: one for the totals per pool,
status and currency, one for every exception (a ``UNION ALL`` of one branch
per kind). Python only writes the line of each exception found; it never
walks the day's rows.

What belongs to a day (``docs/decisions.md``, "The daily close"):

- a trade whose current status happened in it (``status_at``, served by
  ``trade_status_at_idx``): its totals, and the checks that start from the
  trade (no settlement, amount or currency, duplicate, no return, no fee);
- a ledger entry posted in it (``ledger_posted_idx``): the checks that start
  from the entry (unknown trade, trade not settled, not returned, fee with
  no trade);
- a reserved trade whose pool SLA ran out in it (``trade_reserved_age_idx``).

Matching is by durable id first: an entry belongs to the trade its
``transactId`` names, whenever it was posted. Only where the id matches
nothing does amount and time speak: a settlement naming an unknown trade is
paired with a settled trade of the same partner and pool, with no
settlement of its own, delivering exactly that amount in that currency
within ``MATCH_WINDOW`` of the posting (and the other way round). The pair
is named in both lines; neither exception is closed by it.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from django.db import connection

from lib.formats import amount, rfc3339

from . import kinds

# How far apart a settlement and a trade's settle time may be for amount and time to pair them.
MATCH_WINDOW = timedelta(hours=1)
# The longest pool SLA (queues.services.SLA_MINUTES): how far back a reserved trade may start.
LONGEST_SLA = timedelta(minutes=1440)


def bounds(day, days=1):
    """The UTC day (or ``days`` days from it) as [start, end)."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=days)


@dataclass
class Found:
    """One exception, as computed now."""

    kind: str
    subject: str
    facts: dict  # python values; ``kinds.describe`` reads them
    line: str = ""

    @property
    def key(self):
        return (self.kind, self.subject)

    @property
    def transact_id(self):
        return self.facts.get("transactId") or ""

    @property
    def ledger_id(self):
        return self.facts.get("ledgerId") or ""

    def stored_facts(self):
        """``facts`` as JSON values (amounts and times as the contract writes them)."""
        out = {}
        for name, value in self.facts.items():
            if isinstance(value, datetime):
                value = rfc3339(value)
            elif isinstance(value, timedelta):
                value = int(value.total_seconds())
            elif hasattr(value, "as_tuple"):  # Decimal
                value = amount(value)
            out[name] = value
        return out


@dataclass
class Computed:
    totals: list = field(default_factory=list)
    exceptions: list = field(default_factory=list)


_TRADE_COLUMNS = """
    t.id, t.transact_id, t.status, t.status_at, t.reserved_at, t.deliver_value,
    t.deliver_currency, t.fee_bps, t.pool_id, t.order_id
"""

# The day's trades (status_at in the day, plus any named), their order, partner and pool,
# and per trade what its ledger holds (any posting time: the durable id decides).
_DAY_TRADES = f"""
day_trades AS MATERIALIZED (
    SELECT {_TRADE_COLUMNS} FROM records_trade t
    WHERE t.status_at >= %(start)s AND t.status_at < %(end)s
    UNION
    SELECT {_TRADE_COLUMNS} FROM records_trade t WHERE t.transact_id = ANY(%(trades)s)
),
per_trade AS (
    -- One pass over the trades' entries; a settlement differing from the trade's
    -- deliver amount is kept in arrays (one element per entry), unnested below.
    SELECT l.transact_id,
           count(*) FILTER (WHERE l.entry_type = 'settlement') AS settlements,
           array_agg(l.ledger_id ORDER BY l.posted_at, l.ledger_id)
               FILTER (WHERE l.entry_type = 'settlement') AS settlement_ids,
           count(*) FILTER (WHERE l.entry_type = 'fee') AS fees,
           sum(l.amount_value) FILTER (WHERE l.entry_type = 'fee') AS fee_total,
           count(*) FILTER (WHERE l.entry_type = 'return') AS returns,
           array_agg(l.ledger_id ORDER BY l.posted_at, l.ledger_id) FILTER (WHERE l.differs)
               AS differing_ids,
           array_agg(l.amount_value ORDER BY l.posted_at, l.ledger_id) FILTER (WHERE l.differs)
               AS differing_values,
           array_agg(l.amount_currency::text ORDER BY l.posted_at, l.ledger_id)
               FILTER (WHERE l.differs) AS differing_currencies,
           array_agg(l.posted_at ORDER BY l.posted_at, l.ledger_id) FILTER (WHERE l.differs)
               AS differing_times
    FROM (
        SELECT l.*, l.entry_type = 'settlement'
               AND (l.amount_value, l.amount_currency::text)
                   IS DISTINCT FROM (d.deliver_value, d.deliver_currency::text) AS differs
        FROM records_ledgerentry l JOIN day_trades d ON d.transact_id = l.transact_id
    ) l
    GROUP BY l.transact_id
),
trades AS (
    SELECT d.*, o.partner_id AS partner_pk, p.partner_id AS partner, o.partner_reference,
           pl.pool_id AS pool, coalesce(pt.settlements, 0) AS settlements, pt.settlement_ids,
           coalesce(pt.fees, 0) AS fees, pt.fee_total, coalesce(pt.returns, 0) AS returns,
           pt.differing_ids, pt.differing_values, pt.differing_currencies, pt.differing_times
    FROM day_trades d
    JOIN records_order o ON o.id = d.order_id
    JOIN records_partner p ON p.id = o.partner_id
    JOIN records_pool pl ON pl.id = d.pool_id
    LEFT JOIN per_trade pt ON pt.transact_id = d.transact_id
)
"""  # noqa: S608 - constant text; every value is a bound parameter

TOTALS_SQL = f"""
WITH {_DAY_TRADES}
SELECT pool, status, deliver_currency, count(*), coalesce(sum(deliver_value), 0),
       coalesce(sum(fee_total), 0)
FROM trades
WHERE status_at >= %(start)s AND status_at < %(end)s
GROUP BY pool, status, deliver_currency
ORDER BY pool, status, deliver_currency
"""  # noqa: S608 - constant text; every value is a bound parameter

# Every branch returns: kind, subject, transact id, ledger id, partner, partner reference,
# pool, trade status, at, expected value and currency, found value and currency, count,
# ids, candidate, fee bps, SLA minutes, entry type.
EXCEPTIONS_SQL = f"""
WITH {_DAY_TRADES},
day_entries AS MATERIALIZED (
    SELECT l.ledger_id, l.transact_id, l.entry_type, l.amount_value, l.amount_currency,
           l.posted_at, l.partner_id AS partner_pk, l.pool_id
    FROM records_ledgerentry l
    WHERE l.posted_at >= %(start)s AND l.posted_at < %(end)s
    UNION
    SELECT l.ledger_id, l.transact_id, l.entry_type, l.amount_value, l.amount_currency,
           l.posted_at, l.partner_id, l.pool_id
    FROM records_ledgerentry l WHERE l.ledger_id = ANY(%(ledgers)s)
),
checked_entries AS (
    SELECT e.*, p.partner_id AS partner, pl.pool_id AS pool, t.id AS trade_pk, t.status,
           o.partner_reference
    FROM day_entries e
    JOIN records_partner p ON p.id = e.partner_pk
    JOIN records_pool pl ON pl.id = e.pool_id
    LEFT JOIN records_trade t ON t.transact_id = e.transact_id
    LEFT JOIN records_order o ON o.id = t.order_id
)
SELECT 'settled_without_settlement', t.transact_id, t.transact_id, NULL, t.partner,
       t.partner_reference, t.pool, t.status, t.status_at, t.deliver_value, t.deliver_currency,
       NULL::numeric, NULL, 0, NULL::text[], cand.ledger_id, t.fee_bps, NULL::int, NULL
FROM trades t
LEFT JOIN LATERAL (
    SELECT l.ledger_id FROM records_ledgerentry l
    WHERE l.entry_type = 'settlement'
      AND l.posted_at BETWEEN t.status_at - %(window)s AND t.status_at + %(window)s
      AND l.amount_value = t.deliver_value AND l.amount_currency = t.deliver_currency
      AND l.partner_id = t.partner_pk AND l.pool_id = t.pool_id
      AND NOT EXISTS (SELECT 1 FROM records_trade x WHERE x.transact_id = l.transact_id)
    ORDER BY abs(extract(epoch FROM l.posted_at - t.status_at)), l.ledger_id LIMIT 1
) cand ON true
WHERE t.status IN ('settled', 'returned') AND t.settlements = 0

UNION ALL
SELECT 'settlement_amount_mismatch', e.ledger_id, t.transact_id, e.ledger_id, t.partner,
       t.partner_reference, t.pool, t.status, e.posted_at, t.deliver_value, t.deliver_currency,
       e.amount_value, e.amount_currency, 0, NULL, NULL, t.fee_bps, NULL, 'settlement'
FROM trades t,
     unnest(t.differing_ids, t.differing_values, t.differing_currencies, t.differing_times)
         AS e(ledger_id, amount_value, amount_currency, posted_at)
WHERE t.status IN ('settled', 'returned') AND t.differing_ids IS NOT NULL

UNION ALL
SELECT 'duplicate_settlement', t.transact_id, t.transact_id, NULL, t.partner,
       t.partner_reference, t.pool, t.status, t.status_at, t.deliver_value, t.deliver_currency,
       NULL, NULL, t.settlements, t.settlement_ids, NULL, t.fee_bps, NULL, NULL
FROM trades t WHERE t.settlements > 1

UNION ALL
SELECT 'returned_without_return', t.transact_id, t.transact_id, NULL, t.partner,
       t.partner_reference, t.pool, t.status, t.status_at, t.deliver_value, t.deliver_currency,
       NULL, NULL, 0, NULL, NULL, t.fee_bps, NULL, NULL
FROM trades t WHERE t.status = 'returned' AND t.returns = 0

UNION ALL
SELECT 'settled_without_fee', t.transact_id, t.transact_id, NULL, t.partner,
       t.partner_reference, t.pool, t.status, t.status_at, t.deliver_value, t.deliver_currency,
       NULL, NULL, 0, NULL, NULL, t.fee_bps, NULL, NULL
FROM trades t WHERE t.status IN ('settled', 'returned') AND t.fee_bps > 0 AND t.fees = 0

UNION ALL
SELECT 'reserved_past_sla', t.transact_id, t.transact_id, NULL, p.partner_id,
       o.partner_reference, pl.pool_id, t.status, t.reserved_at, t.deliver_value,
       t.deliver_currency, NULL, NULL, 0, NULL, NULL, t.fee_bps, pl.sla_minutes, NULL
FROM records_trade t
JOIN records_pool pl ON pl.id = t.pool_id
JOIN records_order o ON o.id = t.order_id
JOIN records_partner p ON p.id = o.partner_id
WHERE t.status = 'reserved'
  AND t.reserved_at >= %(start)s - %(longest_sla)s AND t.reserved_at < %(until)s
  AND t.reserved_at + pl.sla_minutes * interval '1 minute' >= %(start)s
  AND t.reserved_at + pl.sla_minutes * interval '1 minute' < %(until)s

UNION ALL
SELECT CASE WHEN e.trade_pk IS NULL THEN 'settlement_unknown_trade'
            ELSE 'settlement_trade_not_settled' END,
       e.ledger_id, e.transact_id, e.ledger_id, e.partner, e.partner_reference, e.pool,
       e.status, e.posted_at, NULL, NULL, e.amount_value, e.amount_currency, 0, NULL,
       cand.transact_id, NULL, NULL, e.entry_type
FROM checked_entries e
LEFT JOIN LATERAL (
    SELECT t.transact_id FROM records_trade t JOIN records_order o ON o.id = t.order_id
    WHERE e.trade_pk IS NULL
      AND t.status_at BETWEEN e.posted_at - %(window)s AND e.posted_at + %(window)s
      AND t.status IN ('settled', 'returned')
      AND t.deliver_value = e.amount_value AND t.deliver_currency = e.amount_currency
      AND o.partner_id = e.partner_pk AND t.pool_id = e.pool_id
      AND NOT EXISTS (
          SELECT 1 FROM records_ledgerentry x
          WHERE x.transact_id = t.transact_id AND x.entry_type = 'settlement'
      )
    ORDER BY abs(extract(epoch FROM t.status_at - e.posted_at)), t.transact_id LIMIT 1
) cand ON true
WHERE e.entry_type = 'settlement'
  AND (e.trade_pk IS NULL OR e.status NOT IN ('settled', 'returned'))

UNION ALL
SELECT 'return_without_returned', e.ledger_id, e.transact_id, e.ledger_id, e.partner,
       e.partner_reference, e.pool, e.status, e.posted_at, NULL, NULL, e.amount_value,
       e.amount_currency, 0, NULL, NULL, NULL, NULL, e.entry_type
FROM checked_entries e
WHERE e.entry_type IN ('return', 'reversal') AND (e.trade_pk IS NULL OR e.status <> 'returned')

UNION ALL
SELECT 'fee_without_trade', e.ledger_id, e.transact_id, e.ledger_id, e.partner,
       e.partner_reference, e.pool, e.status, e.posted_at, NULL, NULL, e.amount_value,
       e.amount_currency, 0, NULL, NULL, NULL, NULL, e.entry_type
FROM checked_entries e
WHERE e.entry_type = 'fee' AND e.trade_pk IS NULL
"""  # noqa: S608 - constant text; every value is a bound parameter

_FIELDS = (
    "kind",
    "subject",
    "transactId",
    "ledgerId",
    "partnerId",
    "partnerReference",
    "poolId",
    "status",
    "at",
    "expectedValue",
    "expectedCurrency",
    "foundValue",
    "foundCurrency",
    "count",
    "ids",
    "candidate",
    "feeBps",
    "slaMinutes",
    "entryType",
)
_ORDER = {kind: n for n, kind in enumerate(kinds.KINDS)}


def compute(day, now, *, trades=(), ledgers=(), days=1):
    """The totals and exceptions of ``day`` from the records as they are ``now``.

    ``trades`` and ``ledgers`` (transact and ledger ids) are checked too,
    wherever their time falls: the subjects of a closed day's exceptions,
    so that one the data has fixed since is seen fixed, not gone. ``days``
    widens the window (the benchmark closes a whole stream as one window).
    """
    start, end = bounds(day, days)
    params = {
        "start": start,
        "end": end,
        "until": min(end, now),  # a reserved trade is past its SLA "at the close", or by now
        "trades": list(trades),
        "ledgers": list(ledgers),
        "window": MATCH_WINDOW,
        "longest_sla": LONGEST_SLA,
    }
    with connection.cursor() as cursor:
        cursor.execute(TOTALS_SQL, params)
        totals = [
            {
                "poolId": pool,
                "status": status,
                "currency": currency,
                "trades": count,
                "amount": amount(value),
                "fees": amount(fees),
            }
            for pool, status, currency, count, value, fees in cursor.fetchall()
        ]
        cursor.execute(EXCEPTIONS_SQL, params)
        rows = cursor.fetchall()
    found = []
    for row in rows:
        facts = {name: value for name, value in zip(_FIELDS, row, strict=True) if value is not None}
        kind, subject = facts.pop("kind"), facts.pop("subject")
        facts["kind"] = kind
        if not facts.get("count"):
            facts.pop("count", None)
        if kind == kinds.RESERVED_PAST_SLA:
            due = facts["at"] + timedelta(minutes=facts["slaMinutes"])
            facts["overdue"] = params["until"] - due
        exception = Found(kind, subject, facts)
        exception.line = kinds.describe(facts)
        found.append(exception)
    found.sort(key=lambda f: (_ORDER[f.kind], f.facts.get("at") or start, f.subject))
    return Computed(totals=totals, exceptions=found)
