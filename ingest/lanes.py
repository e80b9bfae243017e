"""``import_events --jobs N``: one file imported by N processes side by side.

An import in one process keeps one core busy at a time: Python checks a
batch while PostgreSQL waits, then PostgreSQL writes it while Python waits.
A lane is a process forked from the command, with a connection of its own;
N lanes keep N cores busy.

Every lane reads the whole file and imports the lines routed to it (decoding
a line it skips costs ~3 µs, against ~180 µs for one it imports). ``Router``
sends everything of one partner and pool to one lane: an order's quotes and
trades (an order has one pool), the ledger entries of its trades, and the
delivery reports of its events. So

- the events of one order are applied by one lane in the file's order, as in
  one process: arrival order (the id order) is the file's order within an
  order, and across orders the lanes interleave, as parallel workers do;
- two lanes do not write the same rows, the kept stuck-queue counts
  included (``ReservedMinute``, ``ReservedTotal``: per pool and partner,
  updated by every batch that moves a reserved trade). Lanes sharing them
  would wait for each other's commits.

A pair is given, when first seen, to the lane with the fewest lines so far.
Every lane sees the same lines in the same order, so every lane routes alike.
Where a route is still wrong (a delivery report read long after its event, a
pool that changed within an order), the pipeline still applies it correctly,
as it does for parallel workers: a record that arrives before the one it
refers to waits, and the command links what still waits once the lanes end.
"""

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import traceback
import zlib
from multiprocessing.connection import wait

from .imports import Lines, import_lines, open_lines

# Delivery reports go where their event went: the lanes of the last
# 100,000 to 200,000 events are remembered (~25 MB a lane).
EVENT_MEMORY = 200_000


