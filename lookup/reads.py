"""The search box's statements (``lib.rawsql``: the ORM took several times
the queries' own time to build them), each served by the index named
beside it; ``search`` decides which to send."""

from lib.rawsql import columns, fetch, unseen
from records.models import Identifier, Order, Partner, Trade

MAX_MATCHES = 50
# Ids a ticket may resolve to, all orders together.
MAX_TICKET_MATCHES = MAX_MATCHES * 4

# One statement answers the search box for one value (or a ticket's
# values): the identifiers, each with its order and the order's partner,
# in ``value, kind`` order. Of the order and its partner only what
# the results page and the redirect use (the rest deferred, as ``.only()``
# leaves it): each timestamp read is parsed in Python.
ORDER_COLUMNS = ("id", "partner", "partner_reference", "livemode", "last_activity_at")
PARTNER_COLUMNS = ("id", "partner_id")
PAGE_SQL = f"""
SELECT {columns("i", Identifier)}, {columns("o", Order, ORDER_COLUMNS)},
       {columns("p", Partner, PARTNER_COLUMNS)}
  FROM records_identifier i
  LEFT JOIN records_order o ON o.id = i.order_id
  LEFT JOIN records_partner p ON p.id = o.partner_id
 WHERE {{match}}
 ORDER BY i.value, i.kind
 LIMIT {{limit}}
"""  # noqa: S608 - column names from the models; the values are parameters
# The limit is written into each statement, not passed: given as a
# parameter, the generic plan's cost assumed a tenth of the table's rows,
# and PostgreSQL planned every call afresh rather than keep it (0.3 ms a
# call, three times the statement's own time).
PAGE = MAX_MATCHES + 1  # one more than a page: is there more?
EXACT_SQL = PAGE_SQL.format(match="i.value = %s", limit=PAGE)
# Every value from the first parameter up to (not including) the second:
# in collation "C" (byte order) those are the values starting with the
# first, the range PostgreSQL itself scans for ``LIKE 'prefix%'``. With
# bounds no plan sees (``lib.rawsql.unseen``) the statement has one plan
# whatever the values: ``LIKE $1`` was planned again on every call (the
# index range comes from the pattern's value), and so would bounds the
# plans could see.
RANGE_SQL = PAGE_SQL.format(
    match=f"i.value >= {unseen('text')} AND i.value < {unseen('text')}", limit=PAGE
)
TOKENS_SQL = PAGE_SQL.format(match="i.value = ANY(%s::text[])", limit=MAX_TICKET_MATCHES + 1)
MODELS = (Identifier, (Order, ORDER_COLUMNS), (Partner, PARTNER_COLUMNS))

# The newest trade of each order a list shows (its status), by
# records_trade.order_id: only for a list, as the redirect of one exact id
# shows none (in the look-up's statement, each id read its order's trade:
# 4x the bare statement's time on the 10 M set, its pages mostly not in
# memory). The orders are unseen by the plan, so the statement keeps one.
TRADE_COLUMNS = ("id", "order", "status", "status_at")
NEWEST_TRADES_SQL = f"""
SELECT DISTINCT ON (t.order_id) {columns("t", Trade, TRADE_COLUMNS)}
  FROM records_trade t
 WHERE t.order_id = ANY({unseen("bigint[]")})
 ORDER BY t.order_id, t.created_at DESC, t.id DESC
"""  # noqa: S608 - column names from the models; the values are parameters


def identifiers(sql, params):
    """The identifiers ``sql`` (``PAGE_SQL`` with its condition) finds, each
    with its ``order`` and the order's ``partner``."""
    found = []
    for ident, order, partner in fetch(sql, params, *MODELS):
        if order is not None:
            order.partner = partner
        ident.order = order
        found.append(ident)
    return found


def attach_newest_trades(hits):
    """Each hit's ``trade``: its order's newest, or None; one statement."""
    if not hits:
        return
    newest = {
        trade.order_id: trade
        for (trade,) in fetch(
            NEWEST_TRADES_SQL, [[hit.order.pk for hit in hits]], (Trade, TRADE_COLUMNS)
        )
    }
    for hit in hits:
        hit.trade = newest.get(hit.order.pk)


def successor(prefix):
    """The least string above every string that starts with ``prefix``, in
    code point order (collation "C" compares UTF-8 bytes, which sort as
    their code points): ``"evt_Zi"`` -> ``"evt_Zj"``. None when there is
    none (``prefix`` is all U+10FFFF)."""
    while prefix:
        code = ord(prefix[-1]) + 1
        if code == 0xD800:  # surrogates are not characters: step over them
            code = 0xE000
        if code <= 0x10FFFF:
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None
