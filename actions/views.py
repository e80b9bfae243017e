from django.conf import settings
from django.contrib import messages
from django.db.models import Max
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers

from accounts.permissions import Action, Read, can, require
from audit.models import Entry
from browse.views import get_event_for_user
from lib.errors import NotFound, found_or_404
from lib.listing import Listing, show_list
from lib.tasks import send_on_commit
from partners.models import Endpoint, SigningSecret
from partners.services import host_of
from records.models import DeliveryAttempt, Trade, WebhookEvent, order_url

from . import services, tasks
from .filters import EVERYONE, RunFilter
from .forms import ConfirmForm
from .models import Run

# The runs "Retry the failed ones" makes anew; a single action is retried
# through its own confirm step.
BULK = (Action.BULK_REPOLL, Action.BULK_REPLAY, Action.BULK_RECOVER)
SAMPLE = 10  # failed items the retry's confirm step names


def get_trade_for_user(user, transact_id):
    """The one way a view reaches a trade from the URL (404 when unknown)."""
    return found_or_404(
        Trade.objects.select_related("order__partner", "pool", "claim__user"),
        f"There is no trade {transact_id}.",
        transact_id=transact_id,
    )


def get_run_for_user(user, pk):
    return found_or_404(
        Run.objects.select_related("order__partner", "user"), f"There is no run {pk}.", pk=pk
    )


def submit(request, ask):
    """Queue a confirmed run through ``ask()`` and send its task on commit: its
    progress page, or ``(None, status)`` with the refusal in the messages
    (nothing was run)."""
    try:
        asked = ask()
    except services.Refused as refused:
        messages.error(request, str(refused))
        return None, refused.status
    if asked.repeated:
        messages.info(request, "Already submitted: this is the run that form started.")
    else:
        send_on_commit(tasks.carry_out_run, asked.run.pk)
    return redirect("actions:run", pk=asked.run.pk), 200


def _confirm(request, *, ask, heading, target, order, current, what, template_context):
    """GET draws the confirm step (from the record as it is now); POST queues the
    run through ``ask(key=, reason=, drawn=)`` or says why not."""
    status = 200
    if request.method == "POST":
        form = ConfirmForm(request.POST)
        if not form.is_valid():
            status = 400
        else:
            answer, status = submit(request, lambda: ask(**form.cleaned_data))
            if answer:
                return answer
    else:
        form = ConfirmForm(initial={"key": services.new_key(), "drawn": current})
    context = {
        "form": form,
        "heading": heading,
        "target": target,
        "order": order,
        "what": what,
    }
    return render(request, "actions/confirm.html", context | template_context, status=status)


def _ask_run(request, action, target, *, order, current):
    """``ask`` for ``_confirm``: one guarded action on one record."""
    return lambda **confirmed: services.request_run(
        request.user, action, target, current=current, order=order, **confirmed
    )


@require(Action.TRADE_REPOLL)
@require_http_methods(["GET", "POST"])
def repoll_trade(request, transact_id):
    """``POST /trades/<transactId>/repoll``: ask 0Pools for the authoritative status."""
    trade = get_trade_for_user(request.user, transact_id)
    api_host = host_of(settings.OPOOLS_API_URL) or "(OPOOLS_API_URL is not set)"
    what = [
        f"Ask 0Pools ({api_host}) for the status of trade {trade.transact_id}.",
        f"It is {trade.status} here now; the answer is authoritative and goes through the "
        "same pipeline and state machine as webhooks (source: status read).",
        "The poll, its result and any status it changes appear on the order's timeline.",
    ]
    current = services.trade_version(trade)
    return _confirm(
        request,
        # "re-poll trade": the action's title and what it acts on.
        ask=_ask_run(
            request, Action.TRADE_REPOLL, trade.transact_id, order=trade.order, current=current
        ),
        heading=f"{Action.TRADE_REPOLL.label.lower()} trade",
        target=trade.transact_id,
        order=trade.order,
        current=current,
        what=what,
        template_context={"trade": trade},
    )


