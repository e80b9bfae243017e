"""Every 0Pools record the panel keeps.

Rows reference each other by the contract's public ids (``transact_id``,
``quote_id``, ``event_id``) where the other side may arrive later: a ledger
entry for a trade we have not seen yet is kept as it is and joins the trade
by its ``transact_id`` when the trade arrives. Nothing here stores a field
that the contract does not name (see ``ingest.contract``).

Who writes them, and nothing else does:

- ``ingest.pipeline``: every 0Pools record (partners, pools, orders, quotes,
  trades and their status changes, events, ledger entries, the delivery
  attempts 0Pools reports, the identifier index, what the stuck queue shows
  beside a trade);
- ``ingest.refusals``: ``RejectedDelivery``, a webhook request refused;
- ``actions.services.record_replay_attempt``: the ``DeliveryAttempt`` of a
  replay the panel sent (and the ``TradeNewest`` it changes);
- ``partners.services``: a ``Partner`` an admin creates before 0Pools sent
  it, and the ``DeliveryAttempt`` of a test ping;
- ``queues.services.set_pool_sla``: a pool's ``sla_minutes``.
"""

from urllib.parse import quote, urlencode

import pgtrigger
from django.db import models
from django.db.models import BooleanField, Expression, F, Q

from . import states
from .links import link
from .querysets import DeliveryAttemptQuerySet, PartnerQuerySet

# Ids are case-sensitive and searched by prefix: "C" collation makes
# `LIKE 'prefix%'` and `=` use a plain btree index, no UPPER(), no ICU.
ID_COLLATION = "C"


class Partner(models.Model):
    partner_id = models.CharField(max_length=44, unique=True, db_collation=ID_COLLATION)
    name = models.CharField(max_length=200, blank=True)
    first_seen = models.DateTimeField(auto_now_add=True)

    objects = PartnerQuerySet.as_manager()

    class Meta:
        ordering = ["partner_id"]

    def __str__(self):
        return self.partner_id


class Pool(models.Model):
    pool_id = models.CharField(max_length=21, unique=True, db_collation=ID_COLLATION)
    sla_minutes = models.PositiveIntegerField(
        default=15,
        help_text="Minutes after which a reserved trade in this pool counts as stuck.",
    )

    class Meta:
        ordering = ["pool_id"]

    def __str__(self):
        return self.pool_id


class Order(models.Model):
    """One partner order: the subject of a timeline."""

    # No index of its own: order_unique_partner_reference leads with it.
    partner = models.ForeignKey(
        Partner, on_delete=models.PROTECT, related_name="orders", db_index=False
    )
    partner_reference = models.CharField(max_length=128, db_collation=ID_COLLATION)
    livemode = models.BooleanField()
    first_seen_at = models.DateTimeField(help_text="Upstream time of the first record seen.")
    # Latest upstream activity; the orders list sorts on it.
    last_activity_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["partner", "partner_reference"], name="order_unique_partner_reference"
            )
        ]

    def __str__(self):
        return f"{self.partner.partner_id}/{self.partner_reference}"

    def get_absolute_url(self):
        return order_url(self.partner.partner_id, self.partner_reference)


def order_url(partner_id, reference):
    """An order's timeline, from its two public ids (no query for the order).

    The partner order id is the partner's free text, encoded so that every
    character survives and none shapes the address: "/" too, so the id is
    one path segment and "../" in it cannot climb to another page. An id
    that is a dot segment by itself ("." or "..") is resolved away by every
    browser, encoded or not, so it goes in the query string instead.
    """
    partner = link("timeline:order_by_reference", partner_id)
    if reference in (".", ".."):
        return f"{partner}?{urlencode({'reference': reference})}"
    return f"{partner}{quote(reference, safe='')}/"


class Quote(models.Model):
    class Status(models.TextChoices):
        CREATED = "created"
        UNAVAILABLE = "unavailable"
        EXPIRED = "expired"
        ACCEPTED = "accepted"

    quote_id = models.CharField(max_length=48, unique=True, db_collation=ID_COLLATION)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="quotes")
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="+")
    livemode = models.BooleanField()
    status = models.CharField(max_length=12, choices=Status.choices)
    side = models.CharField(max_length=4)
    network = models.CharField(max_length=40)
    amount_value = models.DecimalField(max_digits=38, decimal_places=18)
    amount_currency = models.CharField(max_length=12)
    available = models.BooleanField()
    quote_type = models.CharField(max_length=20, blank=True)
    executable = models.BooleanField(null=True)
    rate = models.DecimalField(max_digits=38, decimal_places=18, null=True)
    spread_bps = models.IntegerField(null=True)
    fee_bps = models.IntegerField(null=True)
    request_id = models.CharField(max_length=44, blank=True, db_collation=ID_COLLATION)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True)
    accepted_at = models.DateTimeField(null=True)
    expired_at = models.DateTimeField(null=True)

    def __str__(self):
        return self.quote_id


