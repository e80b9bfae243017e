"""``/queues/stuck``: trades reserved past their pool's SLA, and what operations do about them.

Who may read it and who may claim, run bulk actions or change an SLA is
``accounts.permissions.MATRIX``; each view names its one rule on its face.
"""

from urllib.parse import urlencode

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from accounts.permissions import Action, Read, can, require
from actions.forms import ConfirmForm
from actions.services import Refused, new_key
from actions.views import get_trade_for_user, submit
from lib.errors import found_or_404
from lib.listing import Listing, show_list
from records.models import Pool

from . import page, services, stuck
from .charts import figure
from .filters import StuckFilter
from .forms import BULK_ACTIONS, BulkForm, ClaimForm, PoolSlaForm

SAMPLE = 10  # trades a dry run shows of the set


def get_pool_for_user(user, pool_id):
    return found_or_404(Pool.objects.all(), f"There is no pool {pool_id}.", pool_id=pool_id)


def _abilities(user):
    """What the page offers ``user``; the role was read once by the view's guard."""
    return {
        "can_claim": can(user, Action.QUEUE_CLAIM),
        "can_bulk": can(user, Action.BULK_REPOLL) and can(user, Action.BULK_REPLAY),
        "can_set_sla": can(user, Action.POOL_SLA),
        "can_take_over": can(user, Action.QUEUE_TAKE_OVER),
    }


# --- the queue -------------------------------------------------------------------


def _histogram(filterset, now, pools):
    """The age histogram under the page's filters, from the kept counts
    (``stuck.kept_histogram``: a bounded read, whatever the number of stuck
    trades), for every filter the page has: pool, partner, mode and age."""
    data = filterset.form.cleaned_data
    livemode = {"live": True, "test": False}.get(data.get("livemode") or "")
    return stuck.kept_histogram(
        now,
        pools=pools,
        pool_id=data.get("pool") or None,
        partner_id=data.get("partner") or None,
        livemode=livemode,
        band=stuck.BANDS.get(data.get("age") or ""),
    )


def _page_context(request, filterset):
    pools = stuck.all_pools()
    ages = _histogram(filterset, timezone.now(), pools)
    per_pool = {pool.pool_id: pool.total for pool in ages}
    abilities = _abilities(request.user)
    params = filterset.params()
    return abilities | {
        "figure": figure(
            ages,
            [(pool, per_pool.get(pool.pool_id, 0)) for pool in pools],
            can_set_sla=abilities["can_set_sla"],
            filtered=bool(params),
        ),
        "stuck_total": sum(per_pool.values()),
        "scheduled": stuck.last_scheduled_repoll(),
        "bulk_filters": params,
    }


STUCK = Listing(
    name="stuck",
    title="Stuck in reserved",
    filterset=StuckFilter,
    # The CSV's and the bulk runs' set; a page is read by ``page.page``
    # (plain SQL), and what its rows show beside the trade by ``page.decorate``.
    queryset=stuck.stuck_trades,
    time_field="reserved_at",
    table="queues/stuck.html",
    engine="jinja2",
    csv_columns=[
        ("transactId", "transact_id"),
        ("partnerId", "order__partner__partner_id"),
        ("partnerReference", "order__partner_reference"),
        ("poolId", "pool__pool_id"),
        ("poolSlaMinutes", "pool__sla_minutes"),
        ("livemode", "livemode"),
        ("side", "side"),
        ("network", "network"),
        ("amountValue", "amount_value"),
        ("amountCurrency", "amount_currency"),
        ("status", "status"),
        ("reservedAt", "reserved_at"),
        ("createdAt", "created_at"),
        ("claimedBy", "claim__user__username"),
        ("claimedAt", "claim__claimed_at"),
    ],
    link=page.decorate,
    oldest_first=True,
    summary="queues/summary.html",
    form_from_query=True,
    context=_page_context,
    page=page.page,
)


@require(Read.QUEUE)
@require_GET
@vary_on_headers("HX-Request")
def stuck_queue(request):
    """The queue, a page at a time (keyset on ``(reserved_at, id)``), or the whole set as CSV."""
    return show_list(request, STUCK)


# --- claims ------------------------------------------------------------------------


def _claim_answer(request, trade, refused=None):
    """htmx: the trade's row, redrawn (with why, when refused); otherwise back to the queue."""
    if not request.htmx:
        if refused:
            messages.error(request, refused)
        return redirect("queues:stuck")
    trade = get_trade_for_user(request.user, trade.transact_id)
    page.decorate([trade])
    context = _abilities(request.user) | {"trade": trade, "refused": refused}
    # 200 even when refused: htmx swaps only 2xx answers, and the row says why.
    return render(request, "queues/stuck_row.html", context, using="jinja2")


