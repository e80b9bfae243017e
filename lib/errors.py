"""Error pages: every 4xx and 5xx in the panel's layout, in words, with a way back.

Django's own handlers answer with a bare page, or with nothing at all
(``require_http_methods`` gives an empty 405). ``opspanel/urls.py`` points
``handler400``/``handler403``/``handler404``/``handler500`` here, the
settings point ``CSRF_FAILURE_VIEW`` and django-axes' lock-out here, and
``ErrorPagesMiddleware`` gives any error answer without a body the page of
its status. A JSON client gets ``{"error": "…"}`` instead, as the webhook
endpoint answers its own refusals.

What a page says is written for the person reading it; an exception's own
text is shown only when it was written for them (``NotFound``,
``accounts.permissions.NotAllowed``), never a server error's.
"""

import logging
import sys
from http import HTTPStatus
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import Http404, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme

from accounts.permissions import NotAllowed

from . import database

log = logging.getLogger(__name__)

HEADINGS = {
    400: "This request could not be read",
    403: "Not allowed",
    404: "Not found",
    405: "Not a request this address takes",
    429: "Too many tries",
    500: "Something went wrong on our side",
    503: "The panel's database is not answering",
}


class NotFound(Http404):
    """A 404 whose message names what was not found: the page shows it."""


def found_or_404(queryset, missing, **lookup):
    """``queryset.get(**lookup)``, or a 404 page that says ``missing``."""
    try:
        return queryset.get(**lookup)
    except queryset.model.DoesNotExist:
        raise NotFound(missing) from None


