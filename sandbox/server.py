"""A simulated 0Pools upstream on loopback: ``manage.py sandbox serve``.

For demos and for tests. ``start(port=0, orders=20, seed=5)`` serves in a
daemon thread and returns a ``SandboxServer``: ``.url``, ``.stop()`` (or use
it as a context manager), and ``.state``, the ``SandboxState`` the handlers
use (``trades``, ``requests``, ``received``, ``reset()``, ...). It plays three
parts, all in memory, nothing persisted:

**The status API** the panel re-polls (contract, "Status read")::

    GET /v1/trades/{transactId}      Authorization: Bearer <api key>
        200 the trade object, 404 {"error": {"code": "not_found"}},
        401 {"error": {"code": "unauthorized"}} without the right key,
        or whatever a queued fault says (below), which comes before the key check.

The answer carries the contract's trade fields *and* internal execution
detail the contract forbids (keys from ``forbidden.FORBIDDEN_KEYS``, values
holding ``forbidden.FORBIDDEN_MARKERS``) at the top level, inside ``amount`` or
``deliverAmount`` and inside a ``statusHistory`` entry, besides whatever the
stream's own event carried. The panel's allowlist has to drop all of it.

Where the truth comes from: ``generate(orders, seed, start)`` is replayed
and, per ``transactId``, the trade object with the longest ``statusHistory``
is kept: the last one the network made, whatever order it was delivered in
(ties keep the first delivered, so an idempotent retry does not replace the
original ``requestId``). ``scn_late_reserved`` is therefore ``settled``, and
``scn_illegal_move`` is ``settled`` with history reserved, failed, settled:
a re-poll of it shows the panel an authoritative illegal move.

The stuck-resolution rule: a trade still ``reserved`` at the end of the
stream has, upstream, mostly been resolved since. Each one draws from
``random.Random(f"{seed}:{transactId}")``; below ``RESOLVED_SHARE`` (0.8) it
becomes ``settled`` at the stream's last event time plus 2 to 30 minutes
(``statusHistory`` extended, ``updatedAt`` set to that time); otherwise it
stays ``reserved``. The scenario order ``scn_stuck_reserved`` always
resolves to ``settled``. The same draw then adds the internal detail, so the
same ``orders``, ``seed`` and ``start`` always give the same bytes.

**The control API** (sandbox only, no auth, answered to loopback clients
only; every answer is JSON)::

    POST   /_sandbox/faults     a fault or a list of them, queued in order:
        {"match": "pt_live_x" | "*", "status": 429, "retry_after": 1, "times": 2}
        {"match": "*", "status": 503}
        {"match": "*", "delay": 3.0}      sleep, then answer normally
        {"match": "*", "drop": true}      close the connection, no answer
        ``match`` defaults to "*", ``times`` to 1; ``delay`` may go with
        ``status``. Each status-API request takes the first queued fault
        that matches its id, and uses up one of its ``times``. A status
        fault's body is {"error": {"code": "rate_limited"}} for a 429,
        {"error": {"code": "sandbox_fault"}} otherwise.
        -> {"faults": [pending faults]}
    GET    /_sandbox/faults     -> {"faults": [...]}
    DELETE /_sandbox/faults     clears them -> {"faults": []}
    GET    /_sandbox/trades     -> [{"transactId", "partnerId", "partnerReference", "status"}]
    GET    /_sandbox/trades/{id}  the stored truth (as the status API answers it)
    POST   /_sandbox/trades/{id}  {"status": "settled"} (optional "failureCode",
        "at") moves an existing trade: statusHistory extended, updatedAt set;
        or a whole trade object ({"object": "trade", ...}) sets or creates it,
        stored as sent. -> the trade
    GET    /_sandbox/requests   status-API requests seen, oldest first:
        [{"method", "path", "transact_id", "auth_ok", "status" (null when
        dropped), "fault" (null, "status", "delay", "drop"), "at"}]
    DELETE /_sandbox/requests   clears the list
    POST   /_sandbox/partners/{ptn_id}  {"secrets": ["whsec_..."], "respond": 200}
        registers (or replaces) a partner endpoint; ``respond`` is one status
        or a list used one per verified delivery, the last repeating.
    GET    /_sandbox/received?partner=ptn_x  deliveries got, oldest first:
        [{"partner", "webhook_id", "timestamp", "verified", "reason",
          "secret_position", "event", "received_at", "answered"}]
    DELETE /_sandbox/received   clears the list
    POST   /_sandbox/reset      back to the state right after start

**A partner's webhook endpoint**, for the panel's redeliveries::

    POST /partners/{ptn_id}/webhooks

It verifies the Standard Webhooks signature against every secret registered
for the partner, records the delivery either way, and answers the partner's
``respond`` when verified, 400 when not (or when the verified body is not
JSON), 404 for an unregistered partner (recorded too). It never answers a
3xx.

``GET /healthz`` answers {"status": "ok"}. One line per request goes to the
log (stderr by default): never a body, never a header value.
"""

