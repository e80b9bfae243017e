"""``/queues/stuck``: trades reserved past their pool's SLA, and what operations do about them.

Every role reads the queue; claiming, bulk runs and SLA changes are for the
roles ``permissions.MATRIX`` names, and each endpoint says so on its face.
"""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import prefetch_related_objects
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from accounts import permissions
from accounts.roles import ADMIN, role_of
from browse.listings import Listing
from browse.views import show_list
from records.models import Pool

from . import queue, services
from .forms import ConfirmForm
from .queue_forms import BULK_ACTIONS, BulkForm, ClaimForm, PoolSlaForm
from .views import get_trade_for_user, submit

SAMPLE = 10  # trades a dry run shows of the set


def get_pool_for_user(user, pool_id):
    return get_object_or_404(Pool, pool_id=pool_id)


def _abilities(user):
    """What the page offers ``user``: one query for the user's groups, however many checks."""
    prefetch_related_objects([user], "groups")
    return {
        "can_claim": permissions.can(user, "queue.claim"),
        "can_bulk": permissions.can(user, "bulk.repoll") and permissions.can(user, "bulk.replay"),
        "can_set_sla": permissions.can(user, "pool.sla"),
        "is_admin": role_of(user) == ADMIN,
    }


# --- the queue -------------------------------------------------------------------


def _page_context(request, filterset):
    ages = queue.age_histogram(filterset.qs, timezone.now())
    stuck = {pool.pool_id: pool.total for pool in ages}
    return _abilities(request.user) | {
        "histogram": draw_histogram(ages),
        "bands": queue.AGE_BANDS,
        "pools": [(pool, stuck.get(pool.pool_id, 0)) for pool in Pool.objects.all()],
        "scheduled": queue.last_scheduled_repoll(),
        "bulk_filters": filterset.params(),
    }


STUCK = Listing(
    name="stuck",
    title="Stuck in reserved",
    filterset=queue.StuckFilter,
    queryset=lambda: queue.stuck_trades().select_related("claim__user"),
    time_field="reserved_at",
    table="actions/queue_table.html",
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
    link=queue.decorate,
    oldest_first=True,
    summary="actions/queue_summary.html",
    context=_page_context,
)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def stuck(request):
    """The queue, a page at a time (keyset on ``(reserved_at, id)``), or the whole set as CSV."""
    return show_list(request, STUCK)


# Bars of the age histogram, in SVG user units.
BAR, BAR_GAP, GROUP_GAP, PLOT, TOP, BOTTOM, LEFT = 18, 4, 28, 120, 18, 34, 8