class Router:
    """Which of ``lanes`` imports a decoded line; the same answer in every lane."""

    def __init__(self, lanes):
        self.lanes = lanes
        self.pairs = {}  # (partner id, pool id) -> lane
        self.events = {}  # event id -> lane, the last EVENT_MEMORY
        self.load = [0] * lanes

    def lane(self, number, decoded):
        data = decoded.get("data") if isinstance(decoded, dict) else None
        if not isinstance(data, dict):
            # Not an envelope: whichever lane, as long as one reports it.
            return number % self.lanes
        if data.get("object") == "delivery_attempt":
            reported = _text(data.get("eventId"))
            lane = self.events.get(reported)
            if lane is None:
                lane = zlib.crc32(reported.encode()) % self.lanes
        else:
            pair = (_text(data.get("partnerId")), _text(data.get("poolId")))
            lane = self.pairs.get(pair)
            if lane is None:
                lane = self.pairs[pair] = self.load.index(min(self.load))
        self.load[lane] += 1
        event_id = decoded.get("id")
        if isinstance(event_id, str):
            self.events[event_id] = lane
            if len(self.events) > EVENT_MEMORY:
                self.events = dict(list(self.events.items())[EVENT_MEMORY // 2 :])
        return lane


def _text(value):
    return value if isinstance(value, str) else ""


class _Lane:
    """One lane's reports to the command, over a pipe: ("rejected", number,
    reason), ("stored", imported, duplicates), ("at", bytes read), ("done",
    broken or None, lines read), or ("failed", traceback)."""

    def __init__(self, pipe, raw):
        self.pipe = pipe
        self.raw = raw
        self.parent = os.getppid()

    def reject(self, number, reason):
        self.pipe.send(("rejected", number, reason))

    def stored(self, imported, duplicates):
        self.pipe.send(("stored", imported, duplicates))

    def read(self, number):
        if os.getppid() != self.parent:
            # The command was killed without a word to its lanes (SIGKILL,
            # the out-of-memory killer): stop, rather than import on alone.
            raise SystemExit(1)
        self.pipe.send(("at", self.raw.tell()))


def _run_lane(lane, lanes, path, batch_size, pipe, inherited):
    """A lane's process: its own connection, its lines, a report at the end."""
    try:
        _leave_the_parent_its_own(inherited)
        _own_connections()
        stream, raw, _ = open_lines(path)
        router = Router(lanes)
        lines = Lines(stream)
        with stream, raw:
            import_lines(
                lines,
                batch_size,
                _Lane(pipe, raw),
                mine=lambda number, decoded: router.lane(number, decoded) == lane,
            )
        _flush_statistics()
        pipe.send(("done", lines.broken, lines.last))
    except BaseException:
        # The command says why; the lane's traceback goes with it, not to
        # the terminal from here.
        with contextlib.suppress(OSError):
            pipe.send(("failed", traceback.format_exc()))
        sys.exit(1)
    finally:
        from django.db import connections

        connections.close_all()
        pipe.close()


def _leave_the_parent_its_own(inherited):
    """In a freshly forked lane: close the read ends of the command's pipes
    (so a lane's report to a command that is gone fails at once instead of
    filling the pipe and waiting forever), and write to the real standard
    streams, not to a progress bar's stand-ins, whose lock another thread of
    the parent may have held at the fork."""
    for receive in inherited:
        receive.close()
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    # The command's SIGTERM handler is the command's: a lane it terminates ends.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# The parent's connections, kept referenced in a lane so that nothing there
# ever closes them: closing sends the server a goodbye on the parent's socket.
_INHERITED = []


def _own_connections():
    """In a freshly forked lane: new connections, the parent's left alone.

    The lane inherits the parent's Django connections and psycopg pool (their
    sockets, and transaction state). It keeps them referenced and unused, and
    opens one connection of its own per database, without a pool: a lane
    holds one connection for its whole life.
    """
    from asgiref.local import Local
    from django.db import connections
    from django.db.backends.postgresql.base import DatabaseWrapper

    _INHERITED.append((connections._connections, dict(DatabaseWrapper._connection_pools)))
    DatabaseWrapper._connection_pools.clear()
    connections._connections = Local(connections.thread_critical)
    for alias in connections:
        connections.settings[alias].get("OPTIONS", {}).pop("pool", None)


def _flush_statistics():
    """Hand this backend's counts of changed rows to PostgreSQL's statistics
    now, not when it next gets round to it: the command decides from them,
    once the lanes end, which tables need ANALYZE."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT 1")  # the flush happens once the first has ended


class LaneFailed(Exception):
    """A lane stopped before its end: ``str()`` says which and why in a line,
    ``detail`` holds its traceback where it sent one."""

    def __init__(self, lane, lanes, detail):
        self.detail = detail
        why = detail.rstrip().rsplit("\n", 1)[-1]
        super().__init__(f"lane {lane + 1} of {lanes} stopped: {why}")


def run_lanes(path, lanes, batch_size, out):
    """Import ``path`` in ``lanes`` forked processes; tell ``out`` what they
    report (``reject``, ``stored(imported, duplicates)``, ``at(lowest
    position)``). Returns ``(broken, lines read)`` as ``ingest.imports.Lines``
    has them, or raises ``LaneFailed``: the other lanes are stopped, and what
    they committed stays. Every lane must have read the same lines: one that
    read fewer or more (the file changed under the import, or a read failed
    in one lane only) fails the import, since lines routed to another lane
    may then have gone unread.
    """
    context = multiprocessing.get_context("fork")
    processes, pipes = [], {}
    positions = [0] * lanes
    ends = {}  # lane -> (broken, lines read)
    try:
        with _terminated_as_interrupted():
            for lane in range(lanes):
                receive, send = context.Pipe(duplex=False)
                process = context.Process(
                    target=_run_lane,
                    args=(lane, lanes, path, batch_size, send, [*pipes, receive]),
                    name=f"import lane {lane + 1}/{lanes}",
                    daemon=True,
                )
                process.start()
                send.close()
                processes.append(process)
                pipes[receive] = lane
            while pipes:
                for pipe in wait(list(pipes)):
                    lane = pipes[pipe]
                    try:
                        message = pipe.recv()
                    except EOFError:
                        del pipes[pipe]
                        if lane not in ends:
                            processes[lane].join()
                            why = f"it ended without a word (exit {processes[lane].exitcode})"
                            raise LaneFailed(lane, lanes, why) from None
                        continue
                    kind = message[0]
                    if kind == "rejected":
                        out.reject(message[1], message[2])
                    elif kind == "stored":
                        out.stored(message[1], message[2])
                    elif kind == "at":
                        positions[lane] = message[1]
                        out.at(min(positions))
                    elif kind == "done":
                        ends[lane] = (message[1], message[2])
                    else:
                        raise LaneFailed(lane, lanes, message[1])
            for process in processes:
                process.join()
    finally:
        # Only after a failure, Ctrl-C or SIGTERM is one still running: a
        # batch it has open is rolled back with its connection.
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    first = ends[0]
    for lane, end in ends.items():
        if end != first:
            raise LaneFailed(
                lane,
                lanes,
                f"it read {end[1]} lines where lane 1 read {first[1]}"
                " (did the file change during the import?)",
            )
    return first


@contextlib.contextmanager
def _terminated_as_interrupted():
    """SIGTERM (``kill``, a supervisor stopping the command) raises, as Ctrl-C
    does, so that the lanes are stopped too instead of importing on."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
