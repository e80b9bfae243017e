"""Sign-out after idle time, where idle means no person at work."""

# Elements that poll by themselves (htmx ``every``): their requests are not
# activity. See templates/timeline/order.html and templates/actions/run.html.
POLLING = frozenset({"timeline-live", "run-progress"})


class IdleTimeoutMiddleware:
    """Extend the session (``SESSION_COOKIE_AGE``) on requests a person makes.

    Django's SESSION_SAVE_EVERY_REQUEST would extend it on every request,
    htmx polls included, so a tab left on a pending order would never sign
    out. This does the same minus the polls.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        polling = request.headers.get("HX-Request") and request.headers.get("HX-Trigger") in POLLING
        session = getattr(request, "session", None)
        if session is not None and not polling and not session.is_empty():
            session.modified = True
        return response
