"""Sending Celery tasks from the request or a service's caller."""

import logging

from django.db import transaction
from kombu.exceptions import OperationalError

from .cooldown import Cooldown

log = logging.getLogger(__name__)

# After a send fails, sends from this process are skipped for this long: the
# broker is known to be down, and trying again would hold each request for the
# client's connection retries (~0.3-0.9 s) only to fail again (issue 15, item 4).
BROKER_PAUSE_SECONDS = 5.0

_broker_away = Cooldown(BROKER_PAUSE_SECONDS)


def broker_known_down():
    return _broker_away.active()


def broker_recovered():
    """Forget a failure (tests; a send that works clears nothing else)."""
    _broker_away.clear()


def broker_errors(connection):
    """What a send raises when the broker is away: kombu's own error, the
    socket's, and whatever the transport (Redis, SQLAlchemy, ...) says they are."""
    return (
        OperationalError,
        OSError,
        *connection.connection_errors,
        *connection.channel_errors,
    )


def send_on_commit(task, *args):
    """Send ``task`` after the current transaction commits (at once outside one).

    A broker that is down is logged, not raised: what the task would do is
    already stored, and a periodic sweep picks it up. The send is tried once
    (no publish retry), and after a failure this process skips sends for
    ``BROKER_PAUSE_SECONDS``, so a request never waits on a broker that is
    away. This is not an outbox; the sweeps are the safety net.
    """

    def send():
        if broker_known_down():
            log.debug("broker down: %s%r not sent; the sweep applies it", task.name, args)
            return
        if task.app.conf.task_always_eager:  # tests that run tasks in place: no broker
            task.apply_async(args)
            return
        try:
            with task.app.producer_or_acquire() as producer:
                # Connect with one quick retry at most: kombu would otherwise
                # keep trying a lost connection for its whole connect timeout.
                producer.connection.ensure_connection(max_retries=1, interval_start=0, timeout=1)
                task.apply_async(args, retry=False, producer=producer)
        except Exception as exc:  # noqa: BLE001 - sorted below
            with task.app.connection_for_write() as connection:  # not connected: its error kinds
                expected = broker_errors(connection)
            if not isinstance(exc, expected):
                # A bug (wrong arguments, a value that cannot be serialised),
                # not the broker: said as an error, and other sends go on.
                log.exception("sending %s%r failed: not a broker problem", task.name, args)
                return
            _broker_away.trip()
            log.warning(
                "sending %s%r failed (%s: %s); the sweep applies it. Sends paused for %g s.",
                task.name,
                args,
                type(exc).__name__,
                exc,
                BROKER_PAUSE_SECONDS,
            )

    send.__qualname__ = f"send {task.name}"
    transaction.on_commit(send, robust=True)