def draw_histogram(pools):
    """Where each bar of the per-pool age histogram goes; the template only draws.

    Heights share one scale across pools, so bars compare across pools too.
    """
    bands = queue.AGE_BANDS
    tallest = max((count for pool in pools for count in pool.counts), default=0) or 1
    group = len(bands) * BAR + (len(bands) - 1) * BAR_GAP
    groups = []
    for i, pool in enumerate(pools):
        x0 = LEFT + i * (group + GROUP_GAP)
        bars = []
        for j, (band, count) in enumerate(zip(bands, pool.counts, strict=True)):
            height = round(PLOT * count / tallest) if count else 0
            bars.append(
                {
                    "band": band,
                    "index": j,
                    "count": count,
                    "x": x0 + j * (BAR + BAR_GAP),
                    "y": TOP + PLOT - height,
                    "height": height,
                    "label_x": x0 + j * (BAR + BAR_GAP) + BAR // 2,
                    "label_y": TOP + PLOT - height - 4,
                }
            )
        groups.append(
            {"pool": pool, "bars": bars, "label_x": x0 + group // 2, "label_y": TOP + PLOT + 16}
        )
    return {
        "groups": groups,
        "total": sum(pool.total for pool in pools),
        "width": max(LEFT * 2 + len(pools) * (group + GROUP_GAP) - GROUP_GAP, 1),
        "height": TOP + PLOT + BOTTOM,
        "baseline": TOP + PLOT,
        "bar_width": BAR,
    }


# --- claims ------------------------------------------------------------------------


def _claim_answer(request, trade, refused=None):
    """htmx: the trade's row, redrawn (with why, when refused); otherwise back to the queue."""
    if not request.htmx:
        if refused:
            messages.error(request, refused)
        return redirect("queue:stuck")
    trade = get_trade_for_user(request.user, trade.transact_id)
    queue.decorate([trade])
    context = _abilities(request.user) | {"trade": trade, "refused": refused}
    # 200 even when refused: htmx swaps only 2xx answers, and the row says why.
    return render(request, "actions/queue_table.html#row", context)


@login_required
@require_POST
@permissions.require("queue.claim")
def claim(request, transact_id):
    """``POST /queues/stuck/<transactId>/claim``: take a stuck trade (admins may take one over)."""
    return _change_claim(request, transact_id, queue.claim)


@login_required
@require_POST
@permissions.require("queue.claim")
def unclaim(request, transact_id):
    """``POST /queues/stuck/<transactId>/unclaim``: let a claim go (yours, or any as admin)."""
    return _change_claim(request, transact_id, queue.unclaim)


def _change_claim(request, transact_id, change):
    trade = get_trade_for_user(request.user, transact_id)
    form = ClaimForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        change(request.user, trade, reason)
    except services.Refused as refused:
        return _claim_answer(request, trade, str(refused))
    return _claim_answer(request, trade)


# --- bulk: dry run, then confirm ---------------------------------------------------------


@login_required
@require_POST
# The form picks one of the two; the matrix gives both to the same roles.
@permissions.require("bulk.repoll")
@permissions.require("bulk.replay")
def bulk(request):
    """``POST /queues/stuck/bulk``: a dry run over the whole filtered set, and a confirm form."""
    return _bulk(request, confirming=False)


@login_required
@require_POST
@permissions.require("bulk.repoll")
@permissions.require("bulk.replay")
def bulk_confirm(request):
    """``POST /queues/stuck/bulk/confirm``: the set again from the same filters, then one run."""
    return _bulk(request, confirming=True)


def _bulk(request, *, confirming):
    choice = BulkForm(request.POST)
    filterset = queue.StuckFilter(request.POST, queryset=queue.stuck_trades())
    if not (choice.is_valid() and filterset.is_valid()):
        messages.error(request, "That bulk request does not say what to do or to which trades.")
        return render(request, "actions/queue_bulk.html", {"invalid": True}, status=400)
    word = choice.cleaned_data["action"]
    action = BULK_ACTIONS[word]
    ids = list(filterset.qs.values_list("transact_id", flat=True)[: queue.BULK_CAP + 1])
    current = queue.fingerprint(ids)
    status = 200
    if confirming:
        form = ConfirmForm(request.POST)
        if form.is_valid():
            answer, status = submit(
                request,
                lambda: queue.request_bulk(
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
                    "key": services.new_key(),
                    "drawn": current,
                    "reason": form.cleaned_data["reason"],
                }
            )
        else:
            status = 400
    else:
        form = ConfirmForm(initial={"key": services.new_key(), "drawn": current})
    filters = filterset.params()
    query = urlencode(filters)
    context = {
        "form": form,
        "word": word,
        "action": action,
        "count": len(ids),
        "too_many": len(ids) > queue.BULK_CAP,
        "cap": queue.BULK_CAP,
        "sample": list(filterset.qs[:SAMPLE]) if ids else [],
        "filters": filters,
        "back": reverse("queue:stuck") + (f"?{query}" if query else ""),
    }
    return render(request, "actions/queue_bulk.html", context, status=status)


# --- pool SLA ----------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
@permissions.require("pool.sla")
def pool_sla(request, pool_id):
    """``POST /pools/<poolId>/sla``: how long a trade in the pool may stay reserved."""
    pool = get_pool_for_user(request.user, pool_id)
    status = 200
    if request.method == "POST":
        form = PoolSlaForm(request.POST)
        if form.is_valid():
            before = pool.sla_minutes
            minutes = form.cleaned_data["minutes"]
            if queue.set_pool_sla(request.user, pool, minutes, form.cleaned_data["reason"]):
                messages.success(request, f"{pool.pool_id} SLA: {before} → {minutes} min.")
            else:
                messages.info(request, f"{pool.pool_id} SLA was already {minutes} min.")
            return redirect("queue:stuck")
        status = 400
    else:
        form = PoolSlaForm(initial={"minutes": pool.sla_minutes})
    context = {"pool": pool, "form": form}
    return render(request, "actions/queue_pool_sla.html", context, status=status)