@require(Action.EVENT_REPLAY)
@require_http_methods(["GET", "POST"])
def replay_event(request, event_id):
    """``POST /events/<eventId>/replay``: re-deliver a stored event to its partner."""
    event = get_event_for_user(request.user, event_id)
    endpoint = Endpoint.objects.filter(partner__partner_id=event.partner_id).first()
    secrets = SigningSecret.objects.active().filter(partner__partner_id=event.partner_id).count()
    previous = DeliveryAttempt.objects.filter(event_id=event.event_id).aggregate(n=Max("attempt"))[
        "n"
    ]
    signed = f"signed with {secrets} current signing secret{'s' if secrets != 1 else ''}"
    instead = services.sent_instead(event)
    if event.source != WebhookEvent.Source.POLL:
        ids = f"Same event id (the partner dedupes), a fresh timestamp, {signed}."
    elif instead is None:
        ids = (
            "0Pools never sent an event for this status; this replays our own status read "
            f"{event.event_id}, an id the partner has never seen. A fresh timestamp, {signed}."
        )
    else:
        ids = (
            f"This replays our own status read {event.event_id}, an id the partner has never "
            f"seen, although 0Pools sent {instead.event_id} for the same status. "
            f"A fresh timestamp, {signed}."
        )
    what = [
        f"Re-deliver {event.type} {event.event_id} to {event.partner_id}"
        + (f" at {host_of(endpoint.url)}." if endpoint else ", which has no webhook endpoint yet."),
        ids,
        f"Previous delivery attempts: {previous or 'none recorded'}. This one is recorded too.",
        "Only the allowlisted event body is sent.",
    ]
    problems = []
    if endpoint is None:
        problems.append(f"{event.partner_id} has no webhook endpoint: the replay will fail.")
    if not secrets:
        problems.append(f"{event.partner_id} has no signing secret: the replay will fail.")
    current = services.event_version(event)
    return _confirm(
        request,
        ask=_ask_run(
            request, Action.EVENT_REPLAY, event.event_id, order=event.order, current=current
        ),
        heading=f"{Action.EVENT_REPLAY.label.lower()} event",
        target=event.event_id,
        order=event.order,
        current=current,
        what=what,
        template_context={"event": event, "problems": problems, "instead": instead},
    )


@require(Action.EVENT_REPLAY)
@require_GET
def replay_latest_state(request, transact_id):
    """From a timeline: the confirm step for the event that tells the current status."""
    trade = get_trade_for_user(request.user, transact_id)
    event = services.latest_state_event(trade)
    if event is None:
        messages.error(
            request, f"No stored event tells that {trade.transact_id} is {trade.status}."
        )
        return redirect(trade.order.get_absolute_url())
    return redirect(reverse("actions:replay", args=[event.event_id]))


@require(Read.RUN)
@require_GET
def run_status(request, pk):
    """A run's progress; the page polls its own partial until the run is finished."""
    run = get_run_for_user(request.user, pk)
    template = "actions/run.html"
    if request.htmx:
        template += "#progress"
    # audit_run_idx serves the entries and the last error.
    entries = Entry.objects.filter(run_id=run.pk).order_by("-at", "-id")[:50]
    context = {"run": run, "entries": entries}
    if run.failed:
        # A run is retried once: once it has been, the way on is its retry's page.
        retried = run.retries.first()
        context |= {
            "last_error": _last_error(run),
            "retried": retried,
            "retry": None if retried else _retry_link(request.user, run),
        }
    return render(request, template, context)


def _last_error(run):
    """The run's newest failed or refused audit entry: why an item failed last.

    None when the failures wrote no entry (a step that crashed): the page
    sends the reader to the worker log.
    """
    failed = [Entry.Result.FAILED, Entry.Result.REFUSED]
    return Entry.objects.filter(run_id=run.pk, result__in=failed).order_by("-at", "-id").first()


