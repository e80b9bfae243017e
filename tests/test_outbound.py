"""Outbound webhook deliveries: the guarded client and Standard Webhooks signing.

Everything here runs over real sockets on loopback. The only thing faked is
DNS (``socket.getaddrinfo``), because a resolver cannot be made to rebind for
real in a test.
"""

import contextlib
import socket
import ssl
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from outbound.guard import ForbiddenTarget, check_url, guarded_client
from outbound.signing import deliver, signed_headers
from tests.conftest import OLD_SECRET, SECRET

EVENT_ID = "evt_01J9ZQ4V6S3D2M8K7N5P0R1T2W"
BODY = orjson.dumps({"id": EVENT_ID, "type": "trade.settled", "data": {"quote": "q_1"}})
PUBLIC_ADDRESS = "93.184.215.14"  # globally routable; never connected to


# --- partners on loopback ------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def handle(self):
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                self.server.tls_errors.append(exc)
                return
        super().handle()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.requests.append(
            SimpleNamespace(path=self.path, headers=self.headers, body=body)
        )
        if self.server.hold:
            # A partner that never answers; released at teardown.
            self.server.release.wait(10)
            return
        self.send_response(self.server.status)
        for name, value in self.server.reply_headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(self.server.reply_body)))
        self.end_headers()
        self.wfile.write(self.server.reply_body)

    def log_message(self, format, *args):
        pass


class Partner(HTTPServer):
    """An HTTP(S) endpoint on loopback that records the requests reaching it."""

    def __init__(self, host="127.0.0.1", port=0, *, status=204, headers=None, body=b"", hold=False):
        super().__init__((host, port), _Handler)
        self.requests = []
        self.tls_errors = []
        self.sni = []
        self.status = status
        self.reply_headers = headers or {}
        self.reply_body = body
        self.hold = hold
        self.release = threading.Event()

    @property
    def port(self):
        return self.server_address[1]

    def use_tls(self, certfile, keyfile):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        context.sni_callback = lambda _sock, name, _context: self.sni.append(name)
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )


@pytest.fixture
def start_partner():
    started = []

    def start(**options):
        partner = Partner(**options)
        thread = threading.Thread(target=partner.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((partner, thread))
        return partner

    yield start
    for partner, thread in started:
        partner.release.set()
        partner.shutdown()
        partner.server_close()
        thread.join()


@pytest.fixture
def listeners():
    """Bare listening sockets on 127.0.0.1 and [::1], same port, never
    accepting: a connection to either waits in the backlog, where
    ``connections()`` finds it (the kernel queues it before connect() returns)."""
    v4 = socket.create_server(("127.0.0.1", 0))
    port = v4.getsockname()[1]
    sockets = [v4]
    with contextlib.suppress(OSError):  # no IPv6 loopback: the [::1] cases skip
        sockets.append(socket.create_server(("::1", port), family=socket.AF_INET6))

    def connections():
        count = 0
        for listener in sockets:
            listener.setblocking(False)
            while True:
                try:
                    connection, _ = listener.accept()
                except BlockingIOError:
                    break
                connection.close()
                count += 1
        return count

    yield SimpleNamespace(port=port, has_ipv6=len(sockets) == 2, connections=connections)
    for listener in sockets:
        listener.close()


@pytest.fixture
def dns(monkeypatch):
    """A resolver with made-up names: ``answers[name]`` is a list of answers
    given one per lookup (the last one repeats), an answer being a list of
    addresses or an exception. Other names resolve for real. Every lookup is
    recorded, literals included: httpcore's socket.create_connection() looks
    up the address it is given, so a connection shows up as a literal lookup."""
    real = socket.getaddrinfo
    resolver = SimpleNamespace(answers={}, lookups=[])

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        resolver.lookups.append(host)
        script = resolver.answers.get(host)
        if script is None:
            return real(host, port, family, type, proto, flags)
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, Exception):
            raise answer
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port, 0, 0))
            if ":" in ip
            else (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))
            for ip in answer
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return resolver


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for partner.example (it is its own CA)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-days", "1",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-subj", "/CN=partner.example", "-addext", "subjectAltName=DNS:partner.example",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return SimpleNamespace(cert=str(cert), key=str(key))


def send(url, *, allow_private, timeout=5.0, secrets=(SECRET,), ssl_context=None):
    with guarded_client(
        allow_private=allow_private, timeout=timeout, ssl_context=ssl_context
    ) as client:
        return deliver(client, url, EVENT_ID, BODY, list(secrets))