def _reserved_kept_sql(*, plus, minus):
    """The trigger body that moves the kept counts of reserved trades by what
    one statement on ``records_trade`` did: +1 for each row reserved after it
    (``plus``), -1 for each row reserved before it (``minus``). A row that
    stays reserved in the same minute cancels out and touches nothing.

    Counter rows are changed in (minute, pool, partner, mode) order, so two
    statements never wait on each other's rows in opposite orders.
    """

    def reserved_in(table, sign):
        return (
            f"SELECT r.pool_id, o.partner_id, r.livemode,"  # noqa: S608 - constant text
            f" date_trunc('minute', r.reserved_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
            f" AS minute, {sign}1 AS n"
            f" FROM {table} r JOIN records_order o ON o.id = r.order_id"
            " WHERE r.status = 'reserved' AND r.reserved_at IS NOT NULL"
        )

    moved = " UNION ALL ".join(
        reserved_in(table, sign) for table, sign in ((plus, "+"), (minus, "-")) if table
    )
    cleanup = ""
    if minus:
        cleanup = (
            "DELETE FROM records_reservedminute m USING ("  # noqa: S608 - constant text
            f" SELECT DISTINCT pool_id, partner_id, livemode, minute"
            f" FROM ({reserved_in(minus, '-')}) gone) d"
            " WHERE m.pool_id = d.pool_id AND m.partner_id = d.partner_id"
            " AND m.livemode = d.livemode AND m.minute = d.minute AND m.trades = 0;"
        )
    return (
        "INSERT INTO records_reservedminute (pool_id, partner_id, livemode, minute, trades)"  # noqa: S608
        f" SELECT pool_id, partner_id, livemode, minute, sum(n) FROM ({moved}) moved"
        " GROUP BY pool_id, partner_id, livemode, minute HAVING sum(n) <> 0"
        " ORDER BY minute, pool_id, partner_id, livemode"
        " ON CONFLICT (minute, pool_id, partner_id, livemode) DO UPDATE"
        " SET trades = records_reservedminute.trades + EXCLUDED.trades;"
        "INSERT INTO records_reservedtotal (pool_id, partner_id, livemode, trades)"
        f" SELECT pool_id, partner_id, livemode, sum(n) FROM ({moved}) moved"
        " GROUP BY pool_id, partner_id, livemode HAVING sum(n) <> 0"
        " ORDER BY pool_id, partner_id, livemode"
        " ON CONFLICT (pool_id, partner_id, livemode) DO UPDATE"
        " SET trades = records_reservedtotal.trades + EXCLUDED.trades;"
        f"{cleanup}"
        "RETURN NULL;"
    )