def _retry_link(user, run):
    """Where "Retry the failed ones" goes, for ``user``: a bulk run's own retry, a
    single action's confirm step; None before the run is finished or without
    the permission the action needs."""
    if not run.finished or not can(user, run.action):
        return None
    if run.action in BULK:
        return reverse("actions:retry", args=[run.pk])
    if run.action == Action.TRADE_REPOLL:
        return reverse("actions:repoll", args=[run.target])
    if run.action == Action.EVENT_REPLAY:
        return reverse("actions:replay", args=[run.target])
    return None


# The matrix gives every bulk action to the same roles; the service checks
# the retried run's own action as well.
@require(*BULK)
@require_http_methods(["GET", "POST"])
def retry_run(request, pk):
    """``POST /actions/runs/<pk>/retry``: the same bulk action again, as a new
    run over exactly the items of this one that failed."""
    run = get_run_for_user(request.user, pk)
    if run.action not in BULK:
        raise NotFound(
            f"Run {run.pk} is a single {run.get_action_display().lower()}: "
            "it is retried through its own confirm step, linked from its page."
        )
    targets = services.failed_targets(run)
    count = len(targets)
    named = ", ".join(targets[:SAMPLE]) + (", …" if count > SAMPLE else "")
    what = [
        f"Run {run.get_action_display().lower()} again, as a new run, on exactly the {count} "
        f"item{'s' if count != 1 else ''} of run {run.pk} that failed"
        + (f": {named}." if targets else "."),
        "One audit entry per item, with the reason below; the new run has its own progress page.",
        "If the failed set is not the one shown here when you confirm, nothing runs.",
    ]
    problems = []
    retried = run.retries.first()
    if not run.finished:
        problems.append("This run is still going: what failed is not settled yet.")
    elif retried:
        problems.append(f"Run {retried.pk} already retries these: retry what fails there.")
    elif not targets:
        problems.append("Nothing in this run failed: there is nothing to retry.")
    return _confirm(
        request,
        ask=lambda **confirmed: services.request_retry(request.user, run, **confirmed),
        heading="retry the failed items of",
        target=f"run {run.pk}",
        order=run.order,
        current=services.set_version(targets),
        what=what,
        template_context={"problems": problems, "back": reverse("actions:run", args=[run.pk])},
    )


# --- the runs list ------------------------------------------------------------------


def _link_runs(rows):
    for run in rows:
        order = run.order
        run.timeline = order and order_url(order.partner.partner_id, order.partner_reference)


def _runs_context(request, filterset):
    """Whose runs these are, and the one click to the other answer."""
    whose, everyone = filterset.whose()
    kept = request.GET.copy()
    for key in ("after", "format", "who", "user"):
        kept.pop(key, None)
    mine = kept.urlencode()
    kept["who"] = EVERYONE
    return {
        "whose": whose,
        "everyone": everyone,
        "everyone_query": kept.urlencode(),
        "mine_query": mine,
    }


RUNS = Listing(
    name="runs",
    title="Runs",
    filterset=RunFilter,
    # A bulk run's params hold up to 5,000 target ids; the list shows none.
    queryset=lambda: Run.objects.select_related("user", "order__partner").defer("params"),
    # Served by run_created_idx (created_at, id); "mine" by run_user_created_idx.
    time_field="created_at",
    table="actions/runs_table.html",
    csv_columns=[
        ("id", "id"),
        ("createdAt", "created_at"),
        ("user", "user__username"),
        ("action", "action"),
        ("target", "target"),
        ("partnerId", "order__partner__partner_id"),
        ("partnerReference", "order__partner_reference"),
        ("reason", "reason"),
        ("state", "state"),
        ("total", "total"),
        ("done", "done"),
        ("failed", "failed"),
        ("retryOf", "retry_of_id"),
        ("finishedAt", "finished_at"),
    ],
    link=_link_runs,
    summary="actions/runs_summary.html",
    context=_runs_context,
)


@require(Read.RUN)
@require_GET
@vary_on_headers("HX-Request")
def runs(request):
    """``/runs/``: every guarded run, newest first; yours unless you ask for more."""
    return show_list(request, RUNS)
