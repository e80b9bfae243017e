"""Celery tasks of the stuck queue."""

from celery import shared_task
from django.utils import timezone

from accounts.permissions import Action
from actions.models import Run
from actions.services import carry_out, start_unattended_run
from actions.tasks import STALLED_AFTER

from .stuck import stuck_trades


@shared_task(acks_late=True)
def repoll_stuck_trades(limit=500):
    """Beat: re-poll every trade stuck past its pool's SLA, as one scheduled run."""
    now = timezone.now()
    if Run.objects.filter(
        user=None,
        action=Action.BULK_REPOLL,
        state=Run.State.RUNNING,
        updated_at__gte=now - STALLED_AFTER,
    ).exists():
        return 0  # the previous scheduled run is still going
    targets = list(stuck_trades().values_list("transact_id", flat=True)[:limit])
    run = start_unattended_run(
        Action.BULK_REPOLL,
        targets,
        target=f"{len(targets)} stuck trades (scheduled)",
        reason="scheduled re-poll of trades stuck past their pool SLA",
        key=f"schedule-{now.isoformat()}",
        params={"scheduled": True},
    )
    carry_out(run)
    return len(targets)
