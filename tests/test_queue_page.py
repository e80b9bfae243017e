"""The stuck queue's page read as plain SQL (``queues.page``) shows what the ORM read shows."""

import dataclasses
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.template import engines
from jinja2 import nodes

from accounts.services import create_user
from ingest import pipeline
from ingest.contract import parse_envelope
from queues import views
from queues.filters import StuckFilter
from queues.models import Claim
from queues.stuck import stuck_trades
from records.models import DeliveryAttempt, Partner, Pool, Trade, WebhookEvent
from tests import envelopes
from tests.conftest import PASSWORD
from tests.helpers import import_events
from tests.test_queue import QUEUE, H, M, iso, next_link, reserved, walk

pytestmark = pytest.mark.django_db


@pytest.fixture
def mixed(tmp_path):
    """Stuck trades across pools, partners, modes and every age band, three of
    them reserved in the same second (the cursor's tie-break on id)."""

    same = iso(datetime.now(UTC) - 3 * H)
    tied = [{"status": "reserved", "at": same}]
    import_events(
        tmp_path,
        reserved("pt_live_P01", 20 * M),
        reserved("pt_live_P02", 40 * M, partner="ptn_globex"),
        reserved("pt_test_P03", 50 * M, pool="USD-USDC", partner="ptn_sandbox"),
        reserved("pt_live_P04", 2 * H, pool="GBP-USDT"),
        reserved("pt_live_P05", 3 * H, history=tied),
        reserved("pt_live_P06", 3 * H, history=tied, partner="ptn_globex"),
        reserved("pt_test_P07", 3 * H, history=tied, pool="USD-USDC", partner="ptn_sandbox"),
        reserved("pt_live_P08", 6 * H, pool="USD-USDC"),
        reserved("pt_live_P09", 20 * H, partner="ptn_globex", pool="GBP-USDT"),
        reserved("pt_live_P10", 30 * H),
        reserved("pt_test_P11", 50 * H, partner="ptn_sandbox"),
        reserved("pt_live_P12", 10 * M),  # within the SLA: not stuck
    )


# A value for every filter of StuckFilter, alone and together; a filter
# added to StuckFilter without one here fails ``test_every_filter_is_covered``.
QUERIES = {
    "partner": ["partner=ptn_globex", "partner=ptn_sandbox", "partner=ptn_nobody"],
    "pool": ["pool=USD-USDC", "pool=GBP-USDT"],
    "age": ["age=under-1h", "age=1-4h", "age=4-24h", "age=over-24h"],
    "livemode": ["livemode=live", "livemode=test"],
    "together": [
        "partner=ptn_globex&livemode=live",
        "pool=USD-USDC&age=1-4h",
        "pool=EUR-USDT&partner=ptn_acme&livemode=live&age=over-24h",
        "livemode=test&age=4-24h",
    ],
}
ALL = ["", *(query for queries in QUERIES.values() for query in queries)]


def test_every_filter_is_covered():
    assert set(StuckFilter.base_filters) <= set(QUERIES)


def orm_order(query):
    """The filtered set as the ORM reads it (``filterset.qs``), oldest first."""
    data = dict(part.split("=") for part in query.split("&") if part)
    filterset = StuckFilter(data, queryset=stuck_trades())
    assert filterset.is_valid()
    return list(filterset.qs.values_list("transact_id", flat=True))


@pytest.mark.parametrize("query", ALL)
def test_every_page_under_every_filter_is_the_orm_set_in_order(support, mixed, query):
    expected = orm_order(query)

    # Two rows a page: every page after the first starts at a cursor, one of
    # them inside the three trades reserved in the same second.
    seen = walk(support, f"{QUEUE}?{query}&per_page=2")

    assert seen == expected
    if not query:
        assert len(expected) == 11


@pytest.fixture
def orm_page(monkeypatch):
    """The queue read the ORM's way (``keyset_page`` of ``filterset.qs``)."""
    monkeypatch.setattr(views, "STUCK", dataclasses.replace(views.STUCK, page=None))


def normalised(response):
    # Each drawing of a CSRF field masks the token anew.
    text = response.content.decode()
    return re.sub(r'(csrfmiddlewaretoken" value=|X-CSRFToken": )"[^"]+"', r'\1"…"', text)


def pages(client, url):
    """Each page's text, following the next links."""
    texts = []
    while url:
        response = client.get(url)
        texts.append(normalised(response))
        url = next_link(response)
    return texts


