"""Celery tasks of the daily close."""

from celery import shared_task

from audit.log import SCHEDULE

from . import services


@shared_task(acks_late=True)
def close_finished_days():
    """Beat: close every recent day that is over and not closed yet (once each)."""
    closed = []
    for day in services.days_to_close():
        close, created = services.close_day(day, by=SCHEDULE)
        if created:
            closed.append(day.isoformat())
    return closed
