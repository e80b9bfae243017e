"""What the database itself guarantees, shown against the database, not the ORM."""

import pytest
from django.db import connection, transaction
from django.db.utils import ProgrammingError

from records.models import LedgerEntry
from tests import envelopes
from tests.helpers import import_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def entry(tmp_path):
    import_events(tmp_path, envelopes.ledger("ledger_0pools_772", value="107.31"))
    return LedgerEntry.objects.get()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE records_ledgerentry SET amount_value = 1",
        "DELETE FROM records_ledgerentry",
    ],
    ids=["update", "delete"],
)
def test_the_database_refuses_to_change_a_ledger_entry(entry, statement):
    with (
        pytest.raises(ProgrammingError, match="Cannot update or delete rows"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)

    entry.refresh_from_db()
    assert str(entry.amount_value) == "107.310000000000000000"


def test_the_database_refuses_to_truncate_the_ledger(entry):
    with (
        pytest.raises(ProgrammingError, match="append-only: TRUNCATE refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        # Check the deferred foreign keys first, or PostgreSQL refuses the
        # TRUNCATE for that reason before our trigger is asked.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("TRUNCATE records_ledgerentry")

    assert LedgerEntry.objects.filter(pk=entry.pk).exists()


def test_a_correction_is_a_new_entry_and_a_repeated_id_keeps_the_first(tmp_path, entry):
    import_events(
        tmp_path,
        envelopes.ledger("ledger_0pools_772", value="999.00"),  # same id again: ignored
        envelopes.ledger("ledger_0pools_773", value="-107.31", entry_type="reversal"),
    )

    assert sorted(LedgerEntry.objects.values_list("ledger_id", "amount_value")) == [
        ("ledger_0pools_772", entry.amount_value),
        ("ledger_0pools_773", -entry.amount_value),
    ]