@pytest.mark.parametrize("query", ["", "pool=USD-USDC&livemode=live", "age=1-4h"])
def test_the_pages_are_the_same_text_as_the_orm_pages(
    ops, mixed, operations_user, request, time_machine, query
):
    time_machine.move_to(datetime.now(UTC), tick=False)  # the ages, to the minute
    Claim.objects.create(trade=Trade.objects.get(transact_id="pt_live_P05"), user=operations_user)
    url = f"{QUEUE}?{query}&per_page=3"
    plain = pages(ops, url)

    request.getfixturevalue("orm_page")

    assert pages(ops, url) == plain
    assert len(plain) == {"": 4, "age=1-4h": 2}.get(query, 1)
    if not query:
        assert "olga-operations" in plain[1]


@pytest.fixture
def form_drawn_each_time(monkeypatch):
    monkeypatch.setattr(views, "STUCK", dataclasses.replace(views.STUCK, form_from_query=False))


@pytest.mark.parametrize(
    "query", ["", "pool=USD-USDC&age=1-4h", "livemode=test&partner=ptn_sandbox", "age=forever"]
)
def test_the_kept_filter_form_is_the_form_drawn_for_the_query(
    support, mixed, request, time_machine, query
):
    time_machine.move_to(datetime.now(UTC), tick=False)
    kept = [normalised(support.get(f"{QUEUE}?{query}")) for _ in range(2)]
    other = normalised(support.get(f"{QUEUE}?pool=GBP-USDT"))

    request.getfixturevalue("form_drawn_each_time")

    assert kept[0] == kept[1] == normalised(support.get(f"{QUEUE}?{query}"))
    assert other == normalised(support.get(f"{QUEUE}?pool=GBP-USDT")) != kept[0]
    assert 'value="GBP-USDT"' in other


# --- what a page load builds ------------------------------------------------------


def test_a_queue_page_never_builds_the_orm_queryset_its_csv_reads(support, monkeypatch):
    built = []

    def counted():
        built.append(1)
        return stuck_trades()

    monkeypatch.setattr(views, "STUCK", dataclasses.replace(views.STUCK, queryset=counted))

    assert support.get("/queues/stuck?partner=ptn_acme&age=1-4h").status_code == 200
    assert built == []
    assert support.get("/queues/stuck?partner=ptn_acme&format=csv").status_code == 200
    assert built == [1]


def test_a_filterset_makes_its_form_class_once_and_each_form_its_own_fields():
    from django.http import QueryDict

    from browse.filters import TradeFilter

    first = StuckFilter(QueryDict("pool=EUR-USDT"), queryset=stuck_trades)
    second = StuckFilter(QueryDict(""), queryset=stuck_trades())

    assert first.get_form_class() is second.get_form_class()
    assert first.form.fields["pool"] is not second.form.fields["pool"]
    assert first.is_valid() and first.form.cleaned_data["pool"] == "EUR-USDT"
    # Another FilterSet class has a form class of its own.
    assert set(TradeFilter(QueryDict(""), queryset=Trade.objects.all()).form.fields) == {
        "partner",
        "pool",
        "livemode",
        "status",
        "date",
    }
    # A filter's method is bound to the copy: it reaches this FilterSet.
    assert first.filters["age"].filter.f is first.filters["age"]
    assert first.filters["age"].parent is first


def test_the_page_statement_names_its_limit_rather_than_binding_it():
    """With the limit a parameter, PostgreSQL planned the page's statement on
    every load (a generic plan's cost assumes a tenth of the rows); named in
    the text, the 10 M data set's connections keep one generic plan for it
    (``pg_prepared_statements``: 20 generic, 5 custom of 25 loads)."""
    from queues.page import page_sql

    now = datetime.now(UTC)
    sql, params = page_sql({"partner": "ptn_acme"}, None, 50, now)
    assert sql.rstrip().endswith("LIMIT 51")
    assert params == [now, "ptn_acme"]
    assert page_sql({}, None, 200, now)[0].rstrip().endswith("LIMIT 201")


def test_a_form_class_first_made_by_a_lazy_filterset_keeps_the_model_labels(monkeypatch):
    from django.http import QueryDict

    from browse.filters import TradeFilter

    monkeypatch.delattr(TradeFilter, "_form_class", raising=False)
    built = []

    def trades():
        built.append(1)
        return Trade.objects.all()

    form = TradeFilter(QueryDict(""), queryset=trades).form

    # django-filter derives a label from the model's field where none is given.
    assert form.fields["status"].label == "Status"
    assert built == [1]  # once, for the first form class of the process
    assert TradeFilter(QueryDict(""), queryset=trades).form.fields["status"].label == "Status"
    assert built == [1]


# --- the row escapes by hand (templates/jinja2/queues/stuck_row.html) ---------------

