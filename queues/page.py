"""One page of the stuck queue, read in two plain statements (``lib.rawsql``).

The page's trades (a keyset page under the filters, oldest first), then,
for those trades, what each row shows beside them: the newest status read,
the newest delivery attempt and who holds the trade. Both statements are
written once; the ORM and django-filter built the first afresh on every
request, and that was a quarter of the page (issue 14). The filters are
still validated by ``StuckFilter``; the CSV and the bulk runs still read
``filterset.qs``, and
``tests/test_queue_page.py`` holds the two reads equal under every filter.
"""

from datetime import UTC

from django.contrib.auth import get_user_model
from django.utils import timezone

from lib.formats import duration
from lib.rawsql import columns, fetch
from records.links import linker
from records.models import (
    DeliveryAttempt,
    Order,
    Partner,
    Pool,
    Trade,
    TradeNewest,
    WebhookEvent,
    order_url,
)

from .models import Claim
from .stuck import BANDS

User = get_user_model()

# What a row shows (templates/jinja2/queues/stuck_row.html): a trade has two
# dozen columns, and loading them all was a fifth of the page.
TRADE = (Trade, ("id", "transact_id", "order", "pool", "livemode", "status",
                 "amount_value", "amount_currency", "reserved_at"))  # fmt: skip
ORDER = (Order, ("id", "partner", "partner_reference"))
PARTNER = (Partner, ("id", "partner_id"))
POOL = (Pool, ("id", "pool_id", "sla_minutes"))

# ``stuck.stuck_trades`` with the page's filters and cursor; served by
# ``trade_reserved_age_idx`` (partial, status = 'reserved': written as a
# literal so the planner matches it), from the cursor on.
PAGE_SQL = f"""
SELECT {columns("t", *TRADE)}, {columns("o", *ORDER)}, {columns("pa", *PARTNER)},
       {columns("p", *POOL)}
  FROM records_trade t
  JOIN records_pool p ON p.id = t.pool_id
  JOIN records_order o ON o.id = t.order_id
  JOIN records_partner pa ON pa.id = o.partner_id
 WHERE t.status = 'reserved'
   AND t.reserved_at < %s::timestamptz - p.sla_minutes * interval '1 minute'
   {{where}}
 ORDER BY t.reserved_at, t.id
 LIMIT {{limit}}
"""  # noqa: S608 - table and column names from the models


def _partner(value, now):
    return ["pa.partner_id = %s"], [value]


def _pool(value, now):
    return ["p.pool_id = %s"], [value]


def _age(value, now):
    """``AgeBand.q``: age = now - reserved_at."""
    return BANDS[value].sql("t.reserved_at", now)


def _livemode(value, now):
    return ["t.livemode = %s"], [value == "live"]


# One condition per filter of ``StuckFilter``, each written here and given
# its value as a parameter. A filter missing here sends the page to the ORM
# (``page`` below), and the tests fail on it.
CONDITIONS = {"partner": _partner, "pool": _pool, "age": _age, "livemode": _livemode}
EMPTY = (None, "", [], (), {})  # django-filter's EMPTY_VALUES: no filter


def page_sql(data, after, size, now):
    """PAGE_SQL and its parameters (positional: ``pgtrigger.ignore`` prefixes
    a positional one to every statement) for the cleaned filters ``data``,
    ``size`` rows and one more."""
    where, params = [], [now]
    for name, condition in CONDITIONS.items():
        value = data.get(name)
        if value not in EMPTY:
            more, values = condition(value, now)
            where += more
            params += values
    if after is not None:
        # lib.paging.keyset_page, oldest first: the rows after the cursor in
        # (reserved_at, id) order, where the scan of trade_reserved_age_idx
        # starts. Compared as rows, and to a sub-select rather than to the
        # parameters themselves: shown the values, PostgreSQL costed every
        # deep page's plan from where its cursor falls and never settled on
        # the generic plan (0 of 595 loads on the 1 M set: planned afresh on
        # each, half the statement's time). Behind a sub-select the values
        # are unknown to every plan alike, so the generic one is kept after
        # five (390 of 395), and the plan is the same wherever the cursor
        # falls: the index range from it, stopped after one page.
        moment, pk = after
        where.append("(t.reserved_at, t.id) > (SELECT %s::timestamptz, %s::bigint)")
        params += [moment, pk]
    # The limit is written into the statement, not passed: with it a
    # parameter PostgreSQL planned the statement afresh on every page (a
    # generic plan's cost assumes a tenth of the rows), 0.4 of its 1.1 ms.
    # A page size is one of a few numbers (``paging.PageForm``).
    where = "".join(f"AND {each}\n   " for each in where)
    return PAGE_SQL.format(where=where, limit=int(size) + 1), params


_ORDER = Trade._meta.get_field("order")
_POOL = Trade._meta.get_field("pool")
_PARTNER = Order._meta.get_field("partner")


