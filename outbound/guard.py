"""An HTTP client that cannot be pointed at the inside of our network.

Checking a URL before the request is not enough: DNS can answer a public
address to the check and a private one to the connection. So the check lives
where the socket is opened. ``GuardedBackend`` resolves the host once, refuses
if any answer is not globally routable, and connects to exactly the address it
checked; nothing resolves the name a second time. TLS still verifies the
certificate against the URL's host name, because httpcore passes the origin's
host as ``server_hostname`` to ``start_tls`` whatever ``connect_tcp`` connected
to.

``check_url`` gives an admin early feedback when an endpoint is set; the
connect-time guard is what protects.
"""

import ipaddress
import socket
import ssl
from contextlib import contextmanager

import httpcore
import httpx

CONNECT_TIMEOUT = 3.0
ALLOWED_SCHEMES = ("http", "https")

# Ranges ``is_global`` lets through (or only drops on newer CPython patch
# releases) that can still lead back inside a network.
_EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(net)
    for net in (
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "192.0.0.0/24",  # IETF protocol assignments
        "192.88.99.0/24",  # 6to4 relay anycast
        "2002::/16",  # 6to4: embeds an IPv4 address
        "64:ff9b::/96",  # NAT64: embeds an IPv4 address
        "64:ff9b:1::/48",  # local-use NAT64
        "2001:20::/28",  # ORCHIDv2
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing
    )
)


class ForbiddenTarget(Exception):
    """The endpoint is not one we send to: a non-public address, a scheme
    other than http(s), or credentials in the URL. Nothing was sent."""


def forbidden_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``address`` (an ``ipaddress`` address) must not be connected to, or
    ``None`` if it is globally routable."""
    if address.version == 6 and address.ipv4_mapped is not None:
        # ::ffff:10.0.0.1 reaches 10.0.0.1; judge the IPv4 address.
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:  # 169.254.169.254: cloud instance metadata
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.version == 6 and address.is_site_local:
        return "a site-local address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if any(address in net for net in _EXTRA_BLOCKED if net.version == address.version):
        return "a shared or translated address"
    if not address.is_global:
        return "an address that is not globally routable"
    return None


def resolve_public(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Resolve ``host`` once and return its addresses in the resolver's order.

    Raises ``ForbiddenTarget`` if any answer is not globally routable (unless
    ``allow_private``): one private answer is enough, because which answer a
    connection uses is not ours to choose. Raises ``socket.gaierror`` if the
    name does not resolve.
    """
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = []
    for family, _type, _proto, _canonname, sockaddr in answers:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    if not addresses:
        raise socket.gaierror(f"{host} has no IPv4 or IPv6 address")
    if not allow_private:
        for address in addresses:
            reason = forbidden_reason(ipaddress.ip_address(address))
            if reason:
                raise ForbiddenTarget(f"partner endpoint {host} resolves to {address}, {reason}")
    return addresses


def check_scheme_and_credentials(url: httpx.URL) -> None:
    """Refuse what no setting allows: other schemes, credentials, no host."""
    if url.scheme not in ALLOWED_SCHEMES:
        raise ForbiddenTarget(f"partner endpoint scheme {url.scheme or '(none)'!r} is not http(s)")
    if url.userinfo:
        # Never echo them: the message ends up in delivery records.
        raise ForbiddenTarget("partner endpoint URL carries credentials")
    if not url.host:
        raise ForbiddenTarget("partner endpoint URL has no host")


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise ``ForbiddenTarget`` if ``url`` is not an acceptable partner
    endpoint right now. For form validation; deliveries are guarded again when
    they connect, since DNS may answer differently by then."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ForbiddenTarget(f"partner endpoint URL is invalid: {exc}") from None
    check_scheme_and_credentials(parsed)
    if allow_private:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        resolve_public(parsed.host, port, allow_private=False)
    except (socket.gaierror, UnicodeError):
        raise ForbiddenTarget(f"partner endpoint {parsed.host} does not resolve") from None


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, but every TCP connection goes to an address
    ``resolve_public`` checked, given to the socket as a literal so the name is
    never looked up again."""

    def __init__(self, *, allow_private: bool):
        self.allow_private = allow_private
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addresses = resolve_public(host, port, allow_private=self.allow_private)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        error = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                # Unreachable (say, an IPv6 answer without an IPv6 route): try
                # the next checked address. A timeout is not retried, so the
                # connect timeout stays a bound.
                error = exc
        raise error

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise ForbiddenTarget("a unix socket is never a partner endpoint")

    def sleep(self, seconds):
        self._inner.sleep(seconds)


# httpcore's exceptions as httpx raises them to callers (the same names in
# both libraries), most specific first.
_MAPPED = tuple(
    (getattr(httpcore, name), getattr(httpx, name))
    for name in (
        "ConnectTimeout",
        "ReadTimeout",
        "WriteTimeout",
        "PoolTimeout",
        "TimeoutException",
        "ConnectError",
        "ReadError",
        "WriteError",
        "NetworkError",
        "RemoteProtocolError",
        "LocalProtocolError",
        "ProtocolError",
        "UnsupportedProtocol",
    )
)


@contextmanager
def _as_httpx_errors():
    try:
        yield
    except ForbiddenTarget:
        raise
    except Exception as exc:
        for theirs, ours in _MAPPED:
            if isinstance(exc, theirs):
                raise ours(str(exc)) from exc
        raise


class _Body(httpx.SyncByteStream):
    """A response body read from the pool, its errors raised as httpx's."""

    def __init__(self, stream):
        self._stream = stream

    def __iter__(self):
        with _as_httpx_errors():
            yield from self._stream

    def close(self):
        if hasattr(self._stream, "close"):
            self._stream.close()


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport (its public ``BaseTransport`` interface) over an
    httpcore connection pool whose every connection ``GuardedBackend`` opened.

    The pool keys connections by the URL's (scheme, host, port) and only a
    connection the guard opened can be in it, so reusing one never skips the
    check.
    """

    def __init__(self, *, allow_private: bool, ssl_context: ssl.SSLContext | None = None):
        if ssl_context is None:
            ssl_context = httpx.create_ssl_context(trust_env=False)
        elif not ssl_context.check_hostname or ssl_context.verify_mode != ssl.CERT_REQUIRED:
            raise ValueError("partner endpoints are always verified: keep check_hostname on")
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=10,
            max_keepalive_connections=5,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(allow_private=allow_private),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        check_scheme_and_credentials(request.url)
        sent = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            answer = self._pool.handle_request(sent)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_Body(answer.stream),
            extensions=answer.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def guarded_client(
    *, allow_private: bool, timeout: float = 5.0, ssl_context: ssl.SSLContext | None = None
) -> httpx.Client:
    """The client for partner endpoints.

    ``allow_private`` lets tests and the sandbox reach loopback and private
    addresses; schemes and credentials are refused either way. Redirects are
    never followed (a 3xx is the caller's failed delivery) and the environment
    is not trusted, so no ``HTTPS_PROXY`` can route around the guard.
    ``ssl_context`` only replaces the trust roots (tests); one that does not
    verify certificates and host names is refused.
    """
    return httpx.Client(
        transport=GuardedTransport(allow_private=allow_private, ssl_context=ssl_context),
        timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
        follow_redirects=False,
        trust_env=False,
    )