# --- the guard -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address", "reason"),
    [
        ("127.0.0.1", "127.0.0.1", "a loopback address"),
        ("localhost", "127.0.0.1", "a loopback address"),
        ("10.0.0.5", "10.0.0.5", "a private address"),
        ("172.16.0.1", "172.16.0.1", "a private address"),
        ("192.168.1.1", "192.168.1.1", "a private address"),
        ("169.254.169.254", "169.254.169.254", "a link-local address"),
        ("100.64.1.1", "100.64.1.1", "a shared or translated address"),
        ("0.0.0.0", "0.0.0.0", "an unspecified address"),  # noqa: S104 (a target, not a bind)
        ("224.0.0.1", "224.0.0.1", "a multicast address"),
        ("[::1]", "::1", "a loopback address"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1", "a loopback address"),
        ("[::ffff:10.0.0.1]", "::ffff:10.0.0.1", "a private address"),
        ("[fd00::1]", "fd00::1", "a private address"),
        ("[fe80::1]", "fe80::1", "a link-local address"),
    ],
)
def test_non_public_targets_are_refused_before_any_connection(
    listeners, dns, host, address, reason
):
    if "::1]" in host and not listeners.has_ipv6:
        pytest.skip("no IPv6 loopback to listen on")
    url = f"http://{host}:{listeners.port}/hooks"
    started = time.monotonic()

    delivery = send(url, allow_private=False)

    assert delivery.outcome == "failed"
    assert delivery.status_code is None
    bare_host = host.strip("[]")
    assert (
        delivery.error == f"refused: partner endpoint {bare_host} resolves to {address}, {reason}"
    )
    assert time.monotonic() - started < 1
    # Nothing reached the loopback listeners, and the guard's lookup was the
    # only one: socket.create_connection() never ran.
    assert listeners.connections() == 0
    assert dns.lookups == [bare_host]
    with pytest.raises(ForbiddenTarget, match=reason):
        check_url(url, allow_private=False)


def test_the_listeners_would_have_seen_a_connection(listeners):
    # The control for the test above: let the same URL through, and the
    # connection lands in the backlog (nobody answers, so it times out).
    delivery = send(f"http://127.0.0.1:{listeners.port}/hooks", allow_private=True, timeout=0.2)

    assert delivery.outcome == "failed"
    assert delivery.error.startswith("timeout:")
    assert listeners.connections() == 1


def test_allow_private_reaches_the_loopback_partner(start_partner):
    partner = start_partner(status=204)

    delivery = send(f"http://127.0.0.1:{partner.port}/hooks?v=1", allow_private=True)

    assert delivery.outcome == "succeeded"
    assert delivery.status_code == 204
    assert delivery.error == ""
    assert delivery.duration_ms >= 0
    [request] = partner.requests
    assert request.path == "/hooks?v=1"
    assert request.body == BODY


def test_localhost_by_name_reaches_the_partner_when_private_is_allowed(start_partner):
    partner = start_partner()

    delivery = send(f"http://localhost:{partner.port}/hooks", allow_private=True)

    assert delivery.outcome == "succeeded"
    assert len(partner.requests) == 1


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1:{port}/hooks",
        "ws://127.0.0.1:{port}/hooks",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{port}/_",
    ],
)
def test_only_http_and_https_are_sent_even_when_private_is_allowed(listeners, url):
    url = url.format(port=listeners.port)

    delivery = send(url, allow_private=True)

    assert delivery.outcome == "failed"
    assert delivery.status_code is None
    assert delivery.error.startswith("refused: partner endpoint scheme")
    assert listeners.connections() == 0
    with pytest.raises(ForbiddenTarget, match="is not http"):
        check_url(url, allow_private=True)


def test_credentials_in_the_url_are_refused_and_not_echoed(listeners):
    url = f"http://partner:hunter2@127.0.0.1:{listeners.port}/hooks"

    delivery = send(url, allow_private=True)

    assert delivery.outcome == "failed"
    assert delivery.error == "refused: partner endpoint URL carries credentials"
    assert listeners.connections() == 0
    with pytest.raises(ForbiddenTarget, match="credentials") as refused:
        check_url(url, allow_private=True)
    assert "hunter2" not in str(refused.value)


def test_a_redirect_is_a_failed_delivery_and_is_not_followed(start_partner, listeners):
    elsewhere = f"http://127.0.0.1:{listeners.port}/internal"
    partner = start_partner(status=302, headers={"location": elsewhere})

    delivery = send(f"http://127.0.0.1:{partner.port}/hooks", allow_private=True)

    assert delivery.outcome == "failed"
    assert delivery.status_code == 302
    assert delivery.error == "redirect 302 not followed"
    assert len(partner.requests) == 1
    assert listeners.connections() == 0


def test_an_error_status_fails_without_keeping_the_body(start_partner):
    partner = start_partner(status=500, body=b"stack trace with internal hostnames")

    delivery = send(f"http://127.0.0.1:{partner.port}/hooks", allow_private=True)

    assert delivery.outcome == "failed"
    assert delivery.status_code == 500
    assert delivery.error == "HTTP 500 (35 bytes)"


