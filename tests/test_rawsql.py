"""``lib.rawsql.fetch``: the hot pages' plain-SQL reads make the instances the ORM makes."""

import pytest
from django.db.models import signals

from lib.rawsql import _plan, columns, fetch
from records.models import Identifier, Order, Partner, Trade, WebhookEvent
from tests import envelopes
from tests.helpers import import_events

pytestmark = pytest.mark.django_db

EVENTS = f"SELECT {columns('e', WebhookEvent)} FROM records_webhookevent e ORDER BY e.id"  # noqa: S608
IDENTIFIERS = f"""
SELECT {columns("i", Identifier)}, {columns("o", Order)}, i.value
  FROM records_identifier i LEFT JOIN records_order o ON o.id = i.order_id
 ORDER BY i.value
"""  # noqa: S608


def _fields(instance, model):
    return {f.attname: getattr(instance, f.attname) for f in model._meta.concrete_fields}


def test_fetch_makes_what_the_orm_makes(tmp_path):
    import_events(tmp_path, envelopes.quote(), envelopes.trade("reserved"), envelopes.ledger())

    fetched = [event for (event,) in fetch(EVENTS, [], WebhookEvent)]
    loaded = list(WebhookEvent.objects.order_by("id"))

    assert len(fetched) == len(loaded) == 3
    for mine, orms in zip(fetched, loaded, strict=True):
        assert type(mine) is WebhookEvent and not mine._state.adding
        assert _fields(mine, WebhookEvent) == _fields(orms, WebhookEvent)
        assert isinstance(mine.payload, dict)  # the JSON field's own converter ran


def test_a_raw_field_keeps_the_database_value_and_a_missing_join_is_none(tmp_path):
    import_events(
        tmp_path,
        envelopes.trade("reserved"),
        # Its trade never comes: the ledger id waits for an order.
        envelopes.ledger("ledger_0pools_WAITING", transact_id="pt_live_NEVER"),
    )

    rows = fetch(IDENTIFIERS, [], Identifier, Order, extra=("value",))

    joined = {ident.value: order for ident, order, _ in rows}
    assert joined["ledger_0pools_WAITING"] is None
    assert isinstance(joined["pt_live_9A2"], Order)
    assert joined["pt_live_9A2"].partner_reference == "order_7841"
    assert all(value == ident.value for ident, _, value in rows)
    event = fetch(EVENTS, [], WebhookEvent, raw=("payload",))[0][0]
    assert isinstance(event.payload, str) and event.payload.startswith("{")


TRADES = f"""
SELECT {columns("t", Trade, ("id", "transact_id", "reserved_at"))}, {columns("p", Partner)}
  FROM records_trade t JOIN records_order o ON o.id = t.order_id
  JOIN records_partner p ON p.id = o.partner_id
"""  # noqa: S608


def test_chosen_columns_leave_the_rest_deferred_as_only_does(tmp_path):
    import_events(tmp_path, envelopes.trade("reserved"))

    [(trade, partner)] = fetch(TRADES, [], (Trade, ("id", "transact_id", "reserved_at")), Partner)
    orms = Trade.objects.only("transact_id", "reserved_at").get()

    assert trade.get_deferred_fields() == orms.get_deferred_fields()
    assert (trade.pk, trade.transact_id, trade.reserved_at) == (
        orms.pk,
        orms.transact_id,
        orms.reserved_at,
    )
    assert not trade._state.adding and trade._state.db == orms._state.db == "default"
    assert trade.status == orms.status == "reserved"  # read on first use, as the ORM does
    assert _fields(partner, Partner) == _fields(Partner.objects.get(), Partner)


def test_a_model_someone_listens_to_is_made_by_from_db(tmp_path):
    import_events(tmp_path, envelopes.trade("reserved"))
    made = []

    def listen(sender, instance, **kwargs):
        made.append(instance)

    signals.post_init.connect(listen, sender=Partner)
    _plan.cache_clear()  # plans are made once per process
    try:
        [(_, partner)] = fetch(TRADES, [], (Trade, ("id", "transact_id", "reserved_at")), Partner)
    finally:
        signals.post_init.disconnect(listen, sender=Partner)
        _plan.cache_clear()

    assert made == [partner]
