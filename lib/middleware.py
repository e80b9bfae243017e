"""Request hygiene that holds for every page; the CSP header; the machine
endpoints' short way past the page middleware."""

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject, CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.core.exceptions import BadRequest
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import Http404
from django.urls import get_resolver

from . import database, errors


class RefuseNulMiddleware:
    """A NUL character can be in no id or filter value the panel stores
    (PostgreSQL refuses it in text), so it never reaches a query: in the path
    it names nothing (404), in the query string it is a bad request (400)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path_info:
            raise Http404("No page has a NUL character in its address.")
        if any("\x00" in key or "\x00" in value for key, value in request.GET.items()):
            raise BadRequest("A NUL character cannot be part of a search or filter.")
        return self.get_response(request)


class DatabaseAwayMiddleware:
    """While PostgreSQL is known to be away (a request found it so moments
    ago and the pool has no connection yet), answer 503 + Retry-After at
    once instead of letting each request wait the pool's timeout and queue
    behind the others. ``lib.database`` says when it is "known"; the health
    check always asks for real."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info != "/healthz" and database.known_away():
            return errors.database_unavailable(request)
        return self.get_response(request)


_POLICIES = {}  # report_only -> (header value, excluded path prefixes), for this process
# What makes a response's policy its own (django-csp's decorators set these).
_OWN_POLICY = tuple(
    name + suffix
    for name in ("_csp_config", "_csp_update", "_csp_replace")
    for suffix in ("", "_ro")
)


@receiver(setting_changed)
def _forget_policies(setting, **kwargs):
    if setting.startswith("CONTENT_SECURITY_POLICY") or setting == "DEBUG":
        _POLICIES.clear()


def _policy(report_only):
    if report_only not in _POLICIES:
        name = "CONTENT_SECURITY_POLICY" + ("_REPORT_ONLY" if report_only else "")
        prefixes = (getattr(settings, name, None) or {}).get("EXCLUDE_URL_PREFIXES") or ()
        _POLICIES[report_only] = (build_policy(report_only=report_only), tuple(prefixes))
    return _POLICIES[report_only]


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware, with the header written once per process.

    django-csp builds the policy string from the settings on every response
    (~40% of the middleware's time on the webhook, issue 14). The panel's
    policy uses no nonce and no per-view policy, so the string is the same
    on every response: made once, and again only if a test changes the
    settings. A response that does carry its own policy (a ``csp_update``
    or ``csp_replace`` decorator), a request that drew a nonce, or DEBUG
    goes through django-csp's own code, unchanged."""

    def process_response(self, request, response):
        if (
            settings.DEBUG
            or getattr(request, "_csp_nonce", None) is not None
            or any(hasattr(response, name) for name in _OWN_POLICY)
        ):
            return super().process_response(request, response)
        for report_only, header, exempt in (
            (False, HEADER, "_csp_exempt"),
            (True, HEADER_REPORT_ONLY, "_csp_exempt_ro"),
        ):
            policy, excluded = _policy(report_only)
            if (
                policy
                and header not in response
                and getattr(response, exempt, False) is False
                and not request.path_info.startswith(excluded)
            ):
                response[header] = policy
        # As django-csp does: a nonce asked for after the header is written is an error.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response


# The machine endpoints (URL name -> the one method its view takes): a
# sender with a signature, a bearer token or a health probe, never a person.
MACHINE_ENDPOINTS = {"webhook": "POST", "keys_verify": "POST", "healthz": "GET"}


class MachineEndpointsMiddleware:
    """Answer the machine endpoints straight from their views, before the
    page middleware (next after ``SecurityMiddleware``, whose headers they keep).

    A webhook, a key check or a health probe reads no session, user, CSRF
    token or message and is no page to frame or to give a policy; running
    the dozen middleware of a page around them was ~15% of a webhook's CPU
    (issue 14). What stays: the 503 with Retry-After while PostgreSQL is
    known to be away (not for /healthz, which always asks for real), the
    Content-Length that ``CommonMiddleware`` sets. Their own answers (JSON
    refusals) are the views'; an exception is answered by the handlers as
    before (500, or 503 when the database went away). Anything else about
    such a request (another method, whose 405 becomes a page; any query
    string, where a NUL is refused) goes the usual way through every
    middleware.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self._routes = {}  # ROOT_URLCONF -> {path: (ResolverMatch, method)}

    def _routes_of(self, urlconf):
        routes = self._routes.get(urlconf)
        if routes is None:
            routes = {}
            resolver = get_resolver(urlconf)
            for name, method in MACHINE_ENDPOINTS.items():
                path = "/" + resolver.reverse(name)  # path_info: no script prefix
                routes[path] = (resolver.resolve(path), method)
            self._routes[urlconf] = routes
        return routes

    def __call__(self, request):
        route = self._routes_of(settings.ROOT_URLCONF).get(request.path_info)
        if route is None or request.method != route[1] or request.META.get("QUERY_STRING"):
            return self.get_response(request)
        match = route[0]
        if match.url_name != "healthz" and database.known_away():
            return errors.database_unavailable(request)
        request.resolver_match = match
        response = match.func(request, *match.args, **match.kwargs)
        if not response.streaming and not response.has_header("Content-Length"):
            response.headers["Content-Length"] = str(len(response.content))
        return response
