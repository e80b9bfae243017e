"""``/reconciliation/<YYYY-MM-DD>``: the daily close, and working its exceptions.

Who may read it and who may resolve or ignore is
``accounts.permissions.MATRIX``; each view names its one rule on its face.
"""

import csv
import io
from datetime import date, timedelta
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from accounts.permissions import Action, Read, can, require
from actions.services import Refused, new_key
from lib.errors import NotFound, wants_json
from lib.exports import cell
from lib.formats import rfc3339, rfc3339_or_none

from . import kinds, services
from .charts import draw_totals
from .forms import WorkForm


def _day(text):
    """The UTC day of the address, or a 404 that says what a day looks like."""
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise NotFound(f"{text!r} is not a day: write it as YYYY-MM-DD (UTC).") from None


def _day_url(day, **query):
    url = reverse("reconciliation:day", args=[day.isoformat()])
    query = {k: v for k, v in query.items() if v}
    return f"{url}?{urlencode(query)}" if query else url


@require(Read.RECONCILIATION)
@require_GET
def index(request):
    """``/reconciliation/``: yesterday (UTC), the last day that is over."""
    return redirect(_day_url(timezone.now().date() - timedelta(days=1)))


@require(Read.RECONCILIATION)
@require_GET
def day_view(request, day):
    """One day's close (or the day computed live), as a page, CSV or JSON."""
    day = _day(day)
    report = services.day_report(day)
    if request.GET.get("format") == "csv":
        return _csv(report)
    if wants_json(request):
        return JsonResponse(_json(report))
    show_all = request.GET.get("show") == "all"
    shown = services.visible(report.items, show_all)
    states = {}
    for item in report.items:
        states[item.shown_state] = states.get(item.shown_state, 0) + 1
    context = {
        "report": report,
        "items": shown,
        "hidden": len(report.items) - len(shown),
        "show_all": show_all,
        "states": states,
        "chart": draw_totals(report.totals),
        "can_work": can(request.user, Action.RECON_RESOLVE),
        "previous": _day_url(day - timedelta(days=1)),
        "next": _day_url(day + timedelta(days=1)),
        "all_link": _day_url(day, show="all"),
        "default_link": _day_url(day),
        "csv_link": _day_url(day, format="csv"),
        "json_link": _day_url(day, format="json"),
        "changed_totals": _changed_totals(report) if report.totals_changed else [],
    }
    return render(request, "reconciliation/day.html", context)


def _changed_totals(report):
    """(pool, status, currency, at the close, now) for each total that moved since the close."""
    key = lambda row: (row["poolId"], row["status"], row["currency"])  # noqa: E731
    before = {key(row): row for row in report.totals}
    after = {key(row): row for row in report.live_totals}
    changed = []
    for k in sorted(before.keys() | after.keys()):
        if before.get(k) != after.get(k):
            changed.append({"key": k, "before": before.get(k), "after": after.get(k)})
    return changed


# --- exports -------------------------------------------------------------------------


def _item_json(item):
    resolution = item.resolution
    return {
        "kind": item.kind,
        "title": item.title,
        "state": item.shown_state,
        "subject": item.subject,
        "transactId": item.transact_id or None,
        "ledgerId": item.ledger_id or None,
        "partnerId": item.facts.get("partnerId"),
        "partnerReference": item.facts.get("partnerReference"),
        "poolId": item.facts.get("poolId"),
        "summary": item.line,
        "note": item.note or None,
        "timeline": item.link,
        "resolution": (
            {
                "state": resolution.state,
                "by": resolution.user.get_username(),
                "at": rfc3339(resolution.at),
                "reason": resolution.reason,
            }
            if resolution
            else None
        ),
    }


