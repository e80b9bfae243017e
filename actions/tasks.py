"""Celery tasks of the guarded actions. Each takes a ``Run`` id.

Running one twice does nothing twice: the run is claimed (queued →
running) under a row lock, each item counts itself in the transaction of
its effect, and a resumed run carries on after the items already counted.
A run whose heartbeat stopped (its worker died), or whose task was never
delivered, is picked up again by ``resume_stalled_runs``.
"""

from datetime import timedelta

from celery import shared_task
from django.db import OperationalError, transaction
from django.utils import timezone

from . import services
from .models import Run

# A running run whose heartbeat is older than this has lost its worker.
STALLED_AFTER = timedelta(minutes=15)
# A queued run older than this never had its task delivered (broker away).
UNSENT_AFTER = timedelta(minutes=2)


@shared_task(
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def carry_out_run(run_id, resume=False):
    """Carry a queued run out, or (``resume``) one whose worker stopped moving."""
    now = timezone.now()
    with transaction.atomic():
        run = Run.objects.select_for_update(skip_locked=True).filter(pk=run_id).first()
        if run is None or run.finished:
            return "skipped"
        if run.state == Run.State.RUNNING and not (resume and run.updated_at < now - STALLED_AFTER):
            return "skipped"  # another worker has it and is moving
        run.state = Run.State.RUNNING
        run.updated_at = now
        run.save(update_fields=["state", "updated_at"])
    services.carry_out(run)
    return "done"


@shared_task(acks_late=True)
def resume_stalled_runs():
    """Runs whose worker died mid-way, and runs whose task was never sent."""
    now = timezone.now()
    stalled = list(
        Run.objects.filter(state=Run.State.RUNNING, updated_at__lt=now - STALLED_AFTER).values_list(
            "pk", flat=True
        )
    )
    unsent = list(
        Run.objects.filter(state=Run.State.QUEUED, created_at__lt=now - UNSENT_AFTER).values_list(
            "pk", flat=True
        )
    )
    for pk in stalled:
        carry_out_run.delay(pk, resume=True)
    for pk in unsent:
        carry_out_run.delay(pk)
    return len(stalled) + len(unsent)