def page(filterset, after, size, now=None):
    """One keyset page of the stuck queue under ``filterset`` (valid), oldest
    first, and whether another follows: ``lib.paging.keyset_page`` of
    ``filterset.qs``, as one plain statement (``Listing.page``)."""
    from lib.paging import keyset_page

    if set(filterset.filters) - set(CONDITIONS):
        return keyset_page(filterset.qs, "reserved_at", after, size, oldest_first=True)
    sql, params = page_sql(filterset.form.cleaned_data, after, size, now or timezone.now())
    rows = []
    for trade, order, partner, pool in fetch(sql, params, TRADE, ORDER, PARTNER, POOL):
        # What select_related does: the related objects in the field caches.
        _PARTNER.set_cached_value(order, partner)
        _ORDER.set_cached_value(trade, order)
        _POOL.set_cached_value(trade, pool)
        rows.append(trade)
    return rows[:size], len(rows) > size


# --- beside each trade ----------------------------------------------------------------

POLL = (WebhookEvent, ("id", "event_id", "subject_id", "type", "created_at"))
HOLDER = (User, ("id", "username"))

# For the page's trades, one statement: what is kept beside each
# (``records.TradeNewest``, by ``ingest.newest``: the newest status read and
# the newest delivery attempt of any event 0Pools sent about it) and its
# claim with the user holding it, each a primary-key probe. Looking the
# newest read and delivery up here, per trade, was 1.1 of this statement's
# 1.5 ms at 10 M events (docs/decisions.md).
BESIDE_SQL = f"""
SELECT {columns("e", *POLL)}, {columns("a", DeliveryAttempt)}, {columns("c", Claim)},
       {columns("u", *HOLDER)}, t.transact_id
  FROM unnest(%s::text[], %s::bigint[]) AS t(transact_id, trade_id)
  LEFT JOIN {TradeNewest._meta.db_table} n ON n.trade_id = t.trade_id
  LEFT JOIN {WebhookEvent._meta.db_table} e ON e.id = n.poll_id
  LEFT JOIN {DeliveryAttempt._meta.db_table} a ON a.id = n.delivery_id
  LEFT JOIN {Claim._meta.db_table} c ON c.trade_id = t.trade_id
  LEFT JOIN {User._meta.db_table} u ON u.id = c.user_id
"""  # noqa: S608 - table and column names from the models


def beside(trades):
    """transact_id -> (last poll, last delivery attempt, claim with its
    ``user``), each None when there is none; one statement."""
    params = [[t.transact_id for t in trades], [t.pk for t in trades]]
    found = {}
    for poll, attempt, claim, user, transact_id in fetch(
        BESIDE_SQL, params, POLL, DeliveryAttempt, Claim, HOLDER, extra=("transact_id",)
    ):
        if claim is not None:
            claim.user = user
        found[transact_id] = (poll, attempt, claim)
    return found


def _times(moment):
    """``(lib.formats.datetime_attr, utc_text(zone=False))`` of one time, from
    one isoformat: ``2026-06-28T20:15:03.5+00:00`` -> ``2026-06-28 20:15:03``."""
    attr = moment.astimezone(UTC).isoformat()
    return attr, f"{attr[:10]} {attr[11:19]}"


def decorate(rows, now=None):
    """Give each trade of one page its age, times, links, holder, last poll and
    last delivery (``Listing.link``): one statement for the page, none per row."""
    if not rows:
        return
    now = now or timezone.now()
    found = beside(rows)
    claim_url, unclaim_url = linker("queues:claim"), linker("queues:unclaim")
    repoll_url, event_url = linker("actions:repoll"), linker("browse:event")
    nothing = (None, None, None)
    for trade in rows:
        transact_id = trade.transact_id
        order = trade.order
        trade.timeline = order_url(order.partner.partner_id, order.partner_reference)
        trade.claim_url = claim_url(transact_id)
        trade.unclaim_url = unclaim_url(transact_id)
        trade.repoll_url = repoll_url(transact_id)
        if trade.reserved_at:
            trade.age = duration(now - trade.reserved_at, smallest="min")
            # The row's times, written once here rather than by a date filter each.
            trade.reserved_attr, trade.reserved_text = _times(trade.reserved_at)
        else:
            trade.age = trade.reserved_attr = trade.reserved_text = ""
        trade.last_poll, trade.last_delivery, trade.holder = found.get(transact_id, nothing)
        for done, moment in (
            (trade.last_poll, trade.last_poll and trade.last_poll.created_at),
            (trade.last_delivery, trade.last_delivery and trade.last_delivery.attempted_at),
        ):
            if done is not None:
                done.url = event_url(done.event_id)
                done.ago = duration(now - moment, smallest="min")
                done.at_attr, done.at_text = _times(moment)
