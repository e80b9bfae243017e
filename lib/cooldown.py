"""A per-process flag that stays up for a while after something failed: the
broker or the database was found away, so the next moments' requests do not
each wait to find it again."""

import threading
import time


class Cooldown:
    def __init__(self, seconds):
        self.seconds = seconds
        self._until = 0.0
        self._lock = threading.Lock()

    def trip(self):
        """It just failed: up for ``seconds`` from now."""
        with self._lock:
            self._until = time.monotonic() + self.seconds

    def clear(self):
        with self._lock:
            self._until = 0.0

    def active(self):
        return time.monotonic() < self._until