import binascii
import ipaddress
import random
import socket
import sys
import threading
import time
import traceback
from base64 import b64decode
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hmac import compare_digest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sandbox.forbidden import add_internal_detail
from sandbox.network import DEFAULT_START, generate

DEFAULT_API_KEY = "sk_test_sandbox_operations_key_000000000000"
RESOLVED_SHARE = 0.8  # of trades stuck in reserved at the end of the stream
ALWAYS_RESOLVED = "scn_stuck_reserved"
MAX_BODY = 1024 * 1024
MAX_DELAY = 120.0  # seconds
TRADE_STATUSES = ("reserved", "settled", "failed", "released", "returned")
RECEIVER_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class Refusal(Exception):
    """An answer other than success: status, error code, optional message."""

    def __init__(self, status, code, message=None, headers=None):
        super().__init__(message or code)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self):
        error = {"code": self.code}
        if self.message:
            error["message"] = self.message
        return {"error": error}


def _bad_request(message):
    return Refusal(400, "bad_request", message)


def _iso(moment, precise=False):
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if precise else "%Y-%m-%dT%H:%M:%SZ"
    return moment.astimezone(UTC).strftime(pattern)


def _parse_time(text):
    return datetime.fromisoformat(text).astimezone(UTC)


def _copy(value):
    return orjson.loads(orjson.dumps(value))


# --- the upstream truth ----------------------------------------------------------


def upstream_trades(orders, seed, start=DEFAULT_START):
    """transactId -> the upstream's trade object after the stream (module docstring)."""
    trades = {}
    stream_end = None
    for envelope in generate(orders, seed, start):
        if stream_end is None or envelope["createdAt"] > stream_end:
            stream_end = envelope["createdAt"]  # one RFC 3339 format: text order is time order
        data = envelope["data"]
        if data.get("object") != "trade":
            continue
        known = trades.get(data["transactId"])
        if known is None or len(data["statusHistory"]) > len(known["statusHistory"]):
            trades[data["transactId"]] = data
    end = _parse_time(stream_end) if stream_end else start
    truth = {}
    for transact_id, trade in trades.items():
        rng = random.Random(f"{seed}:{transact_id}")
        trade = _copy(trade)
        _resolve_stuck(rng, trade, end)
        add_internal_detail(rng, trade, rng.randint(1, 2))
        add_internal_detail(rng, trade[rng.choice(("amount", "deliverAmount"))], 1)
        add_internal_detail(rng, rng.choice(trade["statusHistory"]), 1)
        truth[transact_id] = trade
    return truth


def _resolve_stuck(rng, trade, stream_end):
    if trade["status"] != "reserved":
        return
    roll = rng.random()
    settled_at = _iso(stream_end + timedelta(seconds=rng.randint(120, 1800)))
    if roll < RESOLVED_SHARE or trade["partnerReference"] == ALWAYS_RESOLVED:
        trade["status"] = "settled"
        trade["statusHistory"].append({"status": "settled", "at": settled_at})
        trade["updatedAt"] = settled_at


def _moved(trade, change):
    """``trade`` after a ``{"status": ...}`` move from the control API."""
    unknown = set(change) - {"status", "failureCode", "at"}
    if unknown:
        raise _bad_request(
            f"unknown fields {sorted(unknown)}: send a whole trade object "
            '({"object": "trade", ...}) to set anything but status, failureCode, at'
        )
    status = change.get("status")
    if status not in TRADE_STATUSES:
        raise _bad_request(f"status must be one of {', '.join(TRADE_STATUSES)}")
    at = change.get("at")
    if at is None:
        at = datetime.now(UTC).replace(microsecond=0)
        # A hand-made trade without a readable history: now will do.
        with suppress(KeyError, IndexError, TypeError, ValueError):
            at = max(at, _parse_time(trade["statusHistory"][-1]["at"]) + timedelta(seconds=1))
        at = _iso(at)
    elif not isinstance(at, str):
        raise _bad_request("at must be an RFC 3339 time")
    trade = _copy(trade)
    trade["status"] = status
    if "failureCode" in change:
        trade["failureCode"] = change["failureCode"]
    history = trade.get("statusHistory")
    history = history if isinstance(history, list) else []
    trade["statusHistory"] = [*history, {"status": status, "at": at}]
    trade["updatedAt"] = at
    return trade


