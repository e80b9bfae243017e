"""The order and what ``build`` reads for it: eight plain statements (``lib.rawsql``
says why), each served by the index named beside it."""

from audit import log as audit
from audit.models import Entry
from lib.rawsql import columns, fetch, unseen
from records.models import (
    DeliveryAttempt,
    LedgerEntry,
    Order,
    Partner,
    Pool,
    Quote,
    StatusChange,
    Trade,
)
from records.models import WebhookEvent as Event


def _table(model):
    return model._meta.db_table


# records_order (partner_id, partner_reference) unique; the partner by its id.
ORDER = f"""
SELECT {columns("o", Order)}, {columns("p", Partner)}
  FROM {_table(Order)} o JOIN {_table(Partner)} p ON p.id = o.partner_id
 WHERE p.partner_id = %s AND o.partner_reference = %s
"""  # noqa: S608 - table and column names from the models; values are parameters
# records_trade.order_id (FK index); the pool for its SLA and id.
TRADES = f"""
SELECT {columns("t", Trade)}, {columns("p", Pool)}
  FROM {_table(Trade)} t JOIN {_table(Pool)} p ON p.id = t.pool_id
 WHERE t.order_id = %s
 ORDER BY t.created_at, t.id
"""  # noqa: S608 - table and column names from the models; values are parameters
# records_quote.order_id (FK index)
QUOTES = f"""
SELECT {columns("q", Quote)} FROM {_table(Quote)} q
 WHERE q.order_id = %s ORDER BY q.created_at, q.id
"""  # noqa: S608 - table and column names from the models; values are parameters
# event_order_time_idx (order_id, created_at), newest first, in one
# statement: the events 0Pools sent and our status reads each under their
# own cap, so that days of scheduled re-polls never push the quote, the
# trade's first status or the ledger off the timeline.
EVENTS = f"""
(SELECT {columns("e", Event)}, 0 FROM {_table(Event)} e
  WHERE e.order_id = %(order)s AND e.source <> %(poll)s
  ORDER BY e.created_at DESC, e.id DESC LIMIT %(limit)s)
UNION ALL
(SELECT {columns("e", Event)}, 1 FROM {_table(Event)} e
  WHERE e.order_id = %(order)s AND e.source = %(poll)s
  ORDER BY e.created_at DESC, e.id DESC LIMIT %(limit)s)
"""  # noqa: S608 - table and column names from the models; values are parameters
# The next three find rows by a list of the order's ids, unseen by the
# plan (``lib.rawsql.unseen``): shown a list of one or two ids, PostgreSQL
# costed each call's plan below the generic plan, which assumes a longer
# list, and planned every timeline afresh, three times
# (pg_prepared_statements on the 1 M set: 0 generic plans in 25 loads).
#
# status_trade_time_idx (trade_id, upstream_at, id)
CHANGES = f"""
SELECT {columns("c", StatusChange)} FROM {_table(StatusChange)} c
 WHERE c.trade_id = ANY({unseen("bigint[]")}) ORDER BY c.upstream_at, c.id
"""  # noqa: S608 - table and column names from the models; values are parameters
# records_ledgerentry.transact_id index
LEDGER = f"""
SELECT {columns("l", LedgerEntry)} FROM {_table(LedgerEntry)} l
 WHERE l.transact_id = ANY({unseen("text[]")}) ORDER BY l.posted_at, l.id
"""  # noqa: S608 - table and column names from the models; values are parameters
# records_deliveryattempt.event_id index
DELIVERIES = f"""
SELECT {columns("d", DeliveryAttempt)} FROM {_table(DeliveryAttempt)} d
 WHERE d.event_id = ANY({unseen("text[]")}) ORDER BY d.attempted_at, d.id
"""  # noqa: S608 - table and column names from the models; values are parameters
# audit_order_idx (order_id, at), newest first, in one statement: what
# people did and what the schedule did (a re-poll every few minutes), each
# under their own cap.
ENTRIES = f"""
(SELECT {columns("a", Entry)}, 0 FROM {_table(Entry)} a
  WHERE a.order_id = %(order)s AND NOT (a.actor_id IS NULL AND a.actor_name = %(schedule)s)
  ORDER BY a.at DESC, a.id DESC LIMIT %(limit)s)
UNION ALL
(SELECT {columns("a", Entry)}, 1 FROM {_table(Entry)} a
  WHERE a.order_id = %(order)s AND a.actor_id IS NULL AND a.actor_name = %(schedule)s
  ORDER BY a.at DESC, a.id DESC LIMIT %(limit)s)
"""  # noqa: S608 - table and column names from the models; values are parameters


def order(partner_id, reference):
    """The order ``reference`` of partner ``partner_id``, its partner loaded; or None."""
    for found, partner in fetch(ORDER, [partner_id, reference], Order, Partner):
        found.partner = partner
        return found
    return None


def trades(order):
    found = []
    for trade, pool in fetch(TRADES, [order.pk], Trade, Pool):
        trade.pool = pool
        found.append(trade)
    return found


def quotes(order):
    return [quote for (quote,) in fetch(QUOTES, [order.pk], Quote)]


def events(order, most):
    """The newest ``most`` received events and status reads each, newest
    first, and whether either had more. Payloads stay text (``items.event_data``)."""
    rows = fetch(
        EVENTS,
        {"order": order.pk, "poll": Event.Source.POLL, "limit": most + 1},
        Event,
        extra=("branch",),
        raw=("payload",),
    )
    return _capped(rows, most, lambda event: (event.created_at, event.pk))


def changes(trades):
    by_pk = {trade.pk: trade for trade in trades}
    found = [change for (change,) in fetch(CHANGES, [list(by_pk)], StatusChange)]
    for change in found:
        change.trade = by_pk[change.trade_id]
    return found


def ledger(transact_ids):
    return [entry for (entry,) in fetch(LEDGER, [list(transact_ids)], LedgerEntry)]


def deliveries(event_ids):
    return [attempt for (attempt,) in fetch(DELIVERIES, [list(event_ids)], DeliveryAttempt)]


def entries(order, most):
    """The newest ``most`` audit entries by people and by the schedule each,
    newest first, and whether either had more."""
    rows = fetch(
        ENTRIES,
        {"order": order.pk, "schedule": audit.SCHEDULE, "limit": most + 1},
        Entry,
        extra=("branch",),
    )
    return _capped(rows, most, lambda entry: (entry.at, entry.pk))


def _capped(rows, most, newest):
    kept, cut = [], False
    for branch in (0, 1):
        mine = sorted((row for row, n in rows if n == branch), key=newest, reverse=True)
        kept += mine[:most]
        cut = cut or len(mine) > most
    return kept, cut
