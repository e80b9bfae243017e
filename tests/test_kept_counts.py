"""What issue 14 added for fast pages, each shown able to fail.

The stuck queue's kept age histogram (records.ReservedMinute and
ReservedTotal, kept by PostgreSQL triggers) against a recount after a mix of
inserts, status moves, deletes and SLA changes; the signed-in path (one
session read, one user-and-role read) still signs out at once; links built
without ``reverse()`` are the links ``reverse()`` builds.
"""

import random
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from accounts.roles import role_of
from queues import stuck
from records.links import link
from records.models import Pool, ReservedMinute, ReservedTotal, Trade
from tests.conftest import PASSWORD
from tests.helpers import import_events
from tests.test_queue import QUEUE, histogram, reserved

pytestmark = pytest.mark.django_db

M, H = timedelta(minutes=1), timedelta(hours=1)


# --- the kept histogram ------------------------------------------------------------------


def kept():
    """The kept counts as {(pool, partner, mode, minute): n} and {(pool, partner, mode): n},
    zeros left out."""
    minutes = {
        (row.pool_id, row.partner_id, row.livemode, row.minute): row.trades
        for row in ReservedMinute.objects.all()
        if row.trades
    }
    totals = {
        (row.pool_id, row.partner_id, row.livemode): row.trades
        for row in ReservedTotal.objects.all()
        if row.trades
    }
    return minutes, totals


def recount():
    """The same, counted from the trades themselves (Python, not the triggers' SQL)."""
    minutes, totals = {}, {}
    trades = Trade.objects.filter(status=Trade.Status.RESERVED, reserved_at__isnull=False)
    for trade in trades.select_related("order"):
        minute = trade.reserved_at.replace(second=0, microsecond=0)
        key = (trade.pool_id, trade.order.partner_id, trade.livemode)
        minutes[(*key, minute)] = minutes.get((*key, minute), 0) + 1
        totals[key] = totals.get(key, 0) + 1
    return minutes, totals


def histogram_recount(now, partner=None):
    """The age histogram to the minute, recounted: each trade as reserved at the
    start of its minute, banded as ``stuck.AGE_BANDS`` say (``partner``: its trades only)."""
    found = {}
    trades = Trade.objects.filter(status=Trade.Status.RESERVED, reserved_at__isnull=False)
    if partner is not None:
        trades = trades.filter(order__partner__partner_id=partner)
    for trade in trades:
        at = trade.reserved_at.replace(second=0, microsecond=0)
        pool = trade.pool
        if not at < now - timedelta(minutes=pool.sla_minutes):
            continue
        counts = found.setdefault((pool.pool_id, pool.sla_minutes), [0] * len(stuck.AGE_BANDS))
        for i, band in enumerate(stuck.AGE_BANDS):
            if (band.low is None or at <= now - band.low) and (
                band.high is None or at > now - band.high
            ):
                counts[i] += 1
    return [
        stuck.PoolAges(pool, sla, tuple(counts))
        for (pool, sla), counts in sorted(found.items())
        if any(counts)
    ]


