"""Guarded actions: asking for them, and carrying them out.

``request_run`` is what a confirmed form calls, in the request: it checks
the rate limit, the idempotency key and that the record has not changed
since the page was drawn, then queues a ``Run``; its caller sends the run's
task on commit (``actions.tasks.carry_out_run``). ``carry_out`` is what the
task calls: the network I/O happens outside any transaction, then the
effect, its audit entry and the run's progress are written in one
transaction per item. Services never import tasks.
"""

import hashlib
import logging
import secrets
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import BooleanField, Exists, ExpressionWrapper, F, Max, OuterRef, Q
from django.utils import timezone

from accounts.permissions import Action, can
from audit import log as audit
from audit.models import Entry
from ingest import pipeline
from ingest.contract import ContractError, parse_envelope
from ingest.newest import keep as keep_newest
from lib.formats import rfc3339
from lib.limits import a_minute_ago, over_the_limit
from outbound.guard import guarded_client
from outbound.signing import deliver
from partners.models import SigningSecret
from partners.services import host_of
from records.models import (
    TRADE_EVENTS,
    DeliveryAttempt,
    Partner,
    StatusChange,
    Trade,
    WebhookEvent,
)

from . import upstream
from .models import FailedItem, Run

log = logging.getLogger(__name__)


class Refused(Exception):
    """The action is not run; ``status`` is the HTTP answer, the message says why."""

    def __init__(self, message, status=409):
        super().__init__(message)
        self.status = status


# --- versions: what "the page was drawn from" means per record ----------------


def trade_version(trade):
    return f"{trade.status}@{trade.status_at.isoformat()}"


def event_version(event):
    last = DeliveryAttempt.objects.filter(event_id=event.event_id).aggregate(last=Max("id"))["last"]
    return f"{event.pk}:{last or 0}"


def set_version(ids):
    """What a set of ids "was" when a page drew it: its size and a digest."""
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    return f"{len(ids)}:{digest[:16]}"


def failed_targets(run):
    """The items of ``run`` that failed, in the order it met them, each once."""
    targets = run.failed_items.order_by("id").values_list("target", flat=True)
    return list(dict.fromkeys(targets))


def new_key():
    return secrets.token_urlsafe(24)


# --- asking ------------------------------------------------------------------


@dataclass(frozen=True)
class Requested:
    run: Run
    repeated: bool  # the key had already made this run: nothing new started


def request_run(
    user,
    action,
    target,
    *,
    key,
    reason,
    drawn,
    current,
    order=None,
    params=None,
    total=1,
    retry_of=None,
):
    """Queue one confirmed action, or refuse it. See the module docstring."""
    existing = Run.objects.filter(key=key).first()
    if existing:
        return Requested(_same_request(existing, user, action, target), repeated=True)
    if drawn != current:
        with transaction.atomic():
            audit.record(
                actor=user,
                action=action,
                target=target,
                order=order,
                reason=reason,
                result=Entry.Result.REFUSED,
                detail=f"stale page: drawn from {drawn}, now {current}",
            )
        raise Refused(
            "This changed since the page was drawn; nothing was done. Look again and confirm anew."
        )
    limited = over_the_limit(Run.objects.filter(user=user, created_at__gte=a_minute_ago()))
    if limited:
        raise Refused(limited, status=429)
    try:
        with transaction.atomic():
            run = Run.objects.create(
                key=key,
                user=user,
                action=action,
                target=target,
                order=order,
                reason=reason,
                params=params or {},
                total=total,
                retry_of=retry_of,
            )
    except IntegrityError:  # the same key submitted twice at once, or one run retried twice
        existing = Run.objects.filter(key=key).first()
        if existing is None:
            raise Refused(
                "Someone started this at the same moment; nothing more was run."
            ) from None
        return Requested(_same_request(existing, user, action, target), repeated=True)
    return Requested(run, repeated=False)


def start_unattended_run(action, targets, *, target, reason, key, params=None):
    """A run no person asked for (the schedule, a benchmark), already running:
    the caller carries it out in its own process. Nothing is checked or sent."""
    return Run.objects.create(
        key=key,
        user=None,
        action=action,
        target=target,
        reason=reason,
        params={"targets": list(targets), **(params or {})},
        total=len(targets),
        state=Run.State.RUNNING,
    )