# --- faults ------------------------------------------------------------------------


@dataclass
class Fault:
    match: str = "*"
    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    drop: bool = False
    times: int = 1

    @classmethod
    def parse(cls, raw):
        if not isinstance(raw, dict):
            raise _bad_request("a fault is a JSON object")
        unknown = set(raw) - {"match", "status", "retry_after", "delay", "drop", "times"}
        if unknown:
            raise _bad_request(f"unknown fault fields {sorted(unknown)}")
        match = raw.get("match", "*")
        status = raw.get("status")
        retry_after = raw.get("retry_after")
        delay = raw.get("delay", 0)
        drop = raw.get("drop", False)
        times = raw.get("times", 1)
        if not isinstance(match, str) or not match:
            raise _bad_request('match is a transactId or "*"')
        if status is not None and (type(status) is not int or not 400 <= status <= 599):
            raise _bad_request("status must be a 4xx or 5xx")
        if retry_after is not None:
            if status is None:
                raise _bad_request("retry_after goes with a status")
            if isinstance(retry_after, bool) or not isinstance(retry_after, int | float | str):
                raise _bad_request("retry_after is seconds or an HTTP date")
            if isinstance(retry_after, float) and retry_after.is_integer():
                retry_after = int(retry_after)
            retry_after = str(retry_after)
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise _bad_request("delay is a number of seconds")
        if not 0 <= delay <= MAX_DELAY:
            raise _bad_request(f"delay must be between 0 and {MAX_DELAY:g} seconds")
        if not isinstance(drop, bool):
            raise _bad_request("drop is true or false")
        if drop and status is not None:
            raise _bad_request("a dropped connection has no status")
        if not (drop or status is not None or delay):
            raise _bad_request("a fault needs a status, a delay or drop")
        if type(times) is not int or times < 1:
            raise _bad_request("times is a count of 1 or more")
        return cls(match, status, retry_after, float(delay), drop, times)

    @property
    def kind(self):
        if self.drop:
            return "drop"
        return "status" if self.status is not None else "delay"

    def as_json(self):
        return {
            "match": self.match,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "drop": self.drop,
            "times": self.times,
        }


# --- partner endpoints -----------------------------------------------------------


def _secret_problem(secret):
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        return "does not start with whsec_"
    try:
        raw = b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        return "is not valid base64 after whsec_"
    return None if raw else "is empty"


def _respond_codes(respond):
    codes = respond if isinstance(respond, list) else [respond]
    if not codes:
        raise _bad_request("respond needs at least one status")
    for code in codes:
        if type(code) is not int or not 200 <= code <= 599:
            raise _bad_request("respond is an HTTP status (200-599) or a list of them")
        if 300 <= code <= 399:
            raise _bad_request("the receiver never answers a 3xx")
    return codes


def _verify(body, headers, secrets):
    """(1-based position of the secret that verifies, None) or (None, reason)."""
    reason = "no secret registered"
    for position, secret in enumerate(secrets, start=1):
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
        except WebhookVerificationError as error:
            reason = str(error)
        except UnicodeDecodeError:
            return None, "body is not UTF-8"
        except ValueError:  # binascii.Error too: "garbage", "v1,%%%"
            return None, "webhook-signature is malformed"
        else:
            return position, None
    return None, reason


# --- state ---------------------------------------------------------------------------


