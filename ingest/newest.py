"""What the stuck queue shows beside a trade, kept (``records.TradeNewest``).

``keep`` folds into each trade's row the newest of what a transaction
brought: status reads (``poll`` events), delivery attempts, and events that
0Pools sent about a trade after their attempts were reported (a report can
arrive before the event it reports on). It is one statement, inserting in
trade id order, so two transactions that keep the same trades lock their
rows in one order; call it once a transaction. A row only ever takes a
newer value, by (time, id), so whichever transaction commits first, the
rows end as if everything had come one by one.

A report and the event it reports on applied at the same moment by two
workers see neither the other: the report waits for its order, and
whatever links it later (a batch's ``link_late_arrivals``, or the sweep's
``relink_waiting``) keeps its attempt here then (``ingest.linking``).
"""

from psycopg.sql import SQL

from records.models import DeliveryAttempt, Trade, TradeNewest, WebhookEvent

from .sql import Insert, execute, table

NEWEST_INSERT = Insert(
    TradeNewest, ("trade_id", "poll_id", "poll_at", "delivery_id", "delivery_at")
)


def _newer(kind):
    """The stored value stays unless the incoming one is newer by (time, id)."""
    return (
        f"EXCLUDED.{kind}_at IS NOT NULL AND (n.{kind}_at IS NULL"
        f" OR (EXCLUDED.{kind}_at, EXCLUDED.{kind}_id) > (n.{kind}_at, n.{kind}_id))"
    )


_TAKE_NEWER = SQL(", ").join(
    SQL(
        f"{kind}_{column} = CASE WHEN {_newer(kind)} THEN EXCLUDED.{kind}_{column}"
        f" ELSE n.{kind}_{column} END"
    )  # fmt: skip
    for kind in ("poll", "delivery")
    for column in ("id", "at")
)

# The newest per trade of what is given (``polls``, ``deliveries``), then
# one upsert of both. A delivery is an attempt at an event whose subject is
# the trade, sent by 0Pools (not one of our ``poll`` events).
_KEEP = """
WITH polls AS (
    SELECT DISTINCT ON (t.id) t.id AS trade_id, e.id, e.created_at AS at
      FROM {events} e JOIN {trades} t ON t.transact_id = e.subject_id
     WHERE {polls} AND e.source = 'poll'
     ORDER BY t.id, e.created_at DESC, e.id DESC
), attempts AS (
    {attempts}
), deliveries AS (
    SELECT DISTINCT ON (t.id) t.id AS trade_id, a.id, a.attempted_at AS at
      FROM attempts a
      JOIN {events} e ON e.event_id = a.event_id AND e.source <> 'poll'
      JOIN {trades} t ON t.transact_id = e.subject_id
     ORDER BY t.id, a.attempted_at DESC, a.id DESC
)
INSERT INTO {newest} AS n ({columns})
SELECT COALESCE(p.trade_id, d.trade_id), p.id, p.at, d.id, d.at
  FROM polls p FULL JOIN deliveries d ON d.trade_id = p.trade_id
 ORDER BY 1
ON CONFLICT (trade_id) DO UPDATE SET {take_newer}
"""
_TABLES = {
    "events": table(WebhookEvent),
    "trades": table(Trade),
    "newest": NEWEST_INSERT.table,
    "columns": NEWEST_INSERT.names,
    "take_newer": _TAKE_NEWER,
}
# Given: poll event pks, attempt pks, and the public ids of events sent about
# trades (whose attempts may have been stored before them).
KEEP_SQL = SQL(_KEEP).format(
    polls=SQL("e.id = ANY(%b)"),
    attempts=SQL("""
    SELECT id, event_id, attempted_at FROM {attempts} WHERE id = ANY(%b)
    UNION
    SELECT id, event_id, attempted_at FROM {attempts} WHERE event_id = ANY(%b)
    """).format(attempts=table(DeliveryAttempt)),
    **_TABLES,
)
# Every trade from every event and attempt stored: the migration that made
# the table, and the bench's data set (built by COPY, not the pipeline).
EVERY_TRADE_SQL = SQL(_KEEP).format(
    polls=SQL("true"),
    attempts=SQL("SELECT id, event_id, attempted_at FROM {attempts}").format(
        attempts=table(DeliveryAttempt)
    ),
    **_TABLES,
)


def keep(polls=(), attempts=(), sent=()):
    """Keep the newest of ``polls`` (pks of ``poll`` events), ``attempts``
    (pks of delivery attempts) and the attempts already stored for ``sent``
    (public ids of events 0Pools sent) on their trades' rows; one statement."""
    if polls or attempts or sent:
        execute(KEEP_SQL, [list(polls), list(attempts), list(sent)])
