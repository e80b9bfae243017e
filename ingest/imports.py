"""Reading an NDJSON import: its lines, and the checking and batching of them.

``manage.py import_events`` runs this in one process, or in several lanes
side by side (``ingest.lanes``); either way a line is read, checked and
ingested here.
"""

import gzip
import os
import sys
import zlib

import orjson
import psycopg
from django.core.management.base import CommandError

from .contract import ContractError, parse_envelope
from .pipeline import ingest
from .shapes import quick_envelope

GZIP_MAGIC = b"\x1f\x8b"
# How often (in lines) the reader reports where it is: the progress bar.
TICK_LINES = 1000
# A batch that met another writer's locks in the opposite order (PostgreSQL
# broke the deadlock by rolling it back) is run again, this many times.
DEADLOCK_TRIES = 5


def open_lines(path):
    """(line stream, the underlying file, its size in bytes or None for stdin)."""
    if path == "-":
        raw = sys.stdin.buffer
        if raw.peek(2)[:2] == GZIP_MAGIC:
            return gzip.GzipFile(fileobj=raw), None, None
        return raw, None, None
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed with the stream
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    size = os.fstat(raw.fileno()).st_size
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw), raw, size
    raw.seek(0)
    return raw, raw, size


class Lines:
    """The non-blank lines of a stream as ``(number, line)``, numbered from 1.

    A gzip stream cut short (or a file that only starts like gzip) ends the
    lines; ``broken`` then says where, and what came before is imported.
    """

    def __init__(self, stream):
        self.stream = stream
        self.broken = None
        self.last = 0

    def __iter__(self):
        lines = enumerate(self.stream, start=1)
        while True:
            try:
                self.last, line = next(lines)
            except StopIteration:
                return
            except (EOFError, OSError, zlib.error) as exc:
                self.broken = f"line {self.last + 1}: the gzip stream is broken ({exc})"
                return
            if line.strip():
                yield self.last, line


def import_lines(lines, batch_size, out, mine=None):
    """Check ``lines`` against the contract and ingest them, ``batch_size``
    events a transaction.

    ``out`` is told ``reject(number, reason)`` for a bad line,
    ``stored(imported, duplicates)`` for each batch and ``read(number)``
    every ``TICK_LINES`` lines. ``mine(number, decoded)``,
    where given, says whether this process imports a line (``ingest.lanes``);
    it is asked with ``None`` for a line that is not JSON, which one process
    alone reports.
    """
    batch = []
    for number, line in lines:
        if number % TICK_LINES == 0:
            out.read(number)
        envelope = _envelope(number, line, out, mine)
        if envelope is None:
            continue
        batch.append(envelope)
        if len(batch) >= batch_size:
            _stored(out, ingest_batch(batch))
            batch = []
    if batch:
        _stored(out, ingest_batch(batch))


def _envelope(number, line, out, mine):
    """The line's ``Envelope``, or ``None`` for a line rejected (reported to
    ``out``) or another lane's. ``shapes.quick_envelope`` checks most lines
    in one pass; the rest go through ``parse_envelope``, which also says why
    a line is refused."""
    try:
        decoded = orjson.loads(line)
    except orjson.JSONDecodeError:
        if mine is None or mine(number, None):
            out.reject(number, "not valid JSON")
        return None
    if mine is not None and not mine(number, decoded):
        return None
    try:
        return quick_envelope(decoded) or parse_envelope(decoded)
    except ContractError as exc:
        out.reject(number, str(exc))
        return None


def _stored(out, results):
    duplicates = sum(1 for stored in results if stored.duplicate)
    out.stored(len(results) - duplicates, duplicates)


def ingest_batch(envelopes):
    """``ingest`` one batch (one transaction), again if PostgreSQL picked it to
    break a deadlock: it was rolled back whole, so nothing of it is applied."""
    for attempt in range(1, DEADLOCK_TRIES + 1):
        try:
            return ingest(envelopes, "import")
        except Exception as exc:
            if attempt == DEADLOCK_TRIES or not _is_deadlock(exc):
                raise


def _is_deadlock(exc):
    # The pipeline's own statements raise psycopg's error; Django's cursors
    # wrap it (OperationalError, the psycopg error as its cause).
    return isinstance(exc, psycopg.errors.DeadlockDetected) or isinstance(
        exc.__cause__, psycopg.errors.DeadlockDetected
    )