class Trade(models.Model):
    Status = models.TextChoices("Status", [(s.upper(), s) for s in states.STATUSES])

    transact_id = models.CharField(max_length=48, unique=True, db_collation=ID_COLLATION)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="trades")
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="+")
    quote_id = models.CharField(max_length=48, blank=True, db_collation=ID_COLLATION)
    livemode = models.BooleanField()
    status = models.CharField(max_length=10, choices=Status.choices)
    # Upstream time of the current status.
    status_at = models.DateTimeField()
    failure_code = models.CharField(max_length=64, blank=True)
    side = models.CharField(max_length=4)
    network = models.CharField(max_length=40)
    amount_value = models.DecimalField(max_digits=38, decimal_places=18)
    amount_currency = models.CharField(max_length=12)
    deliver_value = models.DecimalField(max_digits=38, decimal_places=18, null=True)
    deliver_currency = models.CharField(max_length=12, blank=True)
    rate = models.DecimalField(max_digits=38, decimal_places=18, null=True)
    fee_bps = models.IntegerField(null=True)
    idempotency_key = models.CharField(max_length=255, blank=True, db_collation=ID_COLLATION)
    request_id = models.CharField(max_length=44, blank=True, db_collation=ID_COLLATION)
    # Settlement clock: reserved -> final (upstream times, from statusHistory).
    reserved_at = models.DateTimeField(null=True)
    final_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [
            # The stuck-reserved queue: WHERE status = 'reserved' ORDER BY reserved_at.
            models.Index(
                fields=["reserved_at", "id"],
                condition=Q(status="reserved"),
                name="trade_reserved_age_idx",
            ),
            # The trades list (browse): ORDER BY created_at DESC, id DESC LIMIT n,
            # keyset: WHERE created_at <= %s AND (created_at < %s OR id < %s).
            models.Index(fields=["created_at", "id"], name="trade_created_idx"),
            # The daily close (reconciliation): the trades whose current status
            # happened in a day, WHERE status_at >= %s AND status_at < %s.
            models.Index(fields=["status_at", "id"], name="trade_status_at_idx"),
        ]
        # The stuck queue's age histogram, kept (ReservedMinute, ReservedTotal):
        # one trigger per operation (PostgreSQL allows transition tables on
        # one event only), each statement-level, so a batch of the import
        # changes each counter row once.
        triggers = [
            pgtrigger.Trigger(
                name="trade_reserved_kept_insert",
                operation=pgtrigger.Insert,
                level=pgtrigger.Statement,
                when=pgtrigger.After,
                referencing=pgtrigger.Referencing(new="new_rows"),
                func=_reserved_kept_sql(plus="new_rows", minus=None),
            ),
            pgtrigger.Trigger(
                name="trade_reserved_kept_update",
                operation=pgtrigger.Update,
                level=pgtrigger.Statement,
                when=pgtrigger.After,
                referencing=pgtrigger.Referencing(old="old_rows", new="new_rows"),
                func=_reserved_kept_sql(plus="new_rows", minus="old_rows"),
            ),
            pgtrigger.Trigger(
                name="trade_reserved_kept_delete",
                operation=pgtrigger.Delete,
                level=pgtrigger.Statement,
                when=pgtrigger.After,
                referencing=pgtrigger.Referencing(old="old_rows"),
                func=_reserved_kept_sql(plus=None, minus="old_rows"),
            ),
        ]

    def __str__(self):
        return self.transact_id


