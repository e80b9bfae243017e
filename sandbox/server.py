"""A simulated 0Pools upstream on loopback: ``manage.py sandbox serve``.

For demos and for tests. ``start(port=0, orders=20, seed=5)`` serves in a
daemon thread and returns a ``SandboxServer``: ``.url``, ``.stop()`` (or use
it as a context manager), and ``.state``, the ``SandboxState`` the app
uses (``trades``, ``requests``, ``receiver``, ``reset()``, ...). It plays
three parts, all in memory, nothing persisted:

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

Where the truth comes from, and how trades stuck in ``reserved`` at the end
of the stream have been resolved upstream since: ``sandbox.truth``. The
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
for the partner with ingest's own check (``ingest.signatures``: a secret
must pass its ``secret_problem`` to be registered, and a refusal's reason
is ingest's), records the delivery either way, and answers the partner's
``respond`` when verified, 400 when not (or when the verified body is not
JSON), 404 for an unregistered partner (recorded too). It never answers a
3xx.

``GET /healthz`` answers {"status": "ok"}. One line per request goes to the
log (stderr by default): never a body, never a header value.

Inside: ``app`` (the WSGI application: routes and views), ``state``,
``faults``, ``receiver`` and ``truth`` (what it knows), ``network`` (the
stream it replays); this module binds and serves.
"""

import socket
import sys
import threading
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson

from sandbox.app import CONNECTION, REQUEST_URI, App
from sandbox.loopback import is_loopback
from sandbox.network import DEFAULT_START
from sandbox.refusals import Refusal
from sandbox.state import SandboxState
from sandbox.truth import upstream_trades

DEFAULT_API_KEY = "sk_test_sandbox_operations_key_000000000000"


class _RequestHandler(WSGIRequestHandler):
    """wsgiref's handler, plus two things WSGI does not carry: the request
    target as sent, and the socket, so a ``drop`` fault can close it unanswered."""

    timeout = 30  # seconds a client may take to send its request

    def get_environ(self):
        environ = super().get_environ()
        environ[REQUEST_URI] = self.path
        environ[CONNECTION] = self.connection
        return environ

    def log_request(self, code="-", size="-"):
        """Off: the app writes the one line per request."""

    def send_error(self, code, message=None, explain=None):
        """The JSON error shape for a request the app never sees (an unreadable
        request line, a URI too long, too many headers)."""
        codes = {400: "bad_request", 414: "uri_too_long", 505: "bad_version"}
        if self.request_version == "HTTP/0.9":
            # An unreadable request line leaves the 0.9 default, which sends no
            # status line or headers; nobody speaks 0.9 to this server.
            self.request_version = "HTTP/1.0"
        body = orjson.dumps(Refusal(code, codes.get(code, "error"), message).body())
        note = ""
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            note = " client went away"
        path = getattr(self, "path", None) or "-"
        line = f"{self.client_address[0]} {self.command or '-'} {path} {code}{note}"
        self.server.log_line(line)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # One line, not the default traceback: a sandbox client hanging up is normal.
        kind = sys.exc_info()[0]
        self.log_line(f"{client_address[0]} connection error: {kind.__name__}")


class _Server6(_Server):
    address_family = socket.AF_INET6


class SandboxServer:
    """A running sandbox: ``url``, ``state``, ``stop()``; usable as a context manager."""

    def __init__(self, host, port, state, log=None):
        self.state = state
        self.log = log
        self.stopping = threading.Event()
        self._log_lock = threading.Lock()
        app = App(state, self.stopping, self.log_line)
        server_class = _Server6 if ":" in host else _Server
        self.httpd = make_server(host, port, app, server_class, _RequestHandler)
        self.httpd.log_line = self.log_line
        self.host, self.port = self.httpd.server_address[:2]
        host_text = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host_text}:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
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
    server = SandboxServer(host, port, state, log)
    server.thread.start()
    return server
