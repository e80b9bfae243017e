"""lib.postgresql: times come back through psycopg's compiled loader, and
come back exactly as Django's own loader returns them."""

import datetime
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg import adapters
from psycopg.pq import Format

from lib.postgresql.base import DatabaseWrapper
from records.models import Partner

TIMESTAMPTZ = adapters.types["timestamptz"].oid

# Written in other zones, with and without fractions, at the ends of the range.
MOMENTS = [
    "2026-06-28 20:15:03.5+00",
    "2026-03-29 01:59:59.999999+00",
    "2026-10-25 02:30:00-09:30",
    "2026-12-31 23:59:59+14",
    "1970-01-01 00:00:00+00",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
]
SQL = "SELECT v::timestamptz FROM unnest(%s::text[]) AS v"


def _loader():
    connection.ensure_connection()
    return connection.connection.adapters.get_loader(TIMESTAMPTZ, Format.TEXT)


@pytest.mark.django_db
def test_the_panels_connections_read_times_with_psycopgs_own_loader():
    loader = _loader()
    assert loader.__name__ == "TimestamptzLoader"
    assert not hasattr(loader, "timezone"), "Django's Python loader is still in place"


@pytest.mark.django_db
def test_times_read_equal_what_djangos_loader_returns():
    with connection.cursor() as cursor:
        cursor.execute(SQL, [MOMENTS])
        ours = [row[0] for row in cursor.fetchall()]
    with connection.connection.cursor() as cursor:
        register_tzloader(datetime.UTC, cursor)
        assert hasattr(cursor.adapters.get_loader(TIMESTAMPTZ, Format.TEXT), "timezone")
        cursor.execute(SQL, [MOMENTS])
        djangos = [row[0] for row in cursor.fetchall()]
    assert ours == djangos
    assert [t.tzinfo for t in ours] == [datetime.UTC] * len(MOMENTS)
    assert [t.isoformat() for t in ours] == [t.isoformat() for t in djangos]
    assert ours[2] == datetime.datetime(2026, 10, 25, 12, 0, tzinfo=datetime.UTC)


@pytest.mark.django_db
def test_a_model_reads_its_times_back_in_utc_through_both_cursor_kinds():
    moment = datetime.datetime(2026, 7, 1, 9, 30, 0, 250, tzinfo=ZoneInfo("America/St_Johns"))
    Partner.objects.create(partner_id="ptn_backendtime", name="Backend")
    Partner.objects.filter(partner_id="ptn_backendtime").update(first_seen=moment)
    plain = Partner.objects.get(partner_id="ptn_backendtime").first_seen
    # .iterator() inside a transaction reads through a named (server-side) cursor.
    with transaction.atomic():
        (named,) = (
            Partner.objects.filter(partner_id="ptn_backendtime")
            .values_list("first_seen", flat=True)
            .iterator(chunk_size=10)
        )
    assert plain == named == moment
    assert plain.tzinfo is named.tzinfo is datetime.UTC
    assert plain.isoformat() == "2026-07-01T12:00:00.000250+00:00"


def test_another_database_zone_keeps_djangos_loader():
    for settings_dict in (
        {**connection.settings_dict, "TIME_ZONE": "Europe/Paris"},
        {**connection.settings_dict, "TIME_ZONE": "UTC"},
    ):
        other = DatabaseWrapper(settings_dict, alias="zoned")
        loader = other.get_connection_params()["context"].get_loader(TIMESTAMPTZ, Format.TEXT)
        assert loader.timezone == other.timezone


@pytest.mark.django_db
def test_a_zone_changed_after_connecting_is_read_in_that_zone(settings):
    _loader()
    settings.TIME_ZONE = "Asia/Kolkata"
    settings.USE_TZ = False
    with connection.cursor() as cursor:
        cursor.execute(SQL, [MOMENTS[:1]])
        (naive,) = cursor.fetchone()
    assert naive == datetime.datetime(2026, 6, 29, 1, 45, 3, 500000)
