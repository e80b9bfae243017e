"""``manage.py sandbox ACTION``: a simulated 0Pools network.

``generate`` writes the network's events as NDJSON, one contract envelope a
line, in delivery order: to stdout, or to ``--out FILE`` (gzipped when FILE
ends in .gz). Same ``--orders``, ``--seed`` and ``--start`` give the same
bytes. See ``sandbox.network`` for what the stream holds.
"""

import gzip
import itertools
import sys
from argparse import ArgumentTypeError
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

import orjson
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from sandbox.network import DEFAULT_START, generate

CHUNK = 1000  # envelopes per write


def _order_count(text):
    if not text.isdigit():
        raise ArgumentTypeError(f"expected a count of 0 or more, got {text!r}")
    return int(text)


def _utc_time(text):
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ArgumentTypeError(f"expected an RFC 3339 time, got {text!r}") from None
    if moment.tzinfo is None:
        raise ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. 2026-11-20T00:00:00Z")
    return moment.astimezone(UTC)


class Command(BaseCommand):
    help = "A simulated 0Pools network."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        generate_parser = actions.add_parser(
            "generate",
            help="write the network's events as NDJSON",
            description=(
                "Write the named scenarios plus --orders random orders as NDJSON event "
                "envelopes, in delivery order. Output is a function of the arguments only."
            ),
        )
        generate_parser.add_argument(
            "--orders", type=_order_count, default=100, help="random orders besides the scenarios"
        )
        generate_parser.add_argument("--seed", type=int, default=0)
        generate_parser.add_argument(
            "--start",
            type=_utc_time,
            default=DEFAULT_START,
            help=(
                "the network's clock at the first order (default "
                f"{DEFAULT_START:%Y-%m-%dT%H:%M:%SZ}); every time in the stream is an offset "
                "from it. Put it a few hours before now to see trades stuck in reserved "
                "as stuck today."
            ),
        )
        generate_parser.add_argument(
            "--out", type=Path, help="write here instead of stdout; gzipped if it ends in .gz"
        )

    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action}")(**options)

    def handle_generate(self, *, orders, seed, start, out, **options):
        chunks = _ndjson_chunks(generate(orders, seed, start))
        if out is None:
            for chunk, _ in chunks:
                self.stdout.write(chunk.decode(), ending="")
            return
        written = 0
        with _open_out(out) as stream, _progress(sys.stderr.isatty()) as advance:
            for chunk, count in chunks:
                stream.write(chunk)
                written += count
                advance(count)
        self.stdout.write(self.style.SUCCESS(f"Wrote {written:,} events to {out}"))


def _ndjson_chunks(envelopes):
    """(bytes, envelope count) for every CHUNK envelopes."""
    while batch := list(itertools.islice(envelopes, CHUNK)):
        yield b"".join(orjson.dumps(envelope) + b"\n" for envelope in batch), len(batch)


@contextmanager
def _open_out(path):
    try:
        raw = path.open("wb")
    except OSError as error:
        raise CommandError(f"cannot write {path}: {error.strerror}") from error
    with raw:
        if path.suffix == ".gz":
            # No name and mtime=0 in the gzip header: the bytes depend on the seed only.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed:
                yield compressed
        else:
            yield raw


def _progress(show):
    """A context giving advance(n); a live event count on stderr when ``show``."""
    if not show:
        return nullcontext(lambda count: None)
    return _rich_progress()


@contextmanager
def _rich_progress():
    columns = (
        SpinnerColumn(),
        TextColumn("generating"),
        TextColumn("{task.completed:,} events"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("generate", total=None)
        yield lambda count: progress.advance(task, count)
