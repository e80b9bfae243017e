"""Celery tasks of the guarded actions. Each takes a ``Run`` id.

Running one twice does nothing twice: the run is claimed (queued →
running) under a row lock, and a bulk run resumes after the items it has
already counted. A run left ``running`` by a worker that died is picked up
again by ``resume_stalled_runs``.
"""

from datetime import timedelta

from celery import shared_task
from django.db import OperationalError, transaction
from django.utils import timezone

from . import services
from .models import Run

STALLED_AFTER = timedelta(minutes=15)


@shared_task(
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def carry_out_run(run_id, resume=False):
    with transaction.atomic():
        run = Run.objects.select_for_update(skip_locked=True).filter(pk=run_id).first()
        if run is None or run.finished or (run.state == Run.State.RUNNING and not resume):
            return "skipped"
        run.state = Run.State.RUNNING
        run.save(update_fields=["state"])
    services.carry_out(run)
    return "done"


@shared_task(acks_late=True)
def resume_stalled_runs():
    """Runs whose worker died mid-way (acks_late redelivers, this catches the rest)."""
    stalled = Run.objects.filter(
        state=Run.State.RUNNING, created_at__lt=timezone.now() - STALLED_AFTER
    ).values_list("pk", flat=True)
    for pk in stalled:
        carry_out_run.delay(pk, resume=True)
    return len(stalled)


@shared_task(acks_late=True)
def repoll_stuck_trades(limit=500):
    """Beat: re-poll every trade stuck past its pool's SLA, as one scheduled run."""
    from .queue import stuck_trades

    targets = list(stuck_trades().values_list("transact_id", flat=True)[:limit])
    run = Run.objects.create(
        key=f"schedule-{timezone.now().isoformat()}",
        user=None,
        action="bulk.repoll",
        target=f"{len(targets)} stuck trades (scheduled)",
        reason="scheduled re-poll of trades stuck past their pool SLA",
        params={"targets": targets, "scheduled": True},
        total=len(targets),
        state=Run.State.RUNNING,
    )
    if targets:
        services.carry_out(run)
    else:
        Run.objects.filter(pk=run.pk).update(state=Run.State.DONE, finished_at=timezone.now())
    return len(targets)
