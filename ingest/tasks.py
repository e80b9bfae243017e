"""Celery tasks of the ingest pipeline.

``process_events`` applies stored webhook events, a batch at a time: the
webhook adds its event to ``apply_batches`` once stored, and each web
process sends what it gathered within ``OPOOLS_WEBHOOK_LINGER_SECONDS`` as
one task (``lib.tasks.Batches``). If that send is lost (broker down, a
crash between commit and publish), ``sweep_pending_events`` finds the event
still pending and applies it. Both lock the event rows and skip processed
ones, so an event that is handled twice is applied once. ``process_event``
(one event) stays for the messages a broker still holds from before.
"""

import logging
from datetime import timedelta

import psycopg
from celery import current_app, shared_task
from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from lib import broker
from lib.tasks import Batches
from records.models import WebhookEvent

from . import pipeline

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5


def ping_broker():
    """Raise when the broker the tasks are sent to does not answer within ~2 s."""
    # current_app, not opspanel.celery.app: the product does not import the
    # wiring. Celery's Django fixup makes that app the default in every
    # thread, so the web process and the worker both get it.
    broker.ping(current_app)


def _apply(pks):
    """Apply ``pks`` in one transaction; return how many were applied.

    If the batch fails, nothing of it stays, and each event is applied
    alone: the bad one is marked failed (with why, one attempt more) and
    the others are applied as if it were not there. A database error
    (away, a deadlock, a timeout) is raised: the task tries the whole batch
    again later.
    """
    try:
        with transaction.atomic():
            return pipeline.apply_stored(pks)
    except (OperationalError, psycopg.OperationalError):
        raise
    except Exception as exc:
        if len(pks) > 1:
            log.warning(
                "applying %d events together failed (%s: %s); applying each alone",
                len(pks),
                type(exc).__name__,
                exc,
            )
            return sum(_apply([pk]) for pk in pks)
        log.exception("applying event %s failed", pks[0])
        pipeline.mark_failed(pks, exc)
        return 0


# Applying: the database away is retried later, the whole task.
APPLY_TASK = {
    "acks_late": True,
    # The pipeline talks to psycopg directly: its errors are psycopg's own.
    "autoretry_for": (OperationalError, psycopg.OperationalError),
    "retry_backoff": True,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(**APPLY_TASK)
def process_event(event_pk):
    """Apply one stored event. Running it twice applies it once."""
    return _apply([event_pk])


@shared_task(**APPLY_TASK)
def process_events(event_pks):
    """Apply stored events, in the order they were stored. Running it twice
    applies each once."""
    return _apply(sorted(event_pks))


# The webhook's: one ``process_events`` for what a web process stored within
# the linger (lib.tasks.Batches).
apply_batches = Batches(process_events, linger=lambda: settings.OPOOLS_WEBHOOK_LINGER_SECONDS)


@shared_task(acks_late=True)
def sweep_pending_events(batch_size=500, max_batches=100):
    """Apply events left pending (lost task) or failed (fewer than MAX_ATTEMPTS).

    A run tries each event once, in the order received: a failed event
    waits for the next run (OPOOLS_SWEEP_SECONDS) for its next attempt, so
    its MAX_ATTEMPTS are spread over minutes, not spent in one run, and
    the batches after it are not failed and applied one by one again for it.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.OPOOLS_SWEEP_GRACE_SECONDS)
    applied = 0
    after = None  # (received_at, id) of the last event this run tried
    for _ in range(max_batches):
        waiting = WebhookEvent.objects.exclude(state=WebhookEvent.State.PROCESSED).filter(
            received_at__lt=cutoff, attempts__lt=MAX_ATTEMPTS
        )
        if after is not None:
            waiting = waiting.filter(
                Q(received_at__gt=after[0]) | Q(received_at=after[0], id__gt=after[1])
            )
        rows = list(
            waiting.order_by("received_at", "id").values_list("received_at", "id")[:batch_size]
        )
        if not rows:
            break
        after = rows[-1]
        applied += _apply([pk for _, pk in rows])  # one bad event is isolated there
    if applied:
        log.info("sweep applied %d pending events", applied)
    pipeline.relink_waiting()
    return applied
