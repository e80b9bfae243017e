"""Sending Celery tasks from the request or a service's caller."""

from django.db import transaction


def send_on_commit(task, *args):
    """Send ``task`` after the current transaction commits (at once outside one).

    A broker that is down is logged, not raised (``robust``): what the task
    would do is already stored, and a periodic sweep picks it up. This is not
    an outbox; the sweeps are the safety net.
    """

    def send():
        task.delay(*args)

    send.__qualname__ = f"send {task.name}"  # named in the log when it fails
    transaction.on_commit(send, robust=True)