def test_kept_counts_equal_a_recount_after_inserts_moves_deletes_and_sla_changes(tmp_path):
    rng = random.Random(14)
    pools = ["EUR-USDT", "USD-USDC", "GBP-USDT"]
    partners = ["ptn_acme", "ptn_globex"]
    import_events(
        tmp_path,
        *[
            reserved(
                f"pt_{'live' if i % 4 else 'test'}_K{i:02d}",
                rng.choice([20 * M, 50 * M, 2 * H, 5 * H, 30 * H, 80 * H]) + rng.randrange(60) * M,
                pool=pools[i % 3],
                partner=partners[i % 2],
            )
            for i in range(24)
        ],
    )
    assert kept() == recount()
    assert sum(kept()[1].values()) == 24
    template = Trade.objects.first()
    now = timezone.now()

    for step in range(40):
        move = rng.choice(["insert", "settle", "reserve", "shift", "pool", "mode", "delete", "sla"])
        trades = list(Trade.objects.order_by("id"))
        if move == "insert":  # several rows in one statement
            made = []
            for n in range(rng.randrange(1, 4)):
                clone = Trade.objects.get(pk=template.pk)
                clone.pk = None
                clone.transact_id = f"pt_live_C{step:02d}{n}"
                clone.status = (
                    rng.choice([Trade.Status.RESERVED, Trade.Status.SETTLED])
                    if n
                    else Trade.Status.RESERVED
                )
                clone.reserved_at = now - rng.randrange(10, 3000) * M
                made.append(clone)
            Trade.objects.bulk_create(made)
        elif move == "settle":
            Trade.objects.filter(pk=rng.choice(trades).pk).update(status=Trade.Status.SETTLED)
        elif move == "reserve":
            Trade.objects.filter(pk=rng.choice(trades).pk).update(status=Trade.Status.RESERVED)
        elif move == "shift":  # many rows, some into the same minute
            Trade.objects.filter(pk__in=[t.pk for t in rng.sample(trades, 5)]).update(
                reserved_at=F("reserved_at") - rng.randrange(0, 90) * M
            )
        elif move == "pool":
            Trade.objects.filter(pk=rng.choice(trades).pk).update(
                pool=Pool.objects.order_by("?").first()
            )
        elif move == "mode":
            Trade.objects.filter(pk=rng.choice(trades).pk).update(livemode=~F("livemode"))
        elif move == "delete":  # a reserved one when there is one: it must be uncounted
            clones = [t for t in trades if t.transact_id.startswith("pt_live_C")]
            clones.sort(key=lambda t: t.status != Trade.Status.RESERVED)
            if clones:
                Trade.objects.filter(pk=clones[0].pk).delete()
        else:
            Pool.objects.filter(pool_id=rng.choice(pools)).update(
                sla_minutes=rng.choice([15, 45, 300, 2000])
            )
        assert kept() == recount(), (step, move)
        assert stuck.kept_histogram(now) == histogram_recount(now), (step, move)
        for partner in partners:
            assert stuck.kept_histogram(now, partner_id=partner) == histogram_recount(
                now, partner
            ), (step, move, partner)


def test_a_rolled_back_change_leaves_the_kept_counts_as_they_were(tmp_path):
    import_events(tmp_path, reserved("pt_live_R01", 2 * H), reserved("pt_live_R02", 30 * H))
    before = kept()
    with pytest.raises(RuntimeError), transaction.atomic():
        Trade.objects.update(status=Trade.Status.SETTLED)
        assert kept()[1] == {}
        raise RuntimeError("undo")
    assert kept() == before == recount()


def test_the_migration_backfill_counts_what_is_there(tmp_path):
    """The migration's backfill (and the triggers) agree with a recount of any table."""
    from importlib import import_module

    backfill = import_module("records.migrations.0011_reserved_by_partner").BACKFILL
    import_events(
        tmp_path,
        reserved("pt_live_B01", 2 * H),
        reserved("pt_test_B02", 30 * H),
        reserved("pt_live_B03", 30 * H, partner="ptn_globex"),
    )
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM records_reservedminute; DELETE FROM records_reservedtotal")
        assert kept() == ({}, {})
        cursor.execute(backfill)
    assert kept() == recount()
    assert sum(kept()[1].values()) == 3


