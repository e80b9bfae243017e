"""One masked CSRF token per response, for both template engines.

Django masks the session's CSRF secret afresh for every template rendered
(its own context processor once a render, the Jinja2 backend's values on
every read): the layout's header and sign-out form and a list's table took
five masks of 32 random characters each per page. A mask per response is what
BREACH asks for (the token differs between responses); this context
processor, listed for both engines after Django's own, gives every read in
one request the same masked token, and masks again if the secret changed
meanwhile (a sign-in rotates it).
"""

from django.middleware.csrf import get_token
from django.utils.functional import lazy
from django.utils.html import format_html
from django.utils.safestring import SafeString


def masked_token(request):
    """``get_token(request)``, masked once per request and secret."""
    kept = request.__dict__.get("_masked_csrf_token")
    secret = request.META.get("CSRF_COOKIE")
    if kept is not None and secret is not None and kept[0] == secret:
        return kept[1]
    token = get_token(request)
    request._masked_csrf_token = (request.META.get("CSRF_COOKIE"), token)
    return token


def _input(request):
    return format_html(
        '<input type="hidden" name="csrfmiddlewaretoken" value="{}">', masked_token(request)
    )


# Made once: each ``lazy(...)`` makes a class (150 us here), each call of
# what it made only an instance.
_lazy_token = lazy(masked_token, str)
_lazy_input = lazy(_input, SafeString, str)


def csrf(request):
    """``csrf_token`` and ``csrf_input`` as Django's engines give them, one mask a request."""
    return {"csrf_token": _lazy_token(request), "csrf_input": _lazy_input(request)}
