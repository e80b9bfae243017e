"""``manage.py import_events PATH|-``: backfill NDJSON envelopes.

The same pipeline as the webhook minus the signature check. A bad line is
reported with its number and reason; the rest still imports. Re-running the
same file imports nothing new. ``--jobs N`` imports a file in N processes
side by side (``ingest.lanes``).
"""

import gc
import sys
import time
from contextlib import contextmanager, nullcontext

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from psycopg import sql

from ingest.imports import Lines, import_lines, open_lines
from ingest.lanes import LaneFailed, run_lanes
from ingest.pipeline import relink_waiting
from ingest.sql import execute
from records.models import (
    DeliveryAttempt,
    Identifier,
    LedgerEntry,
    Order,
    Quote,
    StatusChange,
    Trade,
    WebhookEvent,
)


class Command(BaseCommand):
    help = "Import 0Pools event envelopes from an NDJSON file (.gz allowed) or - for stdin."

    def add_arguments(self, parser):
        parser.add_argument("path", help="NDJSON file, optionally gzipped, or - for stdin")
        parser.add_argument("--batch-size", type=int, default=2000)
        parser.add_argument(
            "--jobs",
            type=int,
            default=1,
            help="processes importing side by side, each with its own database connection"
            " (a file only; stdin is read by one)",
        )
        parser.add_argument(
            "--progress",
            choices=["auto", "always", "never"],
            default="auto",
            help="progress bar on stderr: auto shows it when stderr is a terminal",
        )

    def handle(self, path, batch_size, jobs, progress, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be 1 or more")
        if jobs < 1:
            raise CommandError("--jobs must be 1 or more")
        if jobs > 1 and path == "-":
            self.stderr.write("--jobs needs a file: standard input is read by one process")
            jobs = 1
        show = progress == "always" or (progress == "auto" and sys.stderr.isatty())
        with _few_collections():
            self._import(path, batch_size, jobs, show, options)

    def _import(self, path, batch_size, jobs, show, options):
        counts = _Counts(self.stderr)
        started = time.perf_counter()
        if jobs == 1:
            broken, read = self._in_one(path, batch_size, show, counts)
        else:
            broken, read = self._in_lanes(path, batch_size, jobs, show, counts, options)
        if counts.imported >= ANALYZE_AFTER:
            # Fresh statistics, or the planner keeps plans made for empty
            # tables (and skips the indexes the pages rely on). Only where
            # the rows changed since the last ANALYZE, this import's
            # included, are a good share of the table: sampling a big table
            # for a small import cost as much as a second of writing, and
            # made the import slower the bigger the tables got.
            with connection.cursor() as cursor:
                for table in _stale_tables():
                    cursor.execute(f"ANALYZE {table}")
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"imported {counts.imported}, duplicates {counts.duplicates}, "
            f"rejected {counts.rejected}"
        )
        if options["verbosity"] > 1:
            seen = counts.imported + counts.duplicates
            lanes = f" in {jobs} lanes" if jobs > 1 else ""
            self.stderr.write(f"{seen / elapsed:,.0f} events/s over {elapsed:.1f}s{lanes}")
        if broken:
            raise CommandError(f"{broken}; the {read} lines before it were read")
        if counts.rejected:
            sys.exit(1)

    def _in_one(self, path, batch_size, show, counts):
        stream, raw, total = open_lines(path)
        lines = Lines(stream)
        with stream, raw or nullcontext(), _progress(show, total) as bar:
            counts.bar = bar
            import_lines(lines, batch_size, _OneProcess(counts, raw))
            bar(lines.last if raw is None else total)
        return lines.broken, lines.last

    def _in_lanes(self, path, batch_size, jobs, show, counts, options):
        # The lanes open the file themselves; opening it here first makes a
        # missing file one clear error, not one from each lane.
        stream, raw, total = open_lines(path)
        with stream, raw:
            pass
        with _progress(show, total) as bar:
            counts.bar = bar
            try:
                broken, read = run_lanes(path, jobs, batch_size, counts)
            except LaneFailed as exc:
                if options["verbosity"] > 1:
                    self.stderr.write(exc.detail)
                raise CommandError(
                    f"{exc}. What the lanes committed stays imported: run the same command"
                    " again to import the rest (what is there is skipped)."
                ) from None
            bar(total)
        # Records that reached one lane before what they refer to was
        # committed by another (rare: see ingest.lanes) are linked now; a
        # full call may have left more. Bounded: whatever a call cannot link
        # stays waiting for the sweep, as after a webhook.
        for _ in range(RELINK_CALLS):
            if relink_waiting(RELINK_LIMIT) < RELINK_LIMIT:
                break
        return broken, read