def test_the_queue_page_draws_the_kept_histogram_without_reading_the_stuck_trades(ops, tmp_path):
    import_events(
        tmp_path,
        *[reserved(f"pt_live_S{i:02d}", (30 + i) * H, pool="EUR-USDT") for i in range(11)],
        reserved("pt_live_S11", 41 * H, pool="EUR-USDT", partner="ptn_globex"),
        reserved("pt_live_S99", 2 * H, pool="USD-USDC"),
    )
    with CaptureQueriesContext(connection) as captured:
        response = ops.get(QUEUE)
    assert histogram(response) == {
        "EUR-USDT": {"under-1h": 0, "1-4h": 0, "4-24h": 0, "over-24h": 12},
        "USD-USDC": {"under-1h": 0, "1-4h": 1, "4-24h": 0, "over-24h": 0},
    }
    grouped = [q["sql"] for q in captured if "GROUP BY" in q["sql"]]
    assert len(grouped) == 1
    assert "records_reservedminute" in grouped[0]
    assert "records_trade" not in grouped[0]

    # Filters the kept counts know: pool, mode, age band.
    assert histogram(ops.get(QUEUE, {"pool": "USD-USDC"})) == {
        "USD-USDC": {"under-1h": 0, "1-4h": 1, "4-24h": 0, "over-24h": 0}
    }
    assert histogram(ops.get(QUEUE, {"livemode": "test"})) == {}
    assert histogram(ops.get(QUEUE, {"age": "1-4h"})) == {
        "USD-USDC": {"under-1h": 0, "1-4h": 1, "4-24h": 0, "over-24h": 0}
    }
    # A partner's trades are kept apart too: its own counts, still no trade read.
    with CaptureQueriesContext(connection) as captured:
        by_partner = ops.get(QUEUE, {"partner": "ptn_acme"})
    grouped = [q["sql"] for q in captured if "GROUP BY" in q["sql"]]
    assert len(grouped) == 1
    assert "records_trade" not in grouped[0]
    assert histogram(by_partner) == {
        "EUR-USDT": {"under-1h": 0, "1-4h": 0, "4-24h": 0, "over-24h": 11},
        "USD-USDC": {"under-1h": 0, "1-4h": 1, "4-24h": 0, "over-24h": 0},
    }
    assert histogram(ops.get(QUEUE, {"partner": "ptn_globex", "pool": "EUR-USDT"})) == {
        "EUR-USDT": {"under-1h": 0, "1-4h": 0, "4-24h": 0, "over-24h": 1}
    }
    assert histogram(ops.get(QUEUE, {"partner": "ptn_nobody"})) == {}


def test_the_queue_page_costs_the_same_queries_with_ten_times_the_stuck_trades(
    ops, tmp_path, django_assert_num_queries
):
    import_events(tmp_path, *[reserved(f"pt_live_T{i:03d}", (20 + i) * M) for i in range(6)])
    ops.get(QUEUE)  # the idle clock's touch (a session write) out of the way
    with CaptureQueriesContext(connection) as few:
        ops.get(QUEUE)
    import_events(tmp_path, *[reserved(f"pt_live_U{i:03d}", (30 + i) * H) for i in range(60)])
    with django_assert_num_queries(len(few)):
        response = ops.get(QUEUE)
    assert sum(histogram(response)["EUR-USDT"].values()) == 66


# --- signed in: one session read, one user-and-role read ------------------------------


def test_a_signed_in_page_reads_the_session_the_user_and_their_role_in_one_statement(support):
    support.get("/orders/")  # the idle clock's first touch
    with CaptureQueriesContext(connection) as captured:
        assert support.get("/orders/").status_code == 200
    auth = [q["sql"] for q in captured if "accounts_session" in q["sql"] or "auth_" in q["sql"]]
    assert len(auth) == 1, auth
    assert "accounts_session" in auth[0]
    assert "auth_user" in auth[0] and "auth_group" in auth[0]


def test_the_user_is_read_by_a_plain_statement_into_what_the_orm_would_make(
    support, support_user, monkeypatch
):
    """accounts.backends: Manager.raw() worked out its columns and the
    model's init order on every request."""
    from django.contrib.auth.models import User
    from django.db.models.query import RawQuerySet

    from accounts.backends import RoleModelBackend

    monkeypatch.setattr(RawQuerySet, "__iter__", lambda self: pytest.fail("a RawQuerySet"))
    assert support.get("/orders/").status_code == 200

    read, orm = RoleModelBackend().get_user(support_user.pk), User.objects.get(pk=support_user.pk)
    assert [getattr(read, f.attname) for f in User._meta.concrete_fields] == [
        getattr(orm, f.attname) for f in User._meta.concrete_fields
    ]
    assert (read._state.db, read._state.adding) == (orm._state.db, False)
    assert read.get_session_auth_hash() == orm.get_session_auth_hash()


def test_signing_out_ends_the_session_for_every_process_at_once(client, support_user):
    from django.test import Client

    response = client.post(
        "/accounts/login/", {"username": support_user.username, "password": PASSWORD}
    )
    assert response.status_code == 302
    # Another web process, the same cookie: signed in there too.
    elsewhere = Client()
    elsewhere.cookies = client.cookies
    assert elsewhere.get("/orders/").status_code == 200

    assert client.post("/accounts/logout/").status_code == 302
    answer = elsewhere.get("/orders/")
    assert answer.status_code == 302
    assert answer["Location"].startswith("/accounts/login/")