@require(Action.QUEUE_CLAIM)
@require_POST
def claim(request, transact_id):
    """``POST /queues/stuck/<transactId>/claim``: take a stuck trade (admins may take one over)."""
    return _change_claim(request, transact_id, services.claim)


@require(Action.QUEUE_UNCLAIM)
@require_POST
def unclaim(request, transact_id):
    """``POST /queues/stuck/<transactId>/unclaim``: let a claim go (yours, or any as admin)."""
    return _change_claim(request, transact_id, services.unclaim)


def _change_claim(request, transact_id, change):
    trade = get_trade_for_user(request.user, transact_id)
    form = ClaimForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        change(request.user, trade, reason)
    except Refused as refused:
        return _claim_answer(request, trade, str(refused))
    return _claim_answer(request, trade)


# --- bulk: dry run, then confirm ---------------------------------------------------------


# The form picks one of the two; the matrix gives both to the same roles.
@require(Action.BULK_REPOLL, Action.BULK_REPLAY)
@require_POST
def bulk(request):
    """``POST /queues/stuck/bulk``: a dry run over the whole filtered set, and a confirm form."""
    return _bulk(request, confirming=False)


@require(Action.BULK_REPOLL, Action.BULK_REPLAY)
@require_POST
def bulk_confirm(request):
    """``POST /queues/stuck/bulk/confirm``: the set again from the same filters, then one run."""
    return _bulk(request, confirming=True)


def _bulk(request, *, confirming):
    choice = BulkForm(request.POST)
    filterset = StuckFilter(request.POST, queryset=stuck.stuck_trades())
    if not (choice.is_valid() and filterset.is_valid()):
        messages.error(request, "That bulk request does not say what to do or to which trades.")
        return render(request, "queues/bulk.html", {"invalid": True}, status=400)
    word = choice.cleaned_data["action"]
    action = BULK_ACTIONS[word]
    ids = list(filterset.qs.values_list("transact_id", flat=True)[: services.BULK_CAP + 1])
    current = services.set_version(ids)
    status = 200
    if confirming:
        form = ConfirmForm(request.POST)
        if form.is_valid():
            answer, status = submit(
                request,
                lambda: services.request_bulk(
                    request.user,
                    action,
                    ids,
                    key=form.cleaned_data["key"],
                    reason=form.cleaned_data["reason"],
                    drawn=form.cleaned_data["drawn"],
                    filters=filterset.params(),
                ),
            )
            if answer:
                return answer
            # Refused: the set as it is now, ready to confirm anew; the reason is kept.
            form = ConfirmForm(
                initial={
                    "key": new_key(),
                    "drawn": current,
                    "reason": form.cleaned_data["reason"],
                }
            )
        else:
            status = 400
    else:
        form = ConfirmForm(initial={"key": new_key(), "drawn": current})
    filters = filterset.params()
    query = urlencode(filters)
    context = {
        "form": form,
        "word": word,
        "action": action,
        "count": len(ids),
        "too_many": len(ids) > services.BULK_CAP,
        "cap": services.BULK_CAP,
        "sample": list(filterset.qs[:SAMPLE]) if ids else [],
        "filters": filters,
        "back": reverse("queues:stuck") + (f"?{query}" if query else ""),
    }
    return render(request, "queues/bulk.html", context, status=status)


# --- pool SLA ----------------------------------------------------------------------------


@require(Action.POOL_SLA)
@require_http_methods(["GET", "POST"])
def pool_sla(request, pool_id):
    """``POST /pools/<poolId>/sla``: how long a trade in the pool may stay reserved."""
    pool = get_pool_for_user(request.user, pool_id)
    status = 200
    if request.method == "POST":
        form = PoolSlaForm(request.POST)
        if form.is_valid():
            before = pool.sla_minutes
            minutes = form.cleaned_data["minutes"]
            if services.set_pool_sla(request.user, pool, minutes, form.cleaned_data["reason"]):
                messages.success(request, f"{pool.pool_id} SLA: {before} → {minutes} min.")
            else:
                messages.info(request, f"{pool.pool_id} SLA was already {minutes} min.")
            return redirect("queues:stuck")
        status = 400
    else:
        form = PoolSlaForm(initial={"minutes": pool.sla_minutes})
    context = {"pool": pool, "form": form}
    return render(request, "queues/pool_sla.html", context, status=status)
