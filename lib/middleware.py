"""Request hygiene that holds for every page."""

from django.core.exceptions import BadRequest
from django.http import Http404

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
