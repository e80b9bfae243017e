"""The sandbox's WSGI application: a routing table and the views it names.

Every answer is JSON. A view returns ``(status, payload)`` or raises a
``Refusal``; the app adds the 403 for a control-API client off loopback, the
405 with ``Allow``, the 404, and writes one log line per request (never a
body, never a header value). ``sandbox.server`` serves it.
"""

import threading
import time
import traceback
from contextlib import suppress
from datetime import UTC, datetime
from http import HTTPStatus
from socket import SHUT_RDWR
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from sandbox.loopback import is_loopback_address
from sandbox.refusals import Refusal, bad_request
from sandbox.state import SandboxState

MAX_BODY = 1024 * 1024
RECEIVER_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
# Beyond these the sandbox answers 501, as the standard library's handler did.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# Put into the environ by sandbox.server's request handler.
REQUEST_URI = "sandbox.request_uri"  # the request target as sent
CONNECTION = "sandbox.connection"  # the client's socket, for a dropped connection


SERVER = "0PoolsSandbox/1"


class Dropped(Exception):
    """Close the connection and send nothing (the ``drop`` fault)."""


class Request:
    """What a view needs from one WSGI request."""

    def __init__(self, environ):
        self.environ = environ
        self.method = environ["REQUEST_METHOD"]
        self.target = environ[REQUEST_URI]
        self.client = environ["REMOTE_ADDR"]
        self.query = {}
        self.started = time.monotonic()
        self.note = ""  # for the log line

    def header(self, name):
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))

    def body(self):
        length = self.environ.get("CONTENT_LENGTH")
        if not length:
            return b""
        if not length.strip().isdigit():
            raise bad_request("Content-Length is not a number")
        size = int(length)
        if size > MAX_BODY:
            raise Refusal(413, "too_large", f"bodies are limited to {MAX_BODY} bytes")
        return self.environ["wsgi.input"].read(size)

    def json(self):
        try:
            return orjson.loads(self.body())
        except orjson.JSONDecodeError:
            raise bad_request("body is not JSON") from None


def _precise_now():
    """Always six decimals, unlike ``rfc3339``: requests within one second
    stay apart, and text order stays time order."""
    return f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"


# --- the status API and the partner endpoints ---------------------------------------


def healthz(app, request):
    return 200, {"status": "ok"}


