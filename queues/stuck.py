"""The stuck-reserved queue, read: trades in ``reserved`` longer than their pool's SLA.

The set itself, its age bands and histogram, and the last scheduled
re-poll; one page of it, and what each row shows beside its trade, is
``queues.page``.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import (
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Q,
    Value,
)
from django.utils import timezone

from accounts.permissions import Action
from actions.models import Run
from lib.rawsql import columns, fetch, unseen
from records.models import Pool, Trade


def stuck_trades(now=None):
    """Oldest first. Served by ``trade_reserved_age_idx`` (partial, status = 'reserved')."""
    now = now or timezone.now()
    sla = ExpressionWrapper(
        F("pool__sla_minutes") * timedelta(minutes=1), output_field=DurationField()
    )
    return (
        Trade.objects.filter(
            status=Trade.Status.RESERVED,
            reserved_at__lt=ExpressionWrapper(Value(now) - sla, output_field=DateTimeField()),
        )
        .select_related("order__partner", "pool")
        .order_by("reserved_at", "id")
    )


# --- age bands ---------------------------------------------------------------


@dataclass(frozen=True)
class AgeBand:
    key: str  # the ``age`` query parameter
    label: str
    low: timedelta | None  # age at least this
    high: timedelta | None  # and under this

    def q(self, now):
        """The band as a condition on ``reserved_at``: age = now - reserved_at."""
        condition = Q()
        if self.low is not None:
            condition &= Q(reserved_at__lte=now - self.low)
        if self.high is not None:
            condition &= Q(reserved_at__gt=now - self.high)
        return condition

    def sql(self, column, now):
        """The same as plain SQL on ``column`` (a time): (conditions, parameters)."""
        where, params = [], []
        if self.low is not None:
            where.append(f"{column} <= %s")
            params.append(now - self.low)
        if self.high is not None:
            where.append(f"{column} > %s")
            params.append(now - self.high)
        return where, params


# The first band starts at the pool's SLA (15 min unless changed): a trade
# younger than its SLA is not in the queue at all.
AGE_BANDS = (
    AgeBand("under-1h", "up to 1 h", None, timedelta(hours=1)),
    AgeBand("1-4h", "1–4 h", timedelta(hours=1), timedelta(hours=4)),
    AgeBand("4-24h", "4–24 h", timedelta(hours=4), timedelta(hours=24)),
    AgeBand("over-24h", "over 24 h", timedelta(hours=24), None),
)
BANDS = {band.key: band for band in AGE_BANDS}


@dataclass(frozen=True)
class PoolAges:
    pool_id: str
    sla_minutes: int
    counts: tuple  # one per AGE_BANDS

    @property
    def total(self):
        return sum(self.counts)


# The kept histogram (records.ReservedMinute, ReservedTotal) reads the minutes
# of this window before ``now``, beyond 24 h or the longest SLA: everything
# older is in the last band and stuck whatever its pool's SLA, so it is the
# total less the window. Counts are kept per pool, partner and mode, so a
# partner filter reads that partner's rows only.
#
# The window's start is not shown to the plan (``lib.rawsql.unseen``) and its
# end is written out: shown the start, PostgreSQL costed each load's plan
# from how few minutes it holds and never kept the generic plan (0 of 55
# loads on the 1 M set: planned afresh on each, 0.25 ms, twice the
# statement's execution). With both ends given, every plan is the same
# range scan of reserved_minute_key (a window's estimate: half a percent of
# the rows), and the generic one is kept.
KEPT_SQL = f"""
WITH minutes AS (
    SELECT m.pool_id, m.partner_id, m.livemode,
           sum(m.trades) AS seen,
           {{bands}}
    FROM records_reservedminute m
    JOIN records_pool p ON p.id = m.pool_id
    WHERE m.minute > {unseen("timestamptz")} AND m.minute < 'infinity' {{minute_where}}
    GROUP BY m.pool_id, m.partner_id, m.livemode
)
SELECT p.pool_id, p.sla_minutes, t.trades - coalesce(w.seen, 0) AS older,
       {{band_columns}}
FROM records_reservedtotal t
JOIN records_pool p ON p.id = t.pool_id
LEFT JOIN minutes w
       ON w.pool_id = t.pool_id AND w.partner_id = t.partner_id AND w.livemode = t.livemode