class TradeNewest(models.Model):
    """What the stuck queue shows beside a trade: its newest status read and the
    newest delivery attempt of any event 0Pools sent about it.

    Kept, not looked up: a page of the queue read both for its fifty trades
    in one statement of per-trade index walks, 1.1 ms of every page at 10 M
    events (issue 14). Written by ``ingest.newest.keep`` in the same transaction as
    what changes it (the pipeline's batches, the sweep's late links, the
    panel's replays), one statement a transaction; a row holds the newer of
    what it had and what came, so batches applied in any order agree.
    """

    # No foreign key in the database: its check at commit locks the trade row
    # (FOR KEY SHARE), and a worker applying one of that trade's events holds
    # it FOR UPDATE while it may wait for this row: a deadlock. Trades are
    # never deleted; Django still cascades if one were.
    trade = models.OneToOneField(
        Trade,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="newest",
        db_constraint=False,
    )
    # The newest ``poll`` event of the trade, by (created_at, id).
    poll = models.ForeignKey(
        "WebhookEvent", null=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    poll_at = models.DateTimeField(null=True)
    # The newest attempt, by (attempted_at, id), of the events with the trade
    # as subject that 0Pools sent (every source but ``poll``).
    delivery = models.ForeignKey(
        "DeliveryAttempt", null=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    delivery_at = models.DateTimeField(null=True)

    def __str__(self):
        return f"{self.trade_id}: poll {self.poll_id}, delivery {self.delivery_id}"


class ReservedMinute(models.Model):
    """How many trades are in ``reserved`` now, per pool, partner, mode and minute
    of ``reserved_at``.

    Kept by PostgreSQL itself (statement-level triggers on ``records_trade``,
    in the same transaction as every insert, status move and delete), so the
    stuck queue's age histogram reads a bounded window of these rows (24 h
    of minutes per pool, or the longest SLA) plus ``ReservedTotal``, never
    the stuck trades themselves. A pool's SLA is applied when read: changing
    it changes nothing here. Rows that fall to zero are deleted.
    """

    # No index of its own: nothing reads these rows by pool alone, and with
    # one the planner may walk a pool's every minute instead of the window.
    pool = models.ForeignKey(
        Pool, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    # The trade's order's partner: the queue filtered by partner reads its own
    # counts, as it does by pool.
    partner = models.ForeignKey(
        Partner, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    livemode = models.BooleanField()
    # date_trunc('minute', reserved_at) in UTC.
    minute = models.DateTimeField()
    trades = models.IntegerField()

    class Meta:
        constraints = [
            # Minute first: the histogram reads a window of minutes (a range scan).
            models.UniqueConstraint(
                fields=["minute", "pool", "partner", "livemode"], name="reserved_minute_key"
            )
        ]

    def __str__(self):
        return f"{self.pool_id} {self.minute:%Y-%m-%d %H:%M}: {self.trades}"


class ReservedTotal(models.Model):
    """How many trades are in ``reserved`` now, per pool, partner and mode (see ``ReservedMinute``):
    what lies beyond the histogram's window of minutes is this minus the window."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    partner = models.ForeignKey(
        Partner, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    livemode = models.BooleanField()
    trades = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["pool", "partner", "livemode"], name="reserved_total_key"
            )
        ]

    def __str__(self):
        return f"{self.pool_id}: {self.trades}"


class _TradeEvents(Expression):
    """The condition event_trade_subject_idx is partial on, as a query must
    say it for PostgreSQL to use the index: the pattern written out, not a
    parameter (which a generic plan cannot prove true); the column as the
    query names it (an alias in a subquery). ``filter(TRADE_EVENTS)``; raw
    SQL writes ``type LIKE 'trade.%'``."""

    output_field = BooleanField()

    def __init__(self, column=None):
        super().__init__()
        self.column = column if column is not None else F("type")

    def get_source_expressions(self):
        return [self.column]

    def set_source_expressions(self, expressions):
        (self.column,) = expressions

    def as_sql(self, compiler, connection):
        sql, params = compiler.compile(self.column)
        return f"{sql} LIKE 'trade.%%'", params


TRADE_EVENTS = _TradeEvents()


class WebhookEvent(models.Model):
    """One 0Pools event envelope, stored once per event id.

    ``payload`` holds the allowlisted envelope only. Received through the
    webhook (stored before the 2xx, processed by a task), an import, or a
    status read (a poll is stored as a synthetic event, source ``poll``).
    """

    class Source(models.TextChoices):
        WEBHOOK = "webhook"
        IMPORT = "import"
        POLL = "poll"

    class State(models.TextChoices):
        PENDING = "pending"
        PROCESSED = "processed"
        FAILED = "failed"

    event_id = models.CharField(max_length=48, unique=True, db_collation=ID_COLLATION)
    type = models.CharField(max_length=40)
    livemode = models.BooleanField()
    created_at = models.DateTimeField(help_text="Upstream createdAt.")
    received_at = models.DateTimeField()
    source = models.CharField(max_length=8, choices=Source.choices)
    # Which configured secret verified it (its position and a fingerprint,
    # never the secret); blank for imports and polls.
    verified_with = models.CharField(max_length=40, blank=True)
    duplicate_count = models.PositiveIntegerField(default=0)
    last_duplicate_at = models.DateTimeField(null=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    processed_at = models.DateTimeField(null=True)
    dropped_keys = models.PositiveIntegerField(
        default=0, help_text="Keys the allowlist removed (counted, never stored)."
    )
    payload = models.JSONField()
    partner_id = models.CharField(max_length=44, db_collation=ID_COLLATION)
    # The id of the object the event is about (quote, trade, ledger entry, or
    # for a delivery attempt the event delivered).
    subject_id = models.CharField(max_length=48, db_collation=ID_COLLATION)
    # No index of its own: event_order_time_idx leads with it. Neither that
    # index nor any other holds the rows without an order (see there).
    order = models.ForeignKey(
        Order, null=True, on_delete=models.PROTECT, related_name="events", db_index=False
    )
    # While ``order`` is unknown: the trade or event id that will tell it.
    link_key = models.CharField(max_length=48, blank=True, db_collation=ID_COLLATION)

    class Meta:
        indexes = [
            # The sweep: WHERE state <> 'processed' ORDER BY received_at.
            models.Index(
                fields=["received_at", "id"],
                condition=~Q(state="processed"),
                name="event_unprocessed_idx",
            ),
            # Timeline: WHERE order_id = %s ORDER BY created_at. Without the
            # rows that wait for their order: indexed, they made the planner
            # serve the linking's "order_id IS NULL" from here, walking every
            # dead entry a link left behind (a cost that grew with the table),
            # rather than from event_unlinked_idx.
            models.Index(
                fields=["order", "created_at"],
                condition=Q(order__isnull=False),
                name="event_order_time_idx",
            ),
            # A trade's events (the import's history check, replay's latest
            # state, the close's late arrivals): WHERE subject_id = %s
            # [AND source ...] AND TRADE_EVENTS ORDER BY created_at DESC,
            # id DESC. The source second: a trade stuck a day has 288 status
            # reads of ours (the 5-minute re-poll), and the events 0Pools
            # sent must not cost a walk past all of them. Trade events only
            # (a fifth of a network's events; nothing asks for a quote's,
            # a ledger entry's or a delivery report's by subject): a row in
            # it costs an import more than in any other index of the table.
            models.Index(
                fields=["subject_id", "source", "created_at", "id"],
                condition=Q(type__startswith="trade."),
                name="event_trade_subject_idx",
            ),
            # Linking late joins: WHERE order_id IS NULL AND link_key = ANY(%s).
            models.Index(
                fields=["link_key"], condition=Q(order__isnull=True), name="event_unlinked_idx"
            ),
            # The events list (browse): ORDER BY created_at DESC, id DESC LIMIT n,
            # keyset: WHERE created_at <= %s AND (created_at < %s OR id < %s).
            models.Index(fields=["created_at", "id"], name="event_created_idx"),
        ]

    def __str__(self):
        return self.event_id


class RejectedDelivery(models.Model):
    """A webhook request we refused. No payload: when, why, size and hash."""

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status_code = models.PositiveSmallIntegerField()
    reason = models.CharField(max_length=200)
    webhook_id = models.CharField(max_length=64, blank=True)
    body_size = models.PositiveIntegerField()
    body_sha256 = models.CharField(max_length=64)
    remote_addr = models.GenericIPAddressField(null=True)

    class Meta:
        indexes = [
            # The cap on rows per sender: WHERE remote_addr = %s AND received_at > %s.
            models.Index(fields=["remote_addr", "received_at"], name="rejected_sender_idx"),
        ]

    def __str__(self):
        return f"{self.status_code} {self.reason}"


class StatusChange(models.Model):
    """One observed move of a trade's status, applied or not."""

    Outcome = models.TextChoices(
        "Outcome",
        [(o.upper(), o) for o in (states.APPLIED, states.LATE, states.ILLEGAL, states.OVERRIDE)],
    )

    # No index of its own: status_trade_time_idx leads with it.
    trade = models.ForeignKey(
        Trade, on_delete=models.PROTECT, related_name="status_changes", db_index=False
    )
    from_status = models.CharField(max_length=10, blank=True)
    to_status = models.CharField(max_length=10)
    upstream_at = models.DateTimeField()
    recorded_at = models.DateTimeField()
    source = models.CharField(max_length=8, choices=WebhookEvent.Source.choices)
    event = models.ForeignKey(
        WebhookEvent, null=True, on_delete=models.PROTECT, related_name="status_changes"
    )
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["trade", "upstream_at", "id"], name="status_trade_time_idx")
        ]

    def __str__(self):
        return f"{self.from_status or '?'} -> {self.to_status} ({self.outcome})"

    @property
    def flagged(self):
        return self.outcome != states.APPLIED


class DeliveryAttempt(models.Model):
    """A try at delivering an event to a partner endpoint."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    event_id = models.CharField(max_length=48, db_collation=ID_COLLATION, db_index=True)
    # No index of its own: delivery_partner_time_idx leads with it.
    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="+", db_index=False)
    attempt = models.PositiveIntegerField()
    response_status = models.PositiveSmallIntegerField(null=True)
    duration_ms = models.PositiveIntegerField(null=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    attempted_at = models.DateTimeField()
    # The webhook.delivery_attempted event that reported it (upstream
    # deliveries); null for a replay sent by the panel.
    reported_by = models.OneToOneField(
        WebhookEvent, null=True, on_delete=models.PROTECT, related_name="+"
    )

    objects = DeliveryAttemptQuerySet.as_manager()

    class Meta:
        indexes = [
            # Delivery health (deliveries.health): WHERE partner_id = ANY(%s)
            # AND attempted_at > %s AND attempted_at <= %s GROUP BY partner_id;
            # a partner's newest attempts and failing streak
            # (Partner.objects.failing_deliveries): WHERE partner_id = %s
            # ORDER BY attempted_at DESC LIMIT n; a partner's failing events:
            # WHERE partner_id = %s AND outcome = 'failed'.
            models.Index(fields=["partner", "attempted_at"], name="delivery_partner_time_idx"),
        ]

    def __str__(self):
        return f"{self.event_id} attempt {self.attempt}"


class LedgerEntry(models.Model):
    """Append-only: the database refuses UPDATE, DELETE and TRUNCATE."""

    class EntryType(models.TextChoices):
        SETTLEMENT = "settlement"
        FEE = "fee"
        RETURN = "return"
        REVERSAL = "reversal"

    ledger_id = models.CharField(max_length=48, unique=True, db_collation=ID_COLLATION)
    transact_id = models.CharField(max_length=48, db_collation=ID_COLLATION, db_index=True)
    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="+")
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="+")
    livemode = models.BooleanField()
    entry_type = models.CharField(max_length=10, choices=EntryType.choices)
    direction = models.CharField(max_length=6)
    amount_value = models.DecimalField(max_digits=38, decimal_places=18)
    amount_currency = models.CharField(max_length=12)
    posted_at = models.DateTimeField()
    event_id = models.CharField(max_length=48, db_collation=ID_COLLATION)

    class Meta:
        indexes = [
            # The ledger list (browse): ORDER BY posted_at DESC, id DESC LIMIT n,
            # keyset: WHERE posted_at <= %s AND (posted_at < %s OR id < %s).
            models.Index(fields=["posted_at", "id"], name="ledger_posted_idx"),
        ]
        triggers = [
            pgtrigger.Protect(
                name="ledger_append_only", operation=pgtrigger.Update | pgtrigger.Delete
            ),
            pgtrigger.Trigger(
                name="ledger_no_truncate",
                operation=pgtrigger.Truncate,
                level=pgtrigger.Statement,
                when=pgtrigger.Before,
                func="RAISE EXCEPTION 'ledger entries are append-only: TRUNCATE refused';",
            ),
        ]

    def __str__(self):
        return self.ledger_id


class Identifier(models.Model):
    """The one index behind the search box: every searchable id -> its order.

    Served by ``identifier_unique`` (collation "C"), which leads with
    ``value``: ``value = %s`` and ``value LIKE 'prefix%'`` are both range
    scans of it, in ``value, kind`` order.

    One row per id and order: a partner that reuses an idempotency key for
    two orders is found at both. An id whose order is not known yet (its
    trade has not arrived) has one waiting row, ``order`` null, until the
    pipeline links it.
    """

    class Kind(models.TextChoices):
        ORDER = "order", "partner order id"
        QUOTE = "quote", "quote"
        TRADE = "trade", "trade"
        REQUEST = "request", "request"
        IDEMPOTENCY_KEY = "idempotency_key", "idempotency key"
        EVENT = "event", "webhook event"
        LEDGER = "ledger", "ledger entry"

    value = models.CharField(max_length=255, db_collation=ID_COLLATION)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    partner_id = models.CharField(max_length=44, db_collation=ID_COLLATION)
    # No index of its own (nothing looks identifiers up by order); one held
    # the waiting rows, and the planner took it for "order_id IS NULL" over
    # identifier_unlinked_idx (see WebhookEvent.order).
    order = models.ForeignKey(
        Order, null=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    link_key = models.CharField(max_length=48, blank=True, db_collation=ID_COLLATION)

    class Meta:
        constraints = [
            # One row per id and order, and one waiting row (order null) per
            # id: NULLS NOT DISTINCT makes the null order one value. The one
            # index every row is in besides the primary key: it serves the
            # search (see above) and the orders list's id filter (index-only:
            # it carries order_id). A unique index for each half and a plain
            # one on value put each row in three indexes with the primary
            # key; the import writes about two rows an event.
            models.UniqueConstraint(
                fields=["value", "kind", "partner_id", "order"],
                nulls_distinct=False,
                name="identifier_unique",
            ),
        ]
        indexes = [
            models.Index(
                fields=["link_key"],
                condition=Q(order__isnull=True),
                name="identifier_unlinked_idx",
            ),
        ]

    def __str__(self):
        return f"{self.kind} {self.value}"