def status_read(app, request, transact_id):
    state = app.state
    fault = state.take_fault(transact_id)
    auth_ok = state.authorized(request.header("Authorization"))
    entry = {
        "method": request.method,
        "path": request.target,
        "transact_id": transact_id,
        "auth_ok": auth_ok,
        "fault": fault.kind if fault else None,
    }

    def seen(status):
        state.record_request(**entry, status=status, at=_precise_now())

    if fault:
        request.note = f"fault={fault.kind}"
        if fault.delay:
            app.stopping.wait(fault.delay)
        if fault.drop:
            seen(None)
            raise Dropped
        if fault.status is not None:
            seen(fault.status)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            code = "rate_limited" if fault.status == 429 else "sandbox_fault"
            raise Refusal(fault.status, code, headers=headers)
    if not auth_ok:
        seen(401)
        raise Refusal(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
    trade = state.trade(transact_id)
    seen(200 if trade else 404)
    if trade is None:
        raise Refusal(404, "not_found")
    return 200, trade


def partner_webhook(app, request, partner_id):
    headers = {name: request.header(name) or "" for name in RECEIVER_HEADERS}
    record = app.state.receiver.receive(partner_id, request.body(), headers, _precise_now())
    request.note = f"verified={record['verified']}"
    if record["reason"]:
        request.note += f" reason={record['reason']}"
    answered = record["answered"]
    if answered == 404:
        return answered, {"error": {"code": "not_found"}}
    if answered == 400:
        return answered, {"error": {"code": "rejected", "message": record["reason"]}}
    if answered >= 400:
        return answered, {"error": {"code": "sandbox_respond"}}
    return answered, {"received": True}


# --- the control API ------------------------------------------------------------------


def list_faults(app, request):
    return 200, {"faults": app.state.pending_faults()}


def add_faults(app, request):
    return 201, {"faults": app.state.add_faults(request.json())}


def clear_faults(app, request):
    app.state.clear_faults()
    return list_faults(app, request)


def list_trades(app, request):
    return 200, app.state.summary()


def get_trade(app, request, transact_id):
    trade = app.state.trade(transact_id)
    if trade is None:
        raise Refusal(404, "not_found")
    return 200, trade


def set_trade(app, request, transact_id):
    return 200, app.state.set_trade(transact_id, request.json())


def list_requests(app, request):
    return 200, app.state.requests_seen()


def clear_requests(app, request):
    app.state.clear_requests()
    return list_requests(app, request)


def add_partner(app, request, partner_id):
    return 200, app.state.receiver.add_partner(partner_id, request.json())


def list_received(app, request):
    partner = request.query.get("partner", [None])[-1]
    return 200, app.state.receiver.received_by(partner)


def clear_received(app, request):
    app.state.receiver.clear_received()
    return list_received(app, request)


def reset(app, request):
    app.state.reset()
    return 200, {"status": "reset"}


# path -> {method: view}; each {} segment is passed to the view, unquoted.
ROUTES = {
    "/healthz": {"GET": healthz},
    "/v1/trades/{}": {"GET": status_read},
    "/partners/{}/webhooks": {"POST": partner_webhook},
    "/_sandbox/faults": {"GET": list_faults, "POST": add_faults, "DELETE": clear_faults},
    "/_sandbox/trades": {"GET": list_trades},
    "/_sandbox/trades/{}": {"GET": get_trade, "POST": set_trade},
    "/_sandbox/requests": {"GET": list_requests, "DELETE": clear_requests},
    "/_sandbox/partners/{}": {"POST": add_partner},
    "/_sandbox/received": {"GET": list_received, "DELETE": clear_received},
    "/_sandbox/reset": {"POST": reset},
}
_PATTERNS = [(path.split("/")[1:], views) for path, views in ROUTES.items()]


def _route(segments):
    """(views by method, captured segments) for a path, or (None, None)."""
    for pattern, views in _PATTERNS:
        if len(pattern) == len(segments) and all(
            part in ("{}", segment) for part, segment in zip(pattern, segments, strict=True)
        ):
            captured = [s for part, s in zip(pattern, segments, strict=True) if part == "{}"]
            return views, captured
    return None, None


class App:
    """The WSGI callable: ``App(state, stopping, log)``.

    ``stopping`` is set when the server stops, and ends a ``delay`` fault
    early; ``log`` takes one line of text.
    """

    def __init__(self, state: SandboxState, stopping: threading.Event, log):
        self.state = state
        self.stopping = stopping
        self.log = log

    def __call__(self, environ, start_response):
        request = Request(environ)
        headers = {}
        try:
            status, payload = self._dispatch(request)
        except Refusal as refusal:
            status, payload, headers = refusal.status, refusal.body(), refusal.headers
        except Dropped:
            self._log_done(request, "dropped")
            with suppress(OSError):
                environ[CONNECTION].shutdown(SHUT_RDWR)
            # wsgiref takes this as the client's going and writes nothing more.
            raise ConnectionAbortedError("dropped by a fault") from None
        except (BrokenPipeError, ConnectionResetError):
            self._log_done(request, "-", "client went away")
            raise
        except Exception:
            request.note = traceback.format_exc(limit=-1).strip().replace("\n", " | ")
            status, payload = 500, {"error": {"code": "internal"}}
        body = b"" if status == 204 else orjson.dumps(payload)
        fields = [("Content-Type", "application/json")] if body else []
        # Named as the sandbox, not as wsgiref, which would name itself.
        fields += [("Server", SERVER), ("Content-Length", str(len(body))), *headers.items()]
        self._log_done(request, status)
        start_response(_status_line(status), fields)
        return [body]

    def _dispatch(self, request):
        if request.method not in METHODS:
            raise Refusal(501, "unsupported", f"Unsupported method ({request.method!r})")
        # Split before unquoting: an id holding %2F stays one segment.
        url = urlsplit(request.target)
        segments = [unquote(part) for part in url.path.split("/")[1:]]
        if segments[:1] == ["_sandbox"] and not is_loopback_address(request.client):
            raise Refusal(403, "forbidden", "the control API answers loopback clients only")
        views, captured = _route(segments)
        if views is None:
            raise Refusal(404, "not_found")
        view = views.get(request.method)
        if view is None:
            raise Refusal(405, "method_not_allowed", headers={"Allow": ", ".join(views)})
        request.query = parse_qs(url.query)
        return view(self, request, *captured)

    def _log_done(self, request, status, note=None):
        took = (time.monotonic() - request.started) * 1000
        line = f"{request.client} {request.method} {request.target} {status} {took:.0f}ms"
        self.log(f"{line} {note or request.note}".rstrip())


def _status_line(status):
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:  # a 4xx or 5xx a fault made up
        return f"{status} "