WHERE t.trades > 0 {{where}}
"""  # noqa: S608 - a placeholder, not a value

# A partner filter names the partner by its public id.
PARTNER_PK = "(SELECT id FROM records_partner WHERE partner_id = %s)"


def _kept_query(now, window, pool_id, livemode, partner_id=None):
    """KEPT_SQL and its parameters, positional (``pgtrigger.ignore`` prefixes
    a positional one to every statement, and psycopg refuses a mix)."""
    bands, params = [], []
    for i, band in enumerate(AGE_BANDS):
        condition = ["m.minute < %s::timestamptz - p.sla_minutes * interval '1 minute'"]
        params.append(now)
        within, cuts = band.sql("m.minute", now)
        condition += within
        params += cuts
        bands.append(f"coalesce(sum(m.trades) FILTER (WHERE {' AND '.join(condition)}), 0) AS b{i}")
    params.append(window)
    minute_where = ""
    if partner_id is not None:
        minute_where = f"AND m.partner_id = {PARTNER_PK}"
        params.append(partner_id)
    where = ""
    if pool_id is not None:
        where += " AND p.pool_id = %s"
        params.append(pool_id)
    if livemode is not None:
        where += " AND t.livemode = %s"
        params.append(livemode)
    if partner_id is not None:
        where += f" AND t.partner_id = {PARTNER_PK}"
        params.append(partner_id)
    sql = KEPT_SQL.format(
        bands=",\n           ".join(bands),
        band_columns=", ".join(f"coalesce(w.b{i}, 0) AS b{i}" for i in range(len(AGE_BANDS))),
        minute_where=minute_where,
        where=where,
    )
    return sql, params


def kept_histogram(
    now=None, *, pools=None, pool_id=None, livemode=None, band=None, partner_id=None
):
    """The age histogram from the kept counts: stuck trades per pool and age band.

    One query over a bounded number of rows (the window's minutes of each
    pool, partner and mode, and one total each), however many trades are
    stuck. Ages
    are to the minute: a trade counts as reserved at the start of its
    minute of ``reserved_at`` (the page prints ages to the minute too).
    ``band`` (an ``AgeBand``) keeps that band's counts only, as the age
    filter does; ``partner_id`` (a public id) that partner's trades only.
    ``pools``: every pool, when the caller has them already
    (the longest SLA bounds the window).
    """
    from django.db import connection

    now = now or timezone.now()
    if pools is None:
        pools = Pool.objects.all()
    longest = max([timedelta(hours=24)] + [timedelta(minutes=p.sla_minutes) for p in pools])
    window = now - longest - timedelta(minutes=1)
    with connection.cursor() as cursor:
        cursor.execute(*_kept_query(now, window, pool_id, livemode, partner_id))
        rows = cursor.fetchall()
    last = len(AGE_BANDS) - 1
    per_pool = {}
    for pool, sla, older, *counts in rows:
        counts[last] += older
        if band is not None:
            counts = [
                count if each == band else 0 for each, count in zip(AGE_BANDS, counts, strict=True)
            ]
        known = per_pool.setdefault(pool, [sla, [0] * len(AGE_BANDS)])
        known[1] = [a + b for a, b in zip(known[1], counts, strict=True)]
    return [
        PoolAges(pool, sla, tuple(counts))
        for pool, (sla, counts) in sorted(per_pool.items())
        if any(counts)
    ]


# Plain SQL: the ORM spent longer building the JSON lookup than the
# database spent answering it, on every load of the queue.
LAST_SCHEDULED_SQL = f"""
SELECT {columns("r", Run)} FROM {Run._meta.db_table} r
 WHERE r.action = %s AND r.user_id IS NULL AND r.params -> 'scheduled' = 'true'::jsonb
 ORDER BY r.created_at DESC
 LIMIT 1
"""  # noqa: S608 - table and column names from the models


def last_scheduled_repoll():
    """The beat job's newest run (``tasks.repoll_stuck_trades``); ``run_action_created_idx``."""
    return next((run for (run,) in fetch(LAST_SCHEDULED_SQL, [Action.BULK_REPOLL], Run)), None)


# Every pool, in Pool's order; plain SQL (``lib.rawsql``), as above.
POOLS_SQL = f"SELECT {columns('p', Pool)} FROM records_pool p ORDER BY p.pool_id"  # noqa: S608


def all_pools():
    """``list(Pool.objects.all())``: the queue's SLA table, and the histogram's window."""
    return [pool for (pool,) in fetch(POOLS_SQL, [], Pool)]