class SandboxState:
    """Everything the server knows; the handlers and tests go through its methods."""

    def __init__(self, trades, *, api_key):
        self.lock = threading.Lock()
        self.api_key = api_key
        self._initial = _copy(trades)
        self.trades = trades  # transactId -> trade object (the upstream truth)
        self.faults: list[Fault] = []
        self.requests: list[dict] = []  # status-API requests seen
        self.partners: dict[str, dict] = {}  # ptn id -> {"secrets", "respond", "verified"}
        self.received: list[dict] = []  # deliveries to partner endpoints

    def reset(self):
        with self.lock:
            self.trades = _copy(self._initial)
            self.faults.clear()
            self.requests.clear()
            self.partners.clear()
            self.received.clear()

    # status API

    def authorized(self, header):
        scheme, _, key = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return False
        return compare_digest(key.strip().encode(), self.api_key.encode())

    def trade(self, transact_id):
        with self.lock:
            trade = self.trades.get(transact_id)
            return None if trade is None else _copy(trade)

    def set_trade(self, transact_id, body):
        """Set or move a trade's truth from a control-API body; return the trade."""
        if not isinstance(body, dict):
            raise _bad_request("send a JSON object")
        with self.lock:
            if body.get("object") == "trade":
                trade = _copy(body)
                if trade.setdefault("transactId", transact_id) != transact_id:
                    raise _bad_request("transactId differs from the one in the path")
            elif transact_id in self.trades:
                trade = _moved(self.trades[transact_id], body)
            else:
                raise Refusal(404, "not_found", "unknown trade: send a whole trade object")
            self.trades[transact_id] = trade
            return _copy(trade)

    def summary(self):
        with self.lock:
            return [
                {
                    "transactId": transact_id,
                    "partnerId": trade.get("partnerId"),
                    "partnerReference": trade.get("partnerReference"),
                    "status": trade.get("status"),
                }
                for transact_id, trade in self.trades.items()
            ]

    def add_faults(self, raw):
        faults = [Fault.parse(item) for item in (raw if isinstance(raw, list) else [raw])]
        with self.lock:
            self.faults.extend(faults)
        return self.pending_faults()

    def clear_faults(self):
        with self.lock:
            self.faults.clear()

    def pending_faults(self):
        with self.lock:
            return [fault.as_json() for fault in self.faults]

    def take_fault(self, transact_id):
        """The first queued fault for this id, one of its ``times`` used up; or None."""
        with self.lock:
            for fault in self.faults:
                if fault.match in ("*", transact_id):
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def record_request(self, **entry):
        entry["at"] = _iso(datetime.now(UTC), precise=True)
        with self.lock:
            self.requests.append(entry)

    def requests_seen(self):
        with self.lock:
            return list(self.requests)

    def clear_requests(self):
        with self.lock:
            self.requests.clear()

    # partner endpoints

    def add_partner(self, partner_id, body):
        if not isinstance(body, dict):
            raise _bad_request("send a JSON object")
        unknown = set(body) - {"secrets", "respond"}
        if unknown:
            raise _bad_request(f"unknown fields {sorted(unknown)}")
        secrets = body.get("secrets")
        if not isinstance(secrets, list) or not secrets:
            raise _bad_request("secrets is a list of whsec_ secrets")
        for position, secret in enumerate(secrets, start=1):
            if problem := _secret_problem(secret):
                raise _bad_request(f"secret #{position} {problem}")
        codes = _respond_codes(body.get("respond", 200))
        with self.lock:
            self.partners[partner_id] = {"secrets": secrets, "respond": codes, "verified": 0}
        return {"partner": partner_id, "secrets": len(secrets), "respond": codes}

    def receive(self, partner_id, body, headers):
        """Verify and record one delivery; return the record (``answered`` is the status)."""
        with self.lock:
            partner = self.partners.get(partner_id)
        record = {
            "partner": partner_id,
            "webhook_id": headers.get("webhook-id") or None,
            "timestamp": headers.get("webhook-timestamp") or None,
            "verified": False,
            "reason": None,
            "secret_position": None,
            "event": None,
            "received_at": _iso(datetime.now(UTC), precise=True),
            "answered": None,
        }
        with suppress(orjson.JSONDecodeError):
            record["event"] = orjson.loads(body)
        if partner is None:
            record["reason"], record["answered"] = "unknown partner", 404
        else:
            position, reason = _verify(body, headers, partner["secrets"])
            record["verified"] = position is not None
            record["secret_position"] = position
            if position is None:
                record["reason"], record["answered"] = reason, 400
            elif record["event"] is None:
                record["reason"], record["answered"] = "body is not JSON", 400
        with self.lock:
            if record["answered"] is None:
                codes = partner["respond"]
                record["answered"] = codes[min(partner["verified"], len(codes) - 1)]
                partner["verified"] += 1
            self.received.append(record)
        return dict(record)

    def received_by(self, partner_id=None):
        with self.lock:
            return [r for r in self.received if partner_id in (None, r["partner"])]

    def clear_received(self):
        with self.lock:
            self.received.clear()


# --- HTTP -------------------------------------------------------------------------------