def _json(report):
    close = report.close
    return {
        "day": report.day.isoformat(),
        "closed": close is not None,
        "closedAt": rfc3339_or_none(close.closed_at) if close else None,
        "closedBy": close.closed_by if close else None,
        "computedAt": rfc3339(report.now) if report.live else None,
        "totals": report.totals,
        "totalsNow": report.live_totals if report.totals_changed else None,
        "exceptions": [_item_json(item) for item in report.items],
        "lateArrivals": [
            {
                "eventId": a.event_id,
                "what": a.what,
                "receivedAt": rfc3339(a.received_at),
                "closes": [i.subject for i in a.closes],
                "opens": [i.subject for i in a.opens],
            }
            for a in report.arrivals
        ],
    }


CSV_COLUMNS = (
    "record",
    "day",
    "poolId",
    "status",
    "currency",
    "trades",
    "amount",
    "fees",
    "kind",
    "state",
    "subject",
    "transactId",
    "ledgerId",
    "partnerId",
    "partnerReference",
    "summary",
    "note",
    "resolvedBy",
    "resolvedAt",
    "reason",
)


def _csv(report):
    """The day as one table: a ``total`` row per pool, status and currency, then an
    ``exception`` row for each exception, every one whatever its state."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    day = report.day.isoformat()
    for row in report.totals:
        values = dict(row, record="total", day=day)
        writer.writerow([cell(values.get(column)) for column in CSV_COLUMNS])
    for item in report.items:
        data = _item_json(item)
        resolution = data["resolution"] or {}
        values = data | {
            "record": "exception",
            "day": day,
            "state": data["state"],
            "resolvedBy": resolution.get("by"),
            "resolvedAt": resolution.get("at"),
            "reason": resolution.get("reason"),
        }
        writer.writerow([cell(values.get(column)) for column in CSV_COLUMNS])
    kind = "close" if report.close else "live"
    return HttpResponse(
        out.getvalue(),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="reconciliation-{day}-{kind}.csv"'},
    )


# --- resolve or ignore ------------------------------------------------------------------


# The form picks one of the two; the matrix gives both to the same roles.
@require(Action.RECON_RESOLVE, Action.RECON_IGNORE)
@require_http_methods(["GET", "POST"])
def work(request, day, kind, subject):
    """``POST /reconciliation/<day>/<kind>/<subject>/work``: resolve or ignore one
    exception with a reason (GET draws the confirm step)."""
    day = _day(day)
    if kind not in kinds.KINDS:
        raise NotFound(f"There is no kind of exception called {kind!r}.")
    report = services.day_report(day)
    item = services.find_item(report, kind, subject)
    if item is None:
        raise NotFound(
            f"{day.isoformat()} has no exception {kinds.KINDS[kind].lower()} for {subject}."
        )
    status = 200
    back = _day_url(day)
    if request.method == "POST":
        form = WorkForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                worked = services.work(
                    request.user,
                    day,
                    kind,
                    subject,
                    outcome=data["outcome"],
                    reason=data["reason"],
                    key=data["key"],
                    drawn=data["drawn"],
                    report=report,  # computed above for this request: not twice
                )
            except Refused as refused:
                messages.error(request, str(refused))
                status = refused.status
                report = services.day_report(day)
                item = services.find_item(report, kind, subject) or item
                form = WorkForm(
                    initial={
                        "key": new_key(),
                        "drawn": item.version,
                        "reason": data["reason"],
                        "outcome": data["outcome"],
                    }
                )
            else:
                done = worked.resolution
                if worked.repeated:
                    messages.info(request, "Already done: this form was submitted before.")
                else:
                    messages.success(request, f"{subject}: {done.state}. {done.line}")
                return redirect(back)
        else:
            status = 400
    else:
        outcome = request.GET.get("as")
        form = WorkForm(
            initial={
                "key": new_key(),
                "drawn": item.version,
                "outcome": outcome if outcome in services.OUTCOMES else services.RESOLVED,
            }
        )
    context = {"report": report, "item": item, "form": form, "back": back}
    return render(request, "reconciliation/work.html", context, status=status)
