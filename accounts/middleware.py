"""Sign-out after idle time (idle: no person at work); nothing a signed-in person
sees is cached."""

import time
from contextvars import ContextVar

from django.contrib.auth import middleware as auth_middleware
from django.utils.cache import patch_cache_control

# A person's requests move the idle clock at most this often (seconds): staying
# signed in costs one session write a minute, not one a request.
TOUCH_EVERY = 60
TOUCHED = "_idle_touched"

# Elements that poll by themselves (htmx ``every``): their requests are not
# activity. See templates/timeline/order.html and templates/actions/run.html.
POLLING = frozenset({"timeline-live", "run-progress"})


_session = ContextVar("opspanel_session", default=None)


def current_session():
    """The session of the request being served (by ``AuthenticationMiddleware``), or None."""
    return _session.get()


class AuthenticationMiddleware(auth_middleware.AuthenticationMiddleware):
    """Django's, with this request's session at hand for the sign-in backend
    while the request is served: the user it read in the session's own
    statement is taken from there (``backends.read_with_session``). Set and
    reset around each request, so nothing of one request is seen by the
    next one a thread serves."""

    # Served synchronously (the reset must come after the request, not after
    # a coroutine is made); the panel runs under WSGI.
    async_capable = False

    def __call__(self, request):
        token = _session.set(getattr(request, "session", None))
        try:
            return super().__call__(request)
        finally:
            _session.reset(token)


class NoStoreMiddleware:
    """What a signed-in person sees (pages, CSV exports, JSON) is not kept by
    a browser's or a proxy's cache: support desks share machines."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and "Cache-Control" not in response:
            patch_cache_control(response, no_store=True, private=True)
        return response


class IdleTimeoutMiddleware:
    """Extend the session (``SESSION_COOKIE_AGE``) on requests a person makes.

    Django's SESSION_SAVE_EVERY_REQUEST would extend it on every request,
    htmx polls included, so a tab left on a pending order would never sign
    out, and would write the session row on every request. This extends it
    on a person's requests only, and at most once every ``TOUCH_EVERY``
    seconds: the sign-out comes between ``SESSION_COOKIE_AGE`` and that
    plus a minute after the last request.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        polling = request.headers.get("HX-Request") and request.headers.get("HX-Trigger") in POLLING
        session = getattr(request, "session", None)
        if session is not None and not polling and not session.is_empty():
            now = int(time.time())
            if now - session.get(TOUCHED, 0) >= TOUCH_EVERY:
                session[TOUCHED] = now  # marks it modified: saved, cookie renewed
        return response