class _Counts:
    """What the import did, the rejected lines said on stderr as they come,
    and the progress bar moved (``bar``, set by the command): ``run_lanes``'s
    ``out``."""

    def __init__(self, stderr):
        self.stderr = stderr
        self.bar = lambda done: None
        self.imported = self.duplicates = self.rejected = 0

    def reject(self, number, reason):
        self.rejected += 1
        self.stderr.write(f"line {number}: {reason}")

    def stored(self, imported, duplicates):
        self.imported += imported
        self.duplicates += duplicates

    def at(self, position):
        self.bar(position)


class _OneProcess:
    """``import_lines``'s ``out`` in one process: the counts, and the bar
    over the bytes read (lines, for stdin)."""

    def __init__(self, counts, raw):
        self.counts, self.raw = counts, raw
        self.reject = counts.reject
        self.stored = counts.stored

    def read(self, number):
        self.counts.at(number if self.raw is None else self.raw.tell())


def _stale_tables():
    """The analyzed tables of which ``STALE_SHARE`` or more changed since
    their last ANALYZE, by PostgreSQL's own counts.

    Statistics never gathered count -1 rows: always stale. The counts of
    committed work are flushed first (the backend sends them at most once
    a second); those of a transaction still open (a test's) are added.
    """
    execute(sql.SQL("SELECT pg_stat_force_next_flush()"))
    rows = execute(
        sql.SQL("""
        SELECT c.relname, c.reltuples,
               COALESCE(s.n_mod_since_analyze, 0)
               + COALESCE(x.n_tup_ins + x.n_tup_upd + x.n_tup_del, 0)
          FROM pg_class c
          LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
          LEFT JOIN pg_stat_xact_user_tables x ON x.relid = c.oid
         WHERE c.oid = ANY(%b::text[]::regclass[])
        """),
        [list(ANALYZED_TABLES)],
    )
    return sorted(table for table, tuples, changed in rows if changed >= STALE_SHARE * tuples)


ANALYZE_AFTER = 10_000
# relink_waiting looks at up to RELINK_LIMIT keys a call, RELINK_CALLS calls.
RELINK_LIMIT = 1000
RELINK_CALLS = 1000
# Autovacuum's default share (autovacuum_analyze_scale_factor): statistics
# of a table of which less changed are still good. Changes add up over
# imports (and autovacuum may be off, as on the bench's server).
STALE_SHARE = 0.1
ANALYZED_TABLES = tuple(
    model._meta.db_table
    for model in (
        WebhookEvent,
        Trade,
        Order,
        Quote,
        Identifier,
        LedgerEntry,
        DeliveryAttempt,
        StatusChange,
    )
)


@contextmanager
def _few_collections():
    """Let the cyclic garbage collector run less while importing.

    A batch allocates tens of thousands of dicts and lists that reference
    counting frees; every 700 of them the collector ran anyway, and now and
    then walked every object of the process (Django's included). That was
    a fifth of the import's Python time. The objects there before the import
    are frozen out of its walks, and it runs every 50,000 allocations.
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


@contextmanager
def _progress(show, total):
    """Yield ``bar(done)``: a bar on stderr over bytes read, or lines read
    where the size is unknown (stdin)."""
    if not show:
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "importing",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task("import", total=total)
    with bar:
        yield lambda done: bar.update(task, completed=done)