def wants_json(request):
    """A client of the JSON endpoints: asked for JSON, or sent it (the webhook)."""
    if request.GET.get("format") == "json":
        return True
    accept = request.headers.get("Accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return True
    return request.content_type == "application/json"


def way_back(request):
    """Where the user came from when that was a page of ours, else home.

    Only a same-origin Referer, and only its path and query: a link never
    leads off the panel, whatever a header says."""
    home = reverse("lookup:home")
    referer = request.headers.get("Referer", "")
    try:
        host = request.get_host()
    except DisallowedHost:
        return home
    if not referer or not url_has_allowed_host_and_scheme(
        referer, allowed_hosts={host}, require_https=request.is_secure()
    ):
        return home
    parts = urlsplit(referer)
    if not parts.netloc:  # a Referer is absolute; anything else is not one
        return home
    back = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if request.method == "GET" and back == request.get_full_path():
        return home  # the page that failed is no way back
    return back


def _phrase(status):
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_page(request, status, reason, *, more=(), minimal=False):
    """The answer for ``status``: the panel's page, or JSON for a JSON client.

    ``minimal``: render without the request (no context processors, so no
    user, session, messages or CSRF token: nothing that reads the database).
    """
    if wants_json(request):
        response = JsonResponse({"error": reason}, status=status)
        # The same address answers a page to a browser: caches must tell them apart.
        patch_vary_headers(response, ["Accept"])
        return response
    home = reverse("lookup:home")
    context = {
        "status": status,
        "phrase": _phrase(status),
        "heading": HEADINGS.get(status, _phrase(status)),
        "reason": reason,
        "more": more,
        "back": way_back(request),
        "home": home,
    }
    body = render_to_string("errors/error.html", context, None if minimal else request)
    response = HttpResponse(body, status=status)
    patch_vary_headers(response, ["Accept"])
    return response


# --- the handlers ---------------------------------------------------------------


def bad_request(request, exception):
    # The exception says what was unsafe about the request (a Host header,
    # say): for the log, not for the page.
    return error_page(
        request,
        400,
        "The panel could not read this request (a malformed form, address or header), "
        "so nothing was done.",
        more=["If you followed a link or sent a form, go back and try again."],
    )


def permission_denied(request, exception):
    if not isinstance(exception, NotAllowed):
        return error_page(request, 403, "You may not do this here, so nothing was done.")
    more = []
    if exception.role is None and request.user.is_authenticated:
        more = [
            f"Your account ({request.user.get_username()}) has no role yet, so the panel "
            "shows it nothing.",
            "Ask a panel admin to give it one: support, operations or admin.",
        ]
    return error_page(request, 403, str(exception), more=more)


def page_not_found(request, exception):
    if isinstance(exception, NotFound):
        reason = str(exception)
    else:
        # The resolver's own message lists the URL patterns it tried.
        reason = f"There is nothing at {request.path[:200]}."
    return error_page(request, 404, reason)


def server_error(request):
    """500: nothing from the database or the session (either may be what
    failed), and never the exception's text. A database that cannot be
    reached is a 503 with ``Retry-After`` instead (``database_unavailable``)."""
    if database.unavailable(sys.exc_info()[1]):
        database.mark_away()
        return database_unavailable(request)
    reason = (
        "The panel failed to answer this request; nothing you did caused it, and it "
        "has been logged."
    )
    more = [
        "If you were starting an action, look at the audit log before trying again: "
        "it shows whether it ran."
    ]
    try:
        return error_page(request, 500, reason, more=more, minimal=True)
    except Exception:  # the page itself failed: answer all the same
        log.exception("the 500 page failed to render")
        return HttpResponse(
            "Server error. The panel failed to answer this request.",
            status=500,
            content_type="text/plain",
        )


def database_unavailable(request):
    """503 + ``Retry-After`` while PostgreSQL is away (restarting, stopped, cut
    off): nothing was stored or changed, and trying again shortly works. A
    webhook sender gets JSON and retries, as it would after any 5xx."""
    try:
        response = error_page(
            request,
            503,
            "The panel cannot reach its database just now (it may be restarting), so "
            "nothing was done.",
            more=[
                f"Try again in a few seconds; the panel comes back as soon as the database "
                f"does. A webhook sender should retry after {database.RETRY_AFTER_SECONDS} s."
            ],
            minimal=True,
        )
    except Exception:  # the page itself failed: answer all the same
        log.exception("the 503 page failed to render")
        response = HttpResponse(
            "Service unavailable: the database is not answering. Try again shortly.",
            status=503,
            content_type="text/plain",
        )
    response["Retry-After"] = str(database.RETRY_AFTER_SECONDS)
    return response


def csrf_failure(request, reason=""):
    """``CSRF_FAILURE_VIEW``: a form whose token did not match."""
    return error_page(
        request,
        403,
        "This form could not be trusted: its security token is missing or out of date "
        "(the page may have been open across a sign-in or a sign-out). Nothing was done.",
        more=["Go back, reload the page and try again."],
    )


def locked_out(request, original_response=None, credentials=None):
    """django-axes' answer to a locked-out sign-in (``AXES_LOCKOUT_CALLABLE``)."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return error_page(
        request,
        429,
        "Too many failed sign-ins for this username from this address: signing in is "
        f"locked for {minutes} minutes.",
        more=["Ask a panel admin if you cannot wait."],
    )


def _method_not_allowed(request, response):
    allowed = response.get("Allow", "")
    return (
        f"{request.path[:200]} does not take a {request.method} request"
        + (f" (it takes {allowed})" if allowed else "")
        + ", so nothing was done."
    )


class ErrorPagesMiddleware:
    """An error answer with no body gets the page of its status, its headers
    kept (a 405's ``Allow``). Django's ``require_http_methods`` answers 405
    with nothing."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code < 400
            or response.streaming
            or response.content
            or request.method == "HEAD"
        ):
            return response
        status = response.status_code
        if status == 405:
            reason = _method_not_allowed(request, response)
        else:
            reason = f"{_phrase(status)}: nothing was done."
        page = error_page(request, status, reason)
        for header, value in response.items():
            if header.lower() not in ("content-type", "content-length"):
                page[header] = value
        return page