def _is_loopback_address(text):
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def is_loopback(host):
    """True when every address ``host`` names is a loopback address."""
    if _is_loopback_address(host):
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(_is_loopback_address(info[4][0]) for info in infos)


class _Handler(BaseHTTPRequestHandler):
    server_version = "0PoolsSandbox/1"
    timeout = 30  # seconds a client may take to send its request

    def version_string(self):
        return self.server_version

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # one line per request, written by _answer or _drop; the defaults are off
    def log_request(self, code="-", size="-"):
        pass

    def log_message(self, format, *args):
        self.server.sandbox.log_line(f"{self.client_address[0]} {format % args}")

    def send_error(self, code, message=None, explain=None):
        codes = {400: "bad_request", 414: "uri_too_long", 501: "unsupported", 505: "bad_version"}
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            # An unreadable request line leaves the 0.9 default, which sends no
            # status line or headers; nobody speaks 0.9 to this server.
            self.request_version = "HTTP/1.0"
        self._answer(code, Refusal(code, codes.get(code, "error"), message).body())

    def _dispatch(self):
        self._started = time.monotonic()
        self._note = ""
        try:
            url = urlsplit(self.path)
            segments = [unquote(part) for part in url.path.split("/")[1:]]
            self._route(segments, parse_qs(url.query))
        except Refusal as refusal:
            self._answer(refusal.status, refusal.body(), refusal.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            self._log_done("-", "client went away")
        except Exception:
            self._note = traceback.format_exc(limit=-1).strip().replace("\n", " | ")
            self._answer(500, {"error": {"code": "internal"}})

    def _route(self, segments, query):
        method = self.command
        state = self.server.sandbox.state
        head = segments[0] if segments else ""
        if head == "_sandbox" and not _is_loopback_address(self.client_address[0]):
            raise Refusal(403, "forbidden", "the control API answers loopback clients only")
        match segments:
            case ["healthz"]:
                self._allow(method, "GET")
                self._answer(200, {"status": "ok"})
            case ["v1", "trades", transact_id]:
                self._allow(method, "GET")
                self._status_read(transact_id)
            case ["partners", partner_id, "webhooks"]:
                self._allow(method, "POST")
                record = state.receive(partner_id, self._body(), self._receiver_headers())
                self._note = f"verified={record['verified']}"
                if record["reason"]:
                    self._note += f" reason={record['reason']}"
                self._answer(record["answered"], self._receiver_answer(record))
            case ["_sandbox", "faults"]:
                self._allow(method, "GET", "POST", "DELETE")
                if method == "POST":
                    self._answer(201, {"faults": state.add_faults(self._json())})
                    return
                if method == "DELETE":
                    state.clear_faults()
                self._answer(200, {"faults": state.pending_faults()})
            case ["_sandbox", "trades"]:
                self._allow(method, "GET")
                self._answer(200, state.summary())
            case ["_sandbox", "trades", transact_id]:
                self._allow(method, "GET", "POST")
                if method == "POST":
                    self._answer(200, state.set_trade(transact_id, self._json()))
                    return
                trade = state.trade(transact_id)
                if trade is None:
                    raise Refusal(404, "not_found")
                self._answer(200, trade)
            case ["_sandbox", "requests"]:
                self._allow(method, "GET", "DELETE")
                if method == "DELETE":
                    state.clear_requests()
                self._answer(200, state.requests_seen())
            case ["_sandbox", "partners", partner_id]:
                self._allow(method, "POST")
                self._answer(200, state.add_partner(partner_id, self._json()))
            case ["_sandbox", "received"]:
                self._allow(method, "GET", "DELETE")
                if method == "DELETE":
                    state.clear_received()
                partner = query.get("partner", [None])[-1]
                self._answer(200, state.received_by(partner))
            case ["_sandbox", "reset"]:
                self._allow(method, "POST")
                state.reset()
                self._answer(200, {"status": "reset"})
            case _:
                raise Refusal(404, "not_found")

    def _allow(self, method, *allowed):
        if method not in allowed:
            raise Refusal(405, "method_not_allowed", headers={"Allow": ", ".join(allowed)})

    def _status_read(self, transact_id):
        sandbox = self.server.sandbox
        state = sandbox.state
        fault = state.take_fault(transact_id)
        auth_ok = state.authorized(self.headers.get("Authorization"))
        entry = {
            "method": self.command,
            "path": self.path,
            "transact_id": transact_id,
            "auth_ok": auth_ok,
            "fault": fault.kind if fault else None,
        }
        if fault:
            self._note = f"fault={fault.kind}"
            if fault.delay:
                sandbox.stopping.wait(fault.delay)
            if fault.drop:
                state.record_request(**entry, status=None)
                self._drop()
                return
            if fault.status is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                code = "rate_limited" if fault.status == 429 else "sandbox_fault"
                state.record_request(**entry, status=fault.status)
                self._answer(fault.status, {"error": {"code": code}}, headers)
                return
        if not auth_ok:
            state.record_request(**entry, status=401)
            raise Refusal(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
        trade = state.trade(transact_id)
        state.record_request(**entry, status=200 if trade else 404)
        if trade is None:
            raise Refusal(404, "not_found")
        self._answer(200, trade)

    def _receiver_headers(self):
        return {name: self.headers.get(name, "") for name in RECEIVER_HEADERS}

    @staticmethod
    def _receiver_answer(record):
        answered = record["answered"]
        if answered == 404:
            return {"error": {"code": "not_found"}}
        if answered == 400:
            return {"error": {"code": "rejected", "message": record["reason"]}}
        if answered >= 400:
            return {"error": {"code": "sandbox_respond"}}
        return {"received": True}

    def _body(self):
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit():
            self.close_connection = True
            raise _bad_request("Content-Length is not a number")
        size = int(length)
        if size > MAX_BODY:
            self.close_connection = True
            raise Refusal(413, "too_large", f"bodies are limited to {MAX_BODY} bytes")
        return self.rfile.read(size)

    def _json(self):
        try:
            return orjson.loads(self._body())
        except orjson.JSONDecodeError:
            raise _bad_request("body is not JSON") from None

    def _answer(self, status, payload, headers=None):
        body = b"" if status == 204 else orjson.dumps(payload)
        try:
            self.send_response(status)
            if body:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            self._note = (self._note + " client went away").strip()
        self._log_done(status)

    def _drop(self):
        self.close_connection = True
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self._log_done("dropped")

    def _log_done(self, status, note=None):
        started = getattr(self, "_started", None)
        took = f" {(time.monotonic() - started) * 1000:.0f}ms" if started else ""
        note = note or getattr(self, "_note", "")
        path = getattr(self, "path", None) or "-"
        line = f"{self.client_address[0]} {self.command or '-'} {path} {status}{took}"
        self.server.sandbox.log_line(f"{line} {note}".rstrip())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # One line, not the default traceback: a sandbox client hanging up is normal.
        kind = sys.exc_info()[0]
        self.sandbox.log_line(f"{client_address[0]} connection error: {kind.__name__}")


class _Server6(_Server):
    address_family = socket.AF_INET6


class SandboxServer:
    """A running sandbox: ``url``, ``state``, ``stop()``; usable as a context manager."""

    def __init__(self, httpd, state, log):
        self.httpd = httpd
        self.state = state
        self.log = log
        self.stopping = threading.Event()
        self._log_lock = threading.Lock()
        host, port = httpd.server_address[:2]
        self.host, self.port = host, port
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        httpd.sandbox = self
        self.thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    def log_line(self, text):
        stream = self.log or sys.stderr
        with self._log_lock:
            stream.write(f"sandbox {datetime.now(UTC):%H:%M:%S} {text}\n")
            stream.flush()

    def wait(self):
        """Block until stopped; Ctrl-C (KeyboardInterrupt) gets through."""
        while self.thread.is_alive():
            self.thread.join(0.5)

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start(
    host="127.0.0.1",
    port=0,
    *,
    orders=100,
    seed=0,
    start=DEFAULT_START,
    api_key=DEFAULT_API_KEY,
    allow_remote=False,
    log=None,
) -> SandboxServer:
    """Build the upstream truth, bind, and serve in a daemon thread.

    ``port=0`` picks a free port (see ``.url``). ``log`` is a text stream
    for the one-line-per-request log, stderr when None. A host that is not
    loopback raises ``ValueError`` unless ``allow_remote``.
    """
    if not allow_remote and not is_loopback(host):
        raise ValueError(f"{host!r} is not a loopback address; the sandbox stays on loopback")
    if not api_key:
        raise ValueError("the status API needs a key")
    state = SandboxState(upstream_trades(orders, seed, start), api_key=api_key)
    server_class = _Server6 if ":" in host else _Server
    httpd = server_class((host, port), _Handler)
    server = SandboxServer(httpd, state, log)
    server.thread.start()
    return server