def request_retry(user, run, *, key, reason, drawn):
    """Queue a new run of ``run``'s action over exactly the items of it that
    failed (the set as it is now), or refuse.

    The same permission as the original action is needed; the run must be
    finished (a moving run's failed set is not settled yet). ``drawn`` is
    the failed set the confirm page showed: ``request_run`` refuses when it
    is not the set now and finds the run a repeated key made.
    """
    if not can(user, run.action):
        raise Refused(f"Your role may not do this ({run.get_action_display().lower()}).", 403)
    targets = failed_targets(run)
    # A repeated key finds the retry it made (``request_run``), even though the
    # run counts as retried by then.
    if not Run.objects.filter(key=key).exists():
        retried = run.retries.first()
        if not run.finished:
            raise Refused("This run is still going: wait for it to finish, then retry what failed.")
        if retried:
            raise Refused(f"Run {retried.pk} already retries these: retry what fails there.")
        if not targets and drawn == set_version(targets):
            raise Refused("Nothing in this run failed; nothing was run.")
    count = drawn.partition(":")[0]
    size = int(count) if count.isdigit() else len(targets)
    return request_run(
        user,
        run.action,
        f"{size} failed of run {run.pk}",
        key=key,
        reason=reason,
        drawn=drawn,
        current=set_version(targets),
        order=run.order,
        params={"targets": targets, "retry_of": run.pk},
        total=len(targets),
        retry_of=run,
    )


def _same_request(run, user, action, target):
    if run.user_id != user.pk or run.action != action or run.target != target:
        raise Refused("This form was already used for something else; reload the page.")
    return run


# --- carrying out ------------------------------------------------------------


def _targets(run):
    # A bulk run names its targets (none at all, for an empty schedule); a
    # single action acts on its target.
    return run.params.get("targets", [run.target])


def carry_out(run):
    """Do what ``run`` asks, item by item. Safe to call twice: see ``tasks``.

    The item in hand is always ``targets[done + failed]``: a resumed run
    starts there, and ``_count`` names the item that failed from it.
    """
    step = STEPS[run.action]
    targets = _targets(run)
    for target in targets[run.done + run.failed :]:
        try:
            step(target, run)  # counts itself, in the transaction of its effect
        except Exception:
            log.exception("%s of %s failed", run.action, target)
            with transaction.atomic():
                _count(run, ok=False)
        run.refresh_from_db(fields=["done", "failed"])
    state = Run.State.DONE if run.failed < run.total or not run.total else Run.State.FAILED
    Run.objects.filter(pk=run.pk).update(
        state=state, finished_at=timezone.now(), updated_at=timezone.now()
    )


def _count(run, *, ok):
    """One more item done or failed (and the heartbeat): call it inside the
    transaction that writes the item's effect and audit entry, so a crash
    never counts an item without its effect, or the other way round. A
    failed item is written down too, for "Retry the failed ones"."""
    Run.objects.filter(pk=run.pk).update(
        done=F("done") + (1 if ok else 0),
        failed=F("failed") + (0 if ok else 1),
        updated_at=timezone.now(),
    )
    if not ok:
        FailedItem.objects.create(run=run, target=_targets(run)[run.done + run.failed])
    return ok


def _actor(run):
    return {"actor": run.user, "actor_name": audit.SCHEDULE if run.user is None else None}


def repoll(transact_id, run):
    """Ask 0Pools for the trade; its answer goes through the one pipeline (source poll)."""
    trade = Trade.objects.select_related("order").filter(transact_id=transact_id).first()
    before = trade.status if trade else ""
    try:
        answer = upstream.fetch_trade(transact_id)
    except upstream.UpstreamNotConfigured as exc:
        answer = upstream.Answer("unavailable", None, 0, str(exc))
    result, detail, after = Entry.Result.FAILED, answer.detail, before
    envelope = None
    if answer.outcome == "found":
        try:
            envelope = _poll_envelope(transact_id, answer.trade)
        except ContractError as exc:
            detail = f"0Pools answered a trade that breaks the contract: {exc}"
    elif answer.outcome == "not_found":
        result, detail = Entry.Result.NOT_FOUND, "0Pools does not know this trade"
    with transaction.atomic():
        if envelope is not None:
            pipeline.ingest([envelope], "poll")
            trade = Trade.objects.select_related("order").get(transact_id=transact_id)
            after = trade.status
            result = Entry.Result.OK
            detail = (
                f"0Pools says {after}"
                + (f" (was {before})" if before and before != after else "")
                + f"; {answer.tries} tr{'y' if answer.tries == 1 else 'ies'}"
            )
        audit.record(
            **_actor(run),
            action=Action.TRADE_REPOLL,
            target=transact_id,
            order=trade.order if trade else None,
            reason=run.reason,
            result=result,
            detail=detail,
            before_status=before,
            after_status=after,
            run_id=run.pk,
        )
        return _count(run, ok=result in (Entry.Result.OK, Entry.Result.NOT_FOUND))


def _poll_envelope(transact_id, trade):
    """A status read, as an event: the pipeline stores and applies it like any other."""
    if not isinstance(trade, dict) or trade.get("transactId") != transact_id:
        raise ContractError("data.transactId: is not the trade asked for")
    status = trade.get("status")
    raw = {
        "id": "evt_poll" + secrets.token_hex(12),
        "type": f"trade.{status}",
        "createdAt": rfc3339(timezone.now().replace(microsecond=0)),
        "livemode": transact_id.startswith("pt_live_"),
        "data": trade,
    }
    return parse_envelope(raw)