def test_a_role_taken_away_or_a_user_disabled_counts_at_the_next_request(
    client, support_user, operations_user
):
    client.force_login(support_user)
    assert client.get("/orders/").status_code == 200
    support_user.groups.clear()
    assert client.get("/orders/").status_code == 403

    client.force_login(operations_user)
    assert client.get(QUEUE).status_code == 200
    operations_user.is_active = False
    operations_user.save()
    answer = client.get(QUEUE)
    assert answer.status_code == 302
    assert answer["Location"].startswith("/accounts/login/")


def test_a_new_password_signs_out_the_other_sessions(client, support_user):
    client.force_login(support_user)
    assert client.get("/orders/").status_code == 200
    support_user.set_password("another long pass phrase 7")
    support_user.save()
    assert client.get("/orders/").status_code == 302


def test_a_session_row_keeps_the_id_of_the_user_it_signs_in(client, support_user):
    from django.conf import settings

    from accounts.models import Session

    response = client.post(
        "/accounts/login/", {"username": support_user.username, "password": PASSWORD}
    )
    assert response.status_code == 302
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert Session.objects.get(session_key=key).user_id == support_user.pk


def test_an_async_save_keeps_the_user_id_too(support_user):
    from asgiref.sync import async_to_sync
    from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY

    from accounts.models import Session
    from accounts.sessions import SessionStore

    store = SessionStore()
    store[SESSION_KEY] = str(support_user.pk)
    store[BACKEND_SESSION_KEY] = "accounts.backends.RoleModelBackend"
    async_to_sync(store.asave)()

    assert Session.objects.get(session_key=store.session_key).user_id == support_user.pk


def test_a_session_naming_a_user_deleted_meanwhile_still_saves(db):
    # No foreign key in the database: its check at commit would fail the
    # save, and Django's SessionStore.create retries a failed save for ever.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_constraint"
            " WHERE conrelid = 'accounts_session'::regclass AND contype = 'f'"
        )
        assert cursor.fetchone()[0] == 0


def test_the_user_read_with_the_session_must_be_the_one_its_signed_data_names(
    client, support_user, admin_user
):
    # The user id column only saves a statement: a row pointing at another
    # user (an admin) changes nothing, the signed data says who is signed in.
    from django.conf import settings

    from accounts.models import Session

    client.force_login(support_user)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    Session.objects.filter(session_key=key).update(user=admin_user)

    assert client.get("/orders/").status_code == 200
    assert client.get("/team/").status_code == 403


def test_a_request_leaves_no_session_behind_for_the_next(support):
    from accounts.middleware import current_session

    assert support.get("/orders/").status_code == 200

    assert current_session() is None


def test_the_strongest_role_wins(support_user):
    from django.contrib.auth.models import Group

    from accounts.backends import RoleModelBackend

    support_user.groups.add(Group.objects.get_or_create(name="admin")[0])
    user = RoleModelBackend().get_user(support_user.pk)
    assert user.username == support_user.username
    assert role_of(user) == "admin"
    assert RoleModelBackend().get_user(support_user.pk + 999) is None
    assert RoleModelBackend().get_user("not a number") is None


# --- links without reverse() -------------------------------------------------------------


@given(st.text(min_size=1, max_size=20))
def test_a_link_is_what_reverse_makes(value):
    for name in ("browse:event", "queues:claim", "actions:repoll", "timeline:order_by_reference"):
        try:
            expected = reverse(name, args=[value])
        except NoReverseMatch:
            with pytest.raises(NoReverseMatch):
                link(name, value)
        else:
            assert link(name, value) == expected


# --- /id/<exact> ---------------------------------------------------------------------------


def test_an_exact_id_is_a_redirect_after_one_query_of_its_own(support, tmp_path):
    import_events(tmp_path, reserved("pt_live_X01", 2 * H))
    support.get("/orders/")  # the idle clock's touch out of the way
    with CaptureQueriesContext(connection) as captured:
        response = support.get("/id/pt_live_X01")
    assert response.status_code == 302
    assert response["Location"] == "/orders/ptn_acme/ref_X01/"
    # the session with its user and their role, the identifier: no trade read
    assert len(captured) == 2
    assert "records_trade" not in captured[1]["sql"]
