"""What every page answers the same way: which format a client asked for,
and a "not found" that says why."""

from django.http import Http404, JsonResponse
from django.shortcuts import render


def wants_json(request):
    """``?format=json``, or an ``Accept`` asking for JSON and not for HTML."""
    if request.GET.get("format") == "json":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


class NotFound(Http404):
    """A 404 whose message is written for the person who asked (what was not
    found and where to look instead): the 404 page shows it. Any other 404
    shows only that nothing is there, so no internal message reaches a page."""


def not_found(request, exception=None):
    """``handler404``: the message of a ``NotFound``, as a page or as JSON."""
    message = str(exception) if isinstance(exception, NotFound) else ""
    if wants_json(request):
        error = {"code": "not_found", "message": message or "Nothing is here."}
        return JsonResponse({"error": error}, status=404)
    return render(request, "404.html", {"message": message}, status=404)