def test_a_partner_that_never_answers_fails_within_the_timeout(start_partner):
    partner = start_partner(hold=True)
    started = time.monotonic()

    delivery = send(f"http://127.0.0.1:{partner.port}/hooks", allow_private=True, timeout=0.5)

    elapsed = time.monotonic() - started
    assert delivery.outcome == "failed"
    assert delivery.status_code is None
    assert delivery.error == "timeout: ReadTimeout timed out"
    assert 0.4 < elapsed < 1.5
    assert 400 <= delivery.duration_ms < 1500
    assert len(partner.requests) == 1


def test_a_closed_port_is_a_connection_error(listeners):
    port = listeners.port
    # Nothing listens on 127.0.0.2 at that port.
    delivery = send(f"http://127.0.0.2:{port}/hooks", allow_private=True)

    assert delivery.outcome == "failed"
    assert delivery.status_code is None
    assert delivery.error.startswith("connection error: ConnectError")


@pytest.mark.parametrize(
    "host",
    [
        "192.0.0.1",  # IETF protocol assignments
        "198.18.0.1",  # benchmarking
        "192.88.99.1",  # 6to4 relay anycast
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "[2002:a00:1::1]",  # 6to4 wrapping 10.0.0.1
        "[64:ff9b::a00:1]",  # NAT64 wrapping 10.0.0.1
        "[fec0::1]",  # site-local
        "[ff02::1]",  # multicast
        "[::]",
    ],
)
def test_check_url_refuses_other_ways_back_inside(host):
    with pytest.raises(ForbiddenTarget, match="resolves to"):
        check_url(f"https://{host}/hooks", allow_private=False)


def test_check_url_accepts_a_public_endpoint(dns):
    dns.answers["partner.example"] = [[PUBLIC_ADDRESS, "2606:4700::1111"]]

    assert check_url("https://partner.example/hooks", allow_private=False) is None
    assert check_url(f"https://{PUBLIC_ADDRESS}/hooks", allow_private=False) is None
    # A mapped public IPv4 address is judged as that address.
    assert check_url("https://[::ffff:8.8.8.8]/hooks", allow_private=False) is None


def test_check_url_reports_a_name_that_does_not_resolve(dns):
    dns.answers["gone.example"] = [socket.gaierror(socket.EAI_NONAME, "Name or service not known")]

    with pytest.raises(ForbiddenTarget, match="gone.example does not resolve"):
        check_url("https://gone.example/hooks", allow_private=False)


# --- DNS: resolved once, checked, pinned ------------------------------------------


def test_one_private_answer_among_public_ones_is_enough_to_refuse(listeners, dns):
    dns.answers["partner.example"] = [[PUBLIC_ADDRESS, "127.0.0.1"]]

    delivery = send(f"http://partner.example:{listeners.port}/hooks", allow_private=False)

    assert delivery.error == (
        "refused: partner endpoint partner.example resolves to 127.0.0.1, a loopback address"
    )
    assert dns.lookups == ["partner.example"]
    assert listeners.connections() == 0


def test_a_name_rebound_after_the_admin_check_is_refused_at_connect(listeners, dns):
    # Public when the admin saves the endpoint, loopback by the time we send.
    dns.answers["partner.example"] = [[PUBLIC_ADDRESS], ["127.0.0.1"]]
    url = f"http://partner.example:{listeners.port}/hooks"
    check_url(url, allow_private=False)

    delivery = send(url, allow_private=False)

    assert delivery.outcome == "failed"
    assert delivery.error == (
        "refused: partner endpoint partner.example resolves to 127.0.0.1, a loopback address"
    )
    assert listeners.connections() == 0


def test_the_connection_goes_to_the_address_that_was_checked(start_partner, dns):
    # The name is looked up once per connection; a second lookup would answer
    # 127.0.0.2, where another listener waits on the same port. allow_private
    # is on only because both ends must be local; the pinning is the same code
    # either way, and the test above shows the check applies to this lookup.
    checked = start_partner(host="127.0.0.1")
    rebound = socket.create_server(("127.0.0.2", checked.port))
    dns.answers["partner.example"] = [["127.0.0.1"], ["127.0.0.2"]]
    try:
        delivery = send(f"http://partner.example:{checked.port}/hooks", allow_private=True)

        assert delivery.outcome == "succeeded"
        assert len(checked.requests) == 1
        assert checked.requests[0].headers["host"] == f"partner.example:{checked.port}"
        # One lookup of the name, then socket.create_connection() given the
        # literal it returned.
        assert dns.lookups == ["partner.example", "127.0.0.1"]
        rebound.setblocking(False)
        with pytest.raises(BlockingIOError):
            rebound.accept()
    finally:
        rebound.close()


