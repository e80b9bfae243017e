"""``manage.py import_events PATH|-``: backfill NDJSON envelopes.

The same pipeline as the webhook minus the signature check. A bad line is
reported with its number and reason; the rest still imports. Re-running the
same file imports nothing new.
"""

import gc
import gzip
import os
import sys
import time
import zlib
from contextlib import contextmanager, nullcontext

import orjson
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from psycopg import sql

from ingest.contract import ContractError, parse_envelope
from ingest.pipeline import ingest
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
            "--progress",
            choices=["auto", "always", "never"],
            default="auto",
            help="progress bar on stderr: auto shows it when stderr is a terminal",
        )

    def handle(self, path, batch_size, progress, **options):
        with _few_collections():
            self._import(path, batch_size, progress, options)

    def _import(self, path, batch_size, progress, options):
        stream, raw, total = _open(path)
        show = progress == "always" or (progress == "auto" and sys.stderr.isatty())
        counts = {"imported": 0, "duplicates": 0, "rejected": 0}
        started = time.perf_counter()
        broken = None
        with stream, raw or nullcontext(), _progress(show, raw, total) as tick:
            batch = []
            number = 0
            lines = enumerate(stream, start=1)
            while True:
                try:
                    number, line = next(lines)
                except StopIteration:
                    break
                except (EOFError, OSError, zlib.error) as exc:
                    # A gzip file cut short, or one that only starts like gzip:
                    # what came before is imported, and the command says where.
                    broken = f"line {number + 1}: the gzip stream is broken ({exc})"
                    break
                if number % 1000 == 0:
                    tick(number)
                if not line.strip():
                    continue
                try:
                    batch.append(parse_envelope(orjson.loads(line)))
                except orjson.JSONDecodeError:
                    self._reject(counts, number, "not valid JSON")
                    continue
                except ContractError as exc:
                    self._reject(counts, number, str(exc))
                    continue
                if len(batch) >= batch_size:
                    self._flush(batch, counts)
                    batch = []
            self._flush(batch, counts)
            tick(number if raw is None else total)
        if counts["imported"] >= ANALYZE_AFTER:
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
        total_seen = counts["imported"] + counts["duplicates"]
        self.stdout.write(
            f"imported {counts['imported']}, duplicates {counts['duplicates']}, "
            f"rejected {counts['rejected']}"
        )
        if options["verbosity"] > 1:
            self.stderr.write(f"{total_seen / elapsed:,.0f} events/s over {elapsed:.1f}s")
        if broken:
            raise CommandError(f"{broken}; the {number} lines before it were read")
        if counts["rejected"]:
            sys.exit(1)

    def _reject(self, counts, number, reason):
        counts["rejected"] += 1
        self.stderr.write(f"line {number}: {reason}")

    def _flush(self, batch, counts):
        if not batch:
            return
        for stored in ingest(batch, "import"):
            counts["duplicates" if stored.duplicate else "imported"] += 1


def _open(path):
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


GZIP_MAGIC = b"\x1f\x8b"
ANALYZE_AFTER = 10_000
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
def _progress(show, raw, total):
    """Yield ``tick(lines)``: a bar on stderr over bytes read (lines for stdin)."""
    if not show:
        yield lambda lines: None
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
        if raw is None:
            yield lambda lines: bar.update(task, completed=lines)
        else:
            yield lambda lines: bar.update(task, completed=raw.tell())
