"""Pipeline workers in threads, for tests that force an interleaving.

Each ``Worker`` runs in a thread of its own, so on a PostgreSQL connection
of its own, as two Celery processes would. ``pause_in(monkeypatch, module)``
gives it pause points: with ``pause_after=n`` it stops after its n-th
statement through ``module.execute``, inside its transaction, until
``resume()``. Nothing here waits on a clock: the waits are safety nets
against a hang.
"""

import threading

from django.db import connection

from ingest import pipeline, tasks
from ingest.contract import parse_envelope
from records.models import WebhookEvent
from tests.helpers import wait_for

WAIT = 30  # seconds: only a safety net against a hang, never a timing


class Worker(threading.Thread):
    running = {}  # thread -> Worker, for the pause points

    def __init__(self, work, pause_after=None):
        super().__init__(daemon=True)
        self.work = work
        self.pause_after = pause_after
        self.statements = 0
        self.stopped = threading.Event()  # paused, or finished
        self.paused = False
        self.released = threading.Event()
        self.backend_pid = None
        self.error = None

    def run(self):
        Worker.running[self] = self
        try:
            connection.ensure_connection()
            self.backend_pid = connection.connection.info.backend_pid
            self.work()
        except Exception as exc:  # reported by finish()
            self.error = exc
        finally:
            Worker.running.pop(self, None)
            connection.close()
            self.stopped.set()

    def after_statement(self):
        self.statements += 1
        if self.statements == self.pause_after:
            self.paused = True
            self.stopped.set()
            assert self.released.wait(WAIT), "never resumed"

    def start_and_stop(self):
        """Start; return once it waits at its pause point (True) or has finished (False)."""
        self.start()
        assert self.stopped.wait(WAIT), "neither paused nor finished: blocked on a lock?"
        return self.paused

    def start_until_blocked(self):
        """Start; return once PostgreSQL says it waits for a lock another holds."""
        self.start()

        def blocked():
            if self.backend_pid is None:
                return False
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                    [self.backend_pid],
                )
                row = cursor.fetchone()
            return row is not None and row[0] == "Lock"

        assert wait_for(blocked, timeout=WAIT), "never waited for the lock"

    def resume(self):
        self.released.set()

    def finish(self):
        self.resume()
        self.join(WAIT)
        assert not self.is_alive(), "did not finish: blocked on a lock?"
        if self.error:
            raise self.error


def pause_in(monkeypatch, module):
    """Give the workers a pause point after each statement run through ``module.execute``."""
    real = module.execute

    def execute(sql, params=()):
        rows = real(sql, params)
        worker = Worker.running.get(threading.current_thread())
        if worker is not None:
            worker.after_statement()
        return rows

    monkeypatch.setattr(module, "execute", execute)


def stored(envelope):
    """Store like the webhook does (committed, pending, no task sent); return the pk."""
    (result,) = pipeline.store([parse_envelope(envelope)], "webhook")
    return result.pk


def applying(pk):
    """What the Celery task does for one event; raises what it would swallow."""

    def work():
        assert tasks.process_event(pk) == 1
        assert WebhookEvent.objects.get(pk=pk).state == "processed"

    return work