# What a row prints without escaping it: made by ``queues.page.decorate`` from
# times and numbers (ISO times, ages, counts), by a filter that returns markup
# of its own, or Django's CSRF field. A value read from the database, and a
# link (``reverse()`` leaves an ``&`` in an id as it is), go through ``|e``.
MADE = {
    "queues/stuck_row.html": {
        "trade.livemode|mode", "trade.reserved_attr", "trade.reserved_text",
        "trade.age", "trade.pool.sla_minutes", "trade.amount_value|amount",
        "poll.at_attr", "poll.at_text", "poll.ago",
        "d.attempt", "d.response_status", "d.at_attr", "d.at_text", "d.ago",
        "csrf_field",
    },
}  # fmt: skip


def _said(node):
    """A printed expression as written: ``trade.pool.pool_id|e``."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{_said(node.node)}.{node.attr}"
    if isinstance(node, nodes.Filter):
        return f"{_said(node.node)}|{node.name}"
    return type(node).__name__


def _unescaped_outputs(env, source):
    """What each ``{% autoescape false %}`` block of ``source`` prints, and
    the names it sets to an escaped value."""
    printed, escaped = [], set()
    for block in env.parse(source).find_all(nodes.ScopedEvalContextModifier):
        if not any(o.key == "autoescape" and o.value.as_const() is False for o in block.options):
            continue
        for assign in block.find_all(nodes.Assign):
            if isinstance(assign.node, nodes.Filter) and assign.node.name in ("e", "escape"):
                escaped.add(assign.target.name)
        for output in block.find_all(nodes.Output):
            printed += [n for n in output.nodes if not isinstance(n, nodes.TemplateData)]
    return printed, escaped


def test_a_template_that_escapes_by_hand_escapes_everything_but_what_the_code_made():
    env = engines["jinja2"].env
    root = Path(settings.BASE_DIR) / "templates" / "jinja2"
    checked = {}
    for path in sorted(root.rglob("*.html")):
        name = str(path.relative_to(root))
        printed, escaped = _unescaped_outputs(env, path.read_text())
        if not printed:
            continue
        said = {_said(node) for node in printed}
        plain = {s for s in said if not s.endswith(("|e", "|escape")) and s not in escaped}
        made = MADE.get(name, set())
        assert plain <= made, f"{name} prints unescaped: {plain - made}"
        checked[name] = plain
    # Every template that escapes by hand is listed, and every value listed is printed.
    assert checked == MADE


HOSTILE = '<b x="1">&'  # ten characters: fits every column below
# An "&" that does not start a character reference: one printed raw.
RAW_AMPERSAND = re.compile(r"&(?![a-z]+;|#[0-9]+;)")


def test_every_value_from_the_database_is_escaped_in_a_queue_row(client, tmp_path):
    """A stuck trade whose every shown text column holds markup: the page
    shows it as text. (The contract's shapes keep such values out; the row
    must not depend on that.)"""
    first = reserved("pt_live_X01", 2 * H, event_id="evt_reservedX01")
    import_events(tmp_path, first, envelopes.delivery("evt_reservedX01", outcome="failed"))
    pipeline.ingest([parse_envelope(reserved("pt_live_X01", 2 * H, event_id="evt_pX01"))], "poll")
    holder = create_user("holder", PASSWORD, "operations")
    type(holder).objects.filter(pk=holder.pk).update(username=HOSTILE)
    Claim.objects.create(trade=Trade.objects.get(transact_id="pt_live_X01"), user=holder)
    Trade.objects.filter(transact_id="pt_live_X01").update(
        transact_id=f"pt_live_{HOSTILE}", amount_currency=HOSTILE
    )
    Partner.objects.filter(partner_id="ptn_acme").update(partner_id=f"ptn_{HOSTILE}")
    Pool.objects.filter(pool_id="EUR-USDT").update(pool_id=HOSTILE)
    WebhookEvent.objects.filter(event_id="evt_pX01").update(type=f"trade.{HOSTILE}")
    DeliveryAttempt.objects.filter(event_id="evt_reservedX01").update(
        event_id=f"evt_{HOSTILE}", outcome=HOSTILE
    )
    # An admin sees every control, the take-over button naming the holder too.
    client.force_login(create_user("ada", PASSWORD, "admin"))

    response = client.get(QUEUE)

    table = response.content.decode().split('<table class="plain list stuck">')[1]
    row = table.split("</table>")[0]
    assert "<b " not in row
    # The links too: reverse() keeps an id's "&", which a browser would read
    # as the start of a character reference.
    assert not RAW_AMPERSAND.search(row), RAW_AMPERSAND.search(row)
    # The id twice (the row's id, its link), the partner, the pool, the
    # currency, the read's type, the delivery's outcome twice and its
    # event, the holder twice (named, and in the take-over button's title).
    assert row.count("&lt;b x=&#34;1&#34;&gt;&amp;") == 11, row
