"""Trades through the state machine (``records.states``).

Every trade event of a batch is an observation of a status. Each is
classified against the status the trade has; applied or not, it is kept as
a ``StatusChange`` so the timeline shows what arrived and what was done
with it.

A trade's moves are always those of its events taken in arrival order (the
order they were stored in), whatever order workers apply them in: when a
batch brings an event that arrived before one already applied (a backlog
after an outage, the sweep racing the re-sent tasks), the trade's moves are
recorded again from all its events in arrival order. So "late" means the
event reached the panel after a newer status, never that a worker got to it
after one.
"""

import orjson
from django.utils import timezone
from psycopg.sql import SQL

from records import states
from records.models import StatusChange, Trade, WebhookEvent

from .contract import parse_amount, parse_decimal, parse_envelope, parse_optional_time, parse_time
from .sql import Insert, Update, execute, names, table

# Fixed fields of a trade, newest upstream view wins; order_id (first) is
# set once: a trade never moves to another order.
TRADE_COLUMNS = (
    ("order_id", "bigint"),
    ("pool_id", "bigint"),
    ("quote_id", "text"),
    ("livemode", "bool"),
    ("side", "text"),
    ("network", "text"),
    ("amount_value", "numeric"),
    ("amount_currency", "text"),
    ("deliver_value", "numeric"),
    ("deliver_currency", "text"),
    ("rate", "numeric"),
    ("fee_bps", "int"),
    ("idempotency_key", "text"),
    ("request_id", "text"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)
_FIXED = tuple(name for name, _ in TRADE_COLUMNS)


def _newest(name):
    """Set a fixed field from the batch's view only when that view is not older
    than the stored one: a late ``trade.reserved`` must not blank the
    ``deliverAmount`` a ``trade.settled`` brought."""
    if name == "updated_at":
        return "GREATEST(t.updated_at, s.updated_at)"
    return f"CASE WHEN s.updated_at >= t.updated_at THEN s.{name} ELSE t.{name} END"


TRADE_INSERT = Insert(Trade, ("transact_id", "status", "status_at", "failure_code", *_FIXED))
TRADE_MOVE = Update(
    Trade,
    (
        ("status", "u.status"),
        ("status_at", "u.status_at"),
        ("failure_code", "u.failure_code"),
        ("reserved_at", "u.reserved_at"),
        ("final_at", "u.final_at"),
        *((name, _newest(name)) for name in _FIXED[1:]),
    ),
)
STATUS_CHANGE_INSERT = Insert(
    StatusChange,
    (
        "trade_id",
        "from_status",
        "to_status",
        "upstream_at",
        "recorded_at",
        "source",
        "event_id",
        "outcome",
        "note",
    ),
)


def apply_trades(trades, order_pk, pool_pk):
    """Upsert trades, run each observation through the state machine.

    ``trades`` is ``{transact id: [(event pk, source, Envelope)]}``, in the
    order the events were stored. New trades are inserted with an empty
    status first so that every trade of the batch can then be locked
    (``FOR UPDATE``, in id order so two workers never deadlock) and moved
    from the status it really has, or, when an event of the trade that
    arrived later is applied already, recorded again from all its events in
    arrival order (``_arrived_out_of_order``). Returns {transact id: order
    pk} and the pks of the events that recorded a status (a
    ``StatusChange``); an observation of the status the trade already has
    records nothing.
    """
    if not trades:
        return {}, set()
    ids = sorted(trades)
    static = {}
    for transact_id in ids:
        newest = max(trades[transact_id], key=lambda obs: _static_key(obs[2]))
        static[transact_id] = _static(newest[2], order_pk, pool_pk)
    fixed = names(_FIXED)
    casts = SQL(", ").join(SQL(f"%b::{kind}[]") for _, kind in TRADE_COLUMNS)
    columns = [list(col) for col in zip(*(static[i] for i in ids), strict=True)]
    new = {
        tid
        for (tid,) in execute(
            SQL("""
            INSERT INTO {table} ({columns})
            SELECT t.transact_id, '', t.created_at, '', {fixed}
              FROM unnest(%b::text[], {casts}) AS t(transact_id, {fixed})
            ON CONFLICT (transact_id) DO NOTHING
            RETURNING transact_id
            """).format(
                table=TRADE_INSERT.table, columns=TRADE_INSERT.names, fixed=fixed, casts=casts
            ),
            [ids, *columns],
        )
    }
    current = {
        tid: [pk, status or None, status_at, failure_code, reserved_at, final_at]
        for pk, tid, status, status_at, failure_code, reserved_at, final_at in execute(
            SQL("""
            SELECT id, transact_id, status, status_at, failure_code, reserved_at, final_at
              FROM {table} WHERE transact_id = ANY(%b) ORDER BY id FOR UPDATE
            """).format(table=table(Trade)),
            [ids],
        )
    }
    now = timezone.now()
    refold = _arrived_out_of_order({tid: trades[tid] for tid in ids if tid not in new})
    changes = []
    for transact_id in ids:
        row = current[transact_id]
        if transact_id in refold:
            # Start again from no status and go through every event of the
            # trade in arrival order, as if none had been applied yet.
            row[1], row[3], row[4], row[5] = None, "", None, None
            changes += _fold(row, *refold[transact_id], now)
        else:
            changes += _fold(row, trades[transact_id], {}, now)
    execute(
        SQL("""
        UPDATE {table} t SET {move}
          FROM unnest(%b::bigint[], %b::text[], %b::timestamptz[], %b::text[],
                      %b::timestamptz[], %b::timestamptz[])
               AS u(id, status, status_at, failure_code, reserved_at, final_at),
               unnest(%b::text[], {casts}) AS s(transact_id, {fixed})
         WHERE t.id = u.id AND t.transact_id = s.transact_id
        """).format(table=TRADE_MOVE.table, move=TRADE_MOVE.set, casts=casts, fixed=fixed),
        [
            [current[i][0] for i in ids],
            [current[i][1] for i in ids],
            [current[i][2] for i in ids],
            [current[i][3] for i in ids],
            [current[i][4] for i in ids],
            [current[i][5] for i in ids],
            ids,
            *columns,
        ],
    )
    if changes:
        execute(
            SQL("""
            INSERT INTO {table} ({columns})
            SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::timestamptz[],
                   %b::timestamptz[], %b::text[], %b::bigint[], %b::text[], %b::text[])
            """).format(table=STATUS_CHANGE_INSERT.table, columns=STATUS_CHANGE_INSERT.names),
            [list(col) for col in zip(*changes, strict=True)],
        )
    recorded = {change[6] for change in changes}  # STATUS_CHANGE_INSERT's event_id
    return {tid: static[tid][0] for tid in ids}, recorded


def _fold(row, observations, recorded_at, now):
    """Run ``observations`` (``[(event pk, source, Envelope)]``, in arrival
    order) through the state machine from ``row`` (``[pk, status, status_at,
    failure_code, reserved_at, final_at]``, moved in place); return the
    ``StatusChange`` rows they record (``STATUS_CHANGE_INSERT``'s columns).
    ``recorded_at`` keeps, by event pk, when a move was first recorded."""
    changes = []
    for event_pk, source, envelope in observations:
        claimed = envelope.data["status"]
        at = _observed_at(envelope)
        reserved = _reserved_at(envelope)
        if reserved and (row[4] is None or reserved < row[4]):
            row[4] = reserved
        outcome = states.classify(row[1], claimed, authoritative=source == "poll")
        if outcome == states.REPEAT:
            continue
        note = ""
        if outcome == states.LATE:
            note = f"{claimed} arrived after {row[1]}; kept {row[1]}"
        elif outcome == states.ILLEGAL:
            note = f"{row[1]} → {claimed} is not a legal move; kept {row[1]}"
        elif outcome == states.OVERRIDE:
            note = f"{row[1]} → {claimed} is not a legal move; the status read is authoritative"
        changes.append(
            (
                row[0],
                row[1] or "",
                claimed,
                at,
                recorded_at.get(event_pk, now),
                source,
                event_pk,
                outcome,
                note,
            )
        )
        if outcome in (states.APPLIED, states.OVERRIDE):
            row[1], row[2] = claimed, at
            row[3] = envelope.data.get("failureCode") or ""
        # The settlement clock stops at the first final status, even one
        # that arrived late (settled after returned).
        if outcome != states.ILLEGAL and claimed in states.FINAL_STATUSES:
            row[5] = at if row[5] is None else min(row[5], at)
    return changes


def _arrived_out_of_order(trades):
    """The trades of ``{transact id: [(event pk, source, Envelope)]}`` that have
    an event already applied which reached the panel after one of this
    batch's: ``{transact id: (every event of the trade in arrival order,
    {event pk: recorded_at})}``. Their recorded moves are deleted here; the
    caller records them again, in arrival order.

    Arrival order is the order the events were stored in: their id, which
    PostgreSQL's sequence hands out as each is stored (``received_at`` is a
    clock reading of the same moment, and a clock can step back). The trade
    rows are locked (``FOR UPDATE``), so no other worker moves them meanwhile.
    """
    pairs = [(tid, pk) for tid, observations in trades.items() for pk, _, _ in observations]
    if not pairs:
        return {}
    events = table(WebhookEvent)
    behind = [
        tid
        for (tid,) in execute(
            SQL("""
            SELECT DISTINCT b.transact_id
              FROM unnest(%b::text[], %b::bigint[]) AS b(transact_id, id)
             WHERE EXISTS (
                   SELECT 1 FROM {events} e
                    WHERE e.subject_id = b.transact_id AND e.type LIKE 'trade.%%'
                      AND e.state = 'processed'
                      AND e.id > b.id)
            """).format(events=events),
            [[tid for tid, _ in pairs], [pk for _, pk in pairs]],
        )
    ]
    if not behind:
        return {}
    # The batch's own events are not processed yet: they join the history here.
    history = {tid: list(trades[tid]) for tid in behind}
    for pk, subject, source, payload in execute(
        SQL("""
        SELECT id, subject_id, source, payload FROM {events}
         WHERE subject_id = ANY(%b) AND type LIKE 'trade.%%' AND state = 'processed'
        """).format(events=events),
        [behind],
    ):
        # Django has psycopg hand jsonb over as text.
        history[subject].append((pk, source, parse_envelope(orjson.loads(payload))))
    for observations in history.values():
        observations.sort(key=lambda obs: obs[0])
    recorded_at = dict(
        execute(
            SQL("""
            DELETE FROM {changes} c USING {trades} t
             WHERE c.trade_id = t.id AND t.transact_id = ANY(%b)
            RETURNING c.event_id, c.recorded_at
            """).format(changes=table(StatusChange), trades=table(Trade)),
            [behind],
        )
    )
    return {tid: (history[tid], recorded_at) for tid in behind}


def _observed_at(envelope):
    """Upstream time of the status a trade event claims."""
    data = envelope.data
    for entry in reversed(data.get("statusHistory") or ()):
        if entry["status"] == data["status"]:
            return parse_time(entry["at"])
    return parse_optional_time(data.get("updatedAt")) or envelope.created_at


def _reserved_at(envelope):
    data = envelope.data
    for entry in data.get("statusHistory") or ():
        if entry["status"] == states.RESERVED:
            return parse_time(entry["at"])
    if data["status"] == states.RESERVED:
        return _observed_at(envelope)
    return None


def _static_key(envelope):
    return (
        parse_optional_time(envelope.data.get("updatedAt")) or envelope.created_at,
        envelope.created_at,
    )


def _static(envelope, order_pk, pool_pk):
    """The trade's fixed fields as this event sees them, in ``TRADE_COLUMNS`` order."""
    d = envelope.data
    value, currency = parse_amount(d, "amount")
    deliver_value, deliver_currency = parse_amount(d, "deliverAmount")
    return (
        order_pk[(d["partnerId"], d["partnerReference"])],
        pool_pk[d["poolId"]],
        d.get("quoteId") or "",
        envelope.livemode,
        d["side"],
        d["network"],
        value,
        currency,
        deliver_value,
        deliver_currency,
        parse_decimal(d.get("rate")),
        d.get("feeBps"),
        d.get("idempotencyKey") or "",
        d.get("requestId") or "",
        parse_time(d["createdAt"]),
        parse_optional_time(d.get("updatedAt")) or envelope.created_at,
    )
