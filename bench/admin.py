"""Baselines for S1: real Django admins over the same ids, timed through
``changelist_view`` (RequestFactory, a superuser; its every query, the
counts included), and the bare SQL of the best index.

- stock: a ``ModelAdmin`` the way one is first written, ``search_fields``
  over six id fields of ``Trade`` (``icontains``: ``UPPER(..) LIKE '%x%'``),
  and over the identifier index's ``value`` the same way;
- tuned: the identifier index searched by exact ``value = %s`` (answered by
  ``identifier_unique``, which leads with it) and ``show_full_result_count`` off;
- bare SQL: the tuned admin's lookup by itself, one statement on the index,
  on a cursor of its own, as every read in Django runs.
"""

import time

from django.contrib import admin
from django.contrib.admin.sites import AdminSite
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from records.models import Identifier, Trade

site = AdminSite(name="admin")


class StockTradeAdmin(admin.ModelAdmin):
    list_display = ("transact_id", "status", "order", "created_at")
    search_fields = (
        "transact_id",
        "quote_id",
        "request_id",
        "idempotency_key",
        "order__partner_reference",
        "order__partner__partner_id",
    )


class StockIdentifierAdmin(admin.ModelAdmin):
    list_display = ("value", "kind", "partner_id", "order")
    search_fields = ("value",)


class TunedIdentifierAdmin(admin.ModelAdmin):
    """``search_fields = ["=value"]`` would be ``iexact`` (``UPPER(value) =
    UPPER(%s)``, a Seq Scan): the tuning is a case-sensitive ``value = %s``,
    which ``identifier_unique`` answers (it leads with ``value``), and no full count."""

    list_display = ("value", "kind", "partner_id", "order_id")
    search_fields = ("value",)
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        if not search_term:
            return queryset, False
        return queryset.filter(value=search_term), False


# The changelist's links reverse admin URLs: one ModelAdmin per model is registered.
site.register(Trade, StockTradeAdmin)
site.register(Identifier, TunedIdentifierAdmin)

ADMINS = {
    "stock Trade admin (6 fields, icontains)": StockTradeAdmin(Trade, site),
    "stock Identifier admin (icontains)": StockIdentifierAdmin(Identifier, site),
    "tuned Identifier admin (value = %s)": TunedIdentifierAdmin(Identifier, site),
}

BARE_SQL = "SELECT id, kind, partner_id, order_id FROM records_identifier WHERE value = %s"


def superuser():
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user = User.objects.filter(username="bench-admin").first()
    if user is None:
        user = User.objects.create_superuser("bench-admin", "bench@example.invalid", "bench-pw-1")
    return user


def time_changelist(model_admin, values, user):
    """[(seconds, queries)] of one changelist search per value, rendered."""
    factory = RequestFactory()
    out = []
    for value in values:
        request = factory.get("/admin/", {"q": value})
        request.user = user
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = model_admin.changelist_view(request)
            response.render()
            took = time.perf_counter() - started
        assert response.status_code == 200, response.status_code
        out.append((took, len(captured)))
    return out


def bare_sql(value):
    """The seconds of one bare statement, its cursor opened for it as any
    Django read opens one."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(BARE_SQL, [value])
        rows = cursor.fetchall()
    took = time.perf_counter() - started
    assert rows, value
    return took


def time_bare_sql_back_to_back(values):
    """The bare statements on one cursor, one after another: how the bench
    timed them until December (a floor no code path reaches)."""
    out = []
    with connection.cursor() as cursor:
        for value in values:
            started = time.perf_counter()
            cursor.execute(BARE_SQL, [value])
            rows = cursor.fetchall()
            out.append((time.perf_counter() - started, 1))
            assert rows, value
    return out
