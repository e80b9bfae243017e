"""The pipeline's hand-written SQL against the models it writes.

The pipeline writes with raw SQL (one statement per table per batch), so
nothing in Django checks its column lists: a renamed field or a new
NOT NULL column would break ingest at run time only. Each statement's
columns are data (``ingest.sql.Insert``/``Update``); these tests read them.
"""

import pytest
from django.db.models import NOT_PROVIDED

from ingest import events, linking, pipeline, trades, upserts
from ingest.sql import Insert, Update
from records.models import (
    DeliveryAttempt,
    Identifier,
    LedgerEntry,
    Order,
    Partner,
    Pool,
    Quote,
    StatusChange,
    Trade,
    WebhookEvent,
)
from tests import envelopes
from tests.conftest import post_event
from tests.helpers import import_events


def _statements(kind):
    return [
        pytest.param(value, id=f"{module.__name__}.{name}")
        for module in (events, pipeline, upserts, trades, linking)
        for name, value in vars(module).items()
        if isinstance(value, kind)
    ]


INSERTS = _statements(Insert)
UPDATES = _statements(Update)


def _columns(model):
    return {field.column for field in model._meta.concrete_fields}


def _required(model):
    """Columns the database refuses to leave empty and cannot fill itself."""
    return {
        field.column
        for field in model._meta.concrete_fields
        if not field.null and not field.primary_key and field.db_default is NOT_PROVIDED
    }


def test_every_record_table_has_an_insert_the_tests_can_see():
    written = {param.values[0].model for param in INSERTS}

    assert written == {
        Partner,
        Pool,
        Order,
        Quote,
        Trade,
        StatusChange,
        LedgerEntry,
        DeliveryAttempt,
        WebhookEvent,
        Identifier,
    }


@pytest.mark.parametrize("statement", INSERTS + UPDATES)
def test_every_column_a_statement_writes_is_a_column_of_its_model(statement):
    unknown = set(statement.columns) - _columns(statement.model)

    assert not unknown, f"not columns of {statement.model.__name__}: {sorted(unknown)}"


@pytest.mark.parametrize("statement", INSERTS + UPDATES)
def test_no_statement_writes_a_column_twice(statement):
    assert len(set(statement.columns)) == len(statement.columns)


@pytest.mark.parametrize("statement", INSERTS)
def test_every_insert_supplies_each_not_null_column_without_a_database_default(statement):
    missing = _required(statement.model) - set(statement.columns)

    assert not missing, f"{statement.model.__name__} rows need {sorted(missing)}"


@pytest.mark.django_db
def test_the_ids_an_import_takes_come_from_the_sequence_a_webhook_takes_them_from(tmp_path, client):
    """``ingest.sql.next_ids`` draws from the events table's own sequence: the
    imported events take their ids in file order from it, and an event the
    webhook stores after them (Django's INSERT, the column's default) comes
    after them, not on top of one."""
    lines = [envelopes.trade("reserved", transact_id=f"pt_live_SEQ{n}") for n in range(3)]
    import_events(tmp_path, *lines)
    late = envelopes.trade("reserved", transact_id="pt_live_SEQ9")
    assert post_event(client, late).status_code == 202

    stored = list(WebhookEvent.objects.order_by("id").values_list("event_id", flat=True))

    assert stored == [line["id"] for line in [*lines, late]]
