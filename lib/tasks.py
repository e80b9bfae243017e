"""Sending Celery tasks from the request or a service's caller."""

import atexit
import logging
import os
import threading
import time
from functools import partial

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


def send(task, args):
    """Send ``task(*args)`` now; a broker that is down is logged, not raised.

    The send is tried once (no publish retry), and after a failure this
    process skips sends for ``BROKER_PAUSE_SECONDS``, so nothing waits on a
    broker that is away. What the task would do is already stored, and a
    periodic sweep picks it up: this is not an outbox; the sweeps are the
    safety net.
    """
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


def send_on_commit(task, *args):
    """Send ``task(*args)`` after the current transaction commits (at once
    outside one), as ``send`` does."""
    sender = partial(send, task, args)
    sender.__qualname__ = f"send {task.name}"  # what Django logs if it raises
    transaction.on_commit(sender, robust=True)


class Batches:
    """One call of ``task(items)`` for the items added within a few ms.

    The webhook answers hundreds of events a second, and a Celery publish
    cost each one more CPU than everything else it does (1.1 of 1.7 ms in
    process, issue 14: Celery builds, reprs and JSON-encodes every message).
    Here the request only appends its item; a thread of the process wakes on
    the first item, waits ``linger()`` seconds for others, and sends them
    all in one message (at most ``most`` items a message, through ``send``:
    tried once, paused while the broker is away). The worker then applies a
    batch in one go instead of one event per task.

    What an item stands for is stored before it is added, so a process that
    dies with items still here loses only their send: the sweep finds them
    (as it finds a send lost to a broker outage). On a normal exit, what is
    left is sent (``atexit``). A forked child starts empty, with its own
    lock and thread. With ``task_always_eager`` (tests) each item is sent
    at once, as ``send`` would.
    """

    def __init__(self, task, linger, most=500):
        self.task = task
        self.linger = linger  # a callable: read every round (settings may change in tests)
        self.most = most
        self._start()
        os.register_at_fork(after_in_child=self._start)
        atexit.register(self.flush)

    def _start(self):
        self._lock = threading.Lock()  # the items
        self._sending = threading.Lock()  # one flush at a time: see flush
        self._items = []
        self._since = 0.0  # when the first of the items was added
        self._waiting = threading.Event()
        self._thread = None

    def add_on_commit(self, item):
        """``add`` once the current transaction commits (at once outside one)."""
        adder = partial(self.add, item)
        adder.__qualname__ = f"batch for {self.task.name}"
        transaction.on_commit(adder, robust=True)

    def add(self, item):
        if self.task.app.conf.task_always_eager:
            send(self.task, ([item],))
            return
        with self._lock:
            if not self._items:
                self._since = time.monotonic()
            self._items.append(item)
            self._waiting.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"batches of {self.task.name}", daemon=True
                )
                self._thread.start()

    def _run(self):
        while True:
            self._waiting.wait()
            try:
                # Until the linger of the first item ends (read again every
                # 0.1 s at most: tests change it), or another flush took them.
                while (
                    self._waiting.is_set()
                    and (left := self._since + self.linger() - time.monotonic()) > 0
                ):
                    time.sleep(min(left, 0.1))
                self.flush()
            except Exception:  # a bug: the thread outlives it; the sweep applies the events
                log.exception("sending a batch of %s failed", self.task.name)
                time.sleep(1)  # and does not spin on it

    def flush(self):
        """Send what has been added, in this thread; return how many it sent.

        When it returns, every item added before the call has been sent:
        by this call, or by the thread's flush it waited for.
        """
        with self._sending:
            with self._lock:
                items, self._items = self._items, []
                self._waiting.clear()
            for start in range(0, len(items), self.most):
                send(self.task, (items[start : start + self.most],))
        return len(items)