def latest_state_event(trade):
    """The stored event that tells a trade's current status: the one to replay.

    An event 0Pools sent wins over every status read of ours, however many
    polls came after it: its id is one the partner may already hold, so the
    partner can dedupe it. Only where 0Pools never sent one is a poll
    chosen: the poll that recorded the status (its id stays the same
    however often the trade is polled again), else the newest.

    One query, the preference first in the ORDER BY (a window of newest
    rows would fill up with polls): ``event_trade_subject_idx``
    (subject_id, source, created_at) finds the trade's events.
    """
    return (
        WebhookEvent.objects.filter(
            TRADE_EVENTS, subject_id=trade.transact_id, type=f"trade.{trade.status}"
        )
        .annotate(
            ours=ExpressionWrapper(Q(source=WebhookEvent.Source.POLL), BooleanField()),
            moved=Exists(StatusChange.objects.filter(event=OuterRef("pk"))),
        )
        .order_by("ours", "-moved", "-created_at", "-id")
        .first()
    )


def sent_instead(event):
    """For a status read of ours: the event 0Pools sent for the same trade and
    status, if any (the one a replay should send); None otherwise.
    ``event_trade_subject_idx``."""
    if event.source != WebhookEvent.Source.POLL:
        return None
    return (
        WebhookEvent.objects.filter(TRADE_EVENTS, subject_id=event.subject_id, type=event.type)
        .exclude(source=WebhookEvent.Source.POLL)
        .order_by("-created_at", "-id")
        .first()
    )


def replay_latest(transact_id, run):
    trade = Trade.objects.filter(transact_id=transact_id).first()
    event = latest_state_event(trade) if trade else None
    if event is None:
        with transaction.atomic():
            audit.record(
                **_actor(run),
                action=Action.EVENT_REPLAY,
                target=transact_id,
                order=trade.order if trade else None,
                reason=run.reason,
                result=Entry.Result.FAILED,
                detail="no stored event tells this trade's current status",
                run_id=run.pk,
            )
            return _count(run, ok=False)
    return replay(event.event_id, run)


def replay(event_id, run):
    """Re-deliver a stored event to its partner: same id, fresh timestamp, signed."""
    event = WebhookEvent.objects.select_related("order").get(event_id=event_id)
    partner = Partner.objects.select_related("endpoint").get(partner_id=event.partner_id)
    endpoint = getattr(partner, "endpoint", None)
    signing = [s.secret for s in SigningSecret.objects.active().filter(partner=partner)]
    delivery = None
    if endpoint is None:
        detail = f"{partner.partner_id} has no webhook endpoint"
    elif not signing:
        detail = f"{partner.partner_id} has no signing secret"
    else:
        # Only the allowlisted envelope, as stored, ever leaves.
        body = orjson.dumps(event.payload)
        with guarded_client(allow_private=settings.OPOOLS_OUTBOUND_ALLOW_PRIVATE) as client:
            delivery = deliver(client, endpoint.url, event.event_id, body, signing)
        detail = _delivery_text(delivery, endpoint.url)
    if event.source == WebhookEvent.Source.POLL:
        detail = f"our own status read, an id the partner never saw: {detail}"
    delivered = delivery is not None and delivery.succeeded
    with transaction.atomic():
        if delivery is not None:
            record_replay_attempt(event, partner, delivery)
        audit.record(
            **_actor(run),
            action=Action.EVENT_REPLAY,
            target=event.event_id,
            order=event.order,
            reason=run.reason,
            result=Entry.Result.OK if delivered else Entry.Result.FAILED,
            detail=detail,
            run_id=run.pk,
        )
        return _count(run, ok=delivered)


def record_replay_attempt(event, partner, delivery):
    """The one writer of the panel's own delivery attempts (a replay's POST);
    the pipeline writes those 0Pools reports. Call it in the replay's
    transaction, beside its audit entry."""
    last = DeliveryAttempt.objects.filter(event_id=event.event_id).aggregate(n=Max("attempt"))
    attempt = DeliveryAttempt.objects.create(
        event_id=event.event_id,
        partner=partner,
        attempt=(last["n"] or 0) + 1,
        response_status=delivery.status_code,
        duration_ms=delivery.duration_ms,
        outcome=delivery.outcome,
        attempted_at=timezone.now(),
    )
    # The stuck queue shows a trade's newest delivery, replays included.
    keep_newest(attempts=[attempt.pk])
    return attempt


def _delivery_text(delivery, url):
    where = host_of(url)
    if delivery.status_code is not None:
        text = f"{where} answered {delivery.status_code} in {delivery.duration_ms} ms"
    else:
        text = f"no answer from {where}"
    if delivery.error:
        text += f" ({delivery.error})"
    return text


# What each action does to one of its targets.
STEPS = {
    Action.TRADE_REPOLL: repoll,
    Action.BULK_REPOLL: repoll,
    Action.EVENT_REPLAY: replay,
    Action.BULK_REPLAY: replay_latest,
    Action.BULK_RECOVER: replay,
}