def test_each_new_connection_is_resolved_and_checked_again(start_partner, dns):
    # The pool keys connections by host name; a new connection for the same
    # name must not inherit an earlier answer. The partner speaks HTTP/1.0,
    # so every request opens a new connection.
    first = start_partner(host="127.0.0.1")
    second = start_partner(host="127.0.0.2", port=first.port)
    dns.answers["partner.example"] = [["127.0.0.1"], ["127.0.0.2"]]
    url = f"http://partner.example:{first.port}/hooks"

    with guarded_client(allow_private=True) as client:
        deliveries = [deliver(client, url, EVENT_ID, BODY, [SECRET]) for _ in range(2)]

    assert [d.outcome for d in deliveries] == ["succeeded", "succeeded"]
    assert (len(first.requests), len(second.requests)) == (1, 1)


# --- TLS: the certificate is checked against the URL's host -------------------


def test_tls_verifies_the_url_host_while_connecting_to_the_pinned_address(
    start_partner, dns, certificate
):
    partner = start_partner()
    partner.use_tls(certificate.cert, certificate.key)
    dns.answers["partner.example"] = [["127.0.0.1"]]
    trust = ssl.create_default_context(cafile=certificate.cert)

    delivery = send(
        f"https://partner.example:{partner.port}/hooks", allow_private=True, ssl_context=trust
    )

    assert delivery.outcome == "succeeded"
    assert partner.sni == ["partner.example"]
    assert len(partner.requests) == 1


def test_tls_refuses_a_certificate_for_another_name(start_partner, dns, certificate):
    partner = start_partner()
    partner.use_tls(certificate.cert, certificate.key)
    dns.answers["other.example"] = [["127.0.0.1"]]
    trust = ssl.create_default_context(cafile=certificate.cert)

    delivery = send(
        f"https://other.example:{partner.port}/hooks", allow_private=True, ssl_context=trust
    )

    assert delivery.outcome == "failed"
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.error
    assert "other.example" in delivery.error
    assert partner.requests == []


def test_tls_trusts_only_real_certificate_authorities_by_default(start_partner, dns, certificate):
    partner = start_partner()
    partner.use_tls(certificate.cert, certificate.key)
    dns.answers["partner.example"] = [["127.0.0.1"]]

    delivery = send(f"https://partner.example:{partner.port}/hooks", allow_private=True)

    assert delivery.outcome == "failed"
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.error
    assert partner.requests == []


def test_a_context_that_skips_verification_is_refused():
    careless = ssl.create_default_context()
    careless.check_hostname = False

    with pytest.raises(ValueError, match="always verified"):
        guarded_client(allow_private=True, ssl_context=careless)


# --- signing -------------------------------------------------------------------


def test_every_secret_signs_so_a_partner_mid_rotation_verifies(start_partner):
    partner = start_partner()

    delivery = send(
        f"http://127.0.0.1:{partner.port}/hooks", allow_private=True, secrets=(SECRET, OLD_SECRET)
    )

    assert delivery.outcome == "succeeded"
    [request] = partner.requests
    headers = dict(request.headers.items())
    assert request.headers["webhook-id"] == EVENT_ID
    assert request.headers["content-type"] == "application/json"
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, OLD_SECRET):
        assert Webhook(secret).verify(request.body, headers) == orjson.loads(BODY)


def test_a_retry_keeps_the_event_id_and_gets_a_fresh_timestamp():
    first = signed_headers(EVENT_ID, BODY, [SECRET], now=datetime.now(UTC) - timedelta(minutes=2))
    retry = signed_headers(EVENT_ID, BODY, [SECRET])

    assert first["webhook-id"] == retry["webhook-id"] == EVENT_ID
    assert int(retry["webhook-timestamp"]) - int(first["webhook-timestamp"]) in (119, 120, 121)
    assert first["webhook-signature"] != retry["webhook-signature"]
    Webhook(SECRET).verify(BODY, retry)


def test_the_timestamp_is_the_same_instant_whatever_the_zone_of_now():
    instant = datetime.now(UTC).replace(microsecond=0)
    in_utc = signed_headers(EVENT_ID, BODY, [SECRET], now=instant)
    elsewhere = signed_headers(
        EVENT_ID, BODY, [SECRET], now=instant.astimezone(timezone(timedelta(hours=2)))
    )

    assert elsewhere == in_utc
    assert in_utc["webhook-timestamp"] == str(int(instant.timestamp()))
    Webhook(SECRET).verify(BODY, elsewhere)


def test_signing_needs_a_secret_and_an_aware_time():
    with pytest.raises(ValueError, match="no webhook signing secret"):
        signed_headers(EVENT_ID, BODY, [])
    with pytest.raises(ValueError, match="aware"):
        signed_headers(EVENT_ID, BODY, [SECRET], now=datetime(2026, 1, 1))
