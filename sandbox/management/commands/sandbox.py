"""``manage.py sandbox ACTION``: a simulated 0Pools network.

``generate`` writes the network's events as NDJSON, one contract envelope a
line, in delivery order: to stdout, or to ``--out FILE`` (gzipped when FILE
ends in .gz). Same ``--orders``, ``--seed`` and ``--start`` give the same
bytes. See ``sandbox.network`` for what the stream holds.

``serve`` runs the simulated upstream on loopback until Ctrl-C: the status
API, a control API for faults, and partner webhook endpoints. See
``sandbox.server`` for the paths.
"""

import gzip
import itertools
import os
import sys
from argparse import ArgumentTypeError
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

import orjson
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from lib.formats import rfc3339
from sandbox import server
from sandbox.catalogue import RECON_PLANS
from sandbox.loopback import is_loopback
from sandbox.network import DEFAULT_START, generate

CHUNK = 1000  # envelopes per write
DEFAULT_PORT = 8001


def _order_count(text):
    if not text.isdigit():
        raise ArgumentTypeError(f"expected a count of 0 or more, got {text!r}")
    return int(text)


def _exception_kinds(text):
    kinds = list(RECON_PLANS) if text == "all" else [k for k in text.split(",") if k]
    unknown = [k for k in kinds if k not in RECON_PLANS]
    if unknown or not kinds:
        raise ArgumentTypeError(
            f"unknown exception kind {', '.join(unknown) or text!r}; "
            f"expected all or some of {', '.join(RECON_PLANS)}"
        )
    return tuple(dict.fromkeys(kinds))


def _port(text):
    if not text.isdigit() or int(text) > 65535:
        raise ArgumentTypeError(f"expected a port number (0 picks a free one), got {text!r}")
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
                f"{rfc3339(DEFAULT_START)}); every time in the stream is an offset "
                "from it. Put it a few hours before now to see trades stuck in reserved "
                "as stuck today."
            ),
        )
        generate_parser.add_argument(
            "--out", type=Path, help="write here instead of stdout; gzipped if it ends in .gz"
        )
        generate_parser.add_argument(
            "--exceptions",
            type=_exception_kinds,
            default=(),
            metavar="KIND[,KIND]|all",
            help=(
                "after the named scenarios, one order per reconciliation exception kind "
                f"(partner order id recon_<kind>): {', '.join(RECON_PLANS)}"
            ),
        )

        serve_parser = actions.add_parser(
            "serve",
            help="run the simulated 0Pools upstream on loopback",
            description=(
                "Serve the status API (GET /v1/trades/{id}) with the truth of the stream "
                "--orders/--seed/--start would generate, a control API for faults under "
                "/_sandbox/, and partner webhook endpoints, until Ctrl-C."
            ),
        )
        serve_parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
        serve_parser.add_argument(
            "--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}"
        )
        serve_parser.add_argument(
            "--allow-remote",
            action="store_true",
            help="allow a --host that is not loopback (the control API still answers "
            "loopback clients only)",
        )
        serve_parser.add_argument(
            "--orders", type=_order_count, default=100, help="random orders besides the scenarios"
        )
        serve_parser.add_argument("--seed", type=int, default=0)
        serve_parser.add_argument(
            "--wire-partners",
            action="store_true",
            help=(
                "demo wiring: give every partner in the database an endpoint on this "
                "server's receiver and a signing secret, and register the secrets here"
            ),
        )
        serve_parser.add_argument(
            "--start",
            type=_utc_time,
            default=DEFAULT_START,
            help=f"the network's clock at the first order (default {rfc3339(DEFAULT_START)})",
        )
        serve_parser.add_argument(
            "--api-key",
            help="the status API's bearer key (default: $OPOOLS_API_KEY, else "
            f"{server.DEFAULT_API_KEY})",
        )

    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action}")(**options)

    def handle_generate(self, *, orders, seed, start, out, exceptions, **options):
        chunks = _ndjson_chunks(generate(orders, seed, start, exceptions))
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

    def handle_serve(
        self, *, host, port, allow_remote, orders, seed, start, api_key, wire_partners, **options
    ):
        api_key = api_key or os.environ.get("OPOOLS_API_KEY") or server.DEFAULT_API_KEY
        if not allow_remote and not is_loopback(host):
            raise CommandError(f"{host!r} is not loopback; add --allow-remote if you mean it")
        try:
            sandbox = server.start(
                host,
                port,
                orders=orders,
                seed=seed,
                start=start,
                api_key=api_key,
                allow_remote=allow_remote,
            )
        except OSError as error:
            raise CommandError(f"cannot listen on {host}:{port}: {error.strerror}") from error
        if wire_partners:
            wired = _wire_partners(sandbox)
            self.stdout.write(
                f"  partner receiver: {wired} partners wired to {sandbox.url}/partners/"
            )
        trades = sandbox.state.summary()
        reserved = sum(trade["status"] == "reserved" for trade in trades)
        key = "the default sandbox key" if api_key == server.DEFAULT_API_KEY else "your key"
        self.stdout.write(
            self.style.SUCCESS(f"0Pools sandbox on {sandbox.url}")
            + f" ({len(trades)} trades, {reserved} still reserved; status API key: {key})\n"
            f"  OPOOLS_API_URL={sandbox.url}\n"
            f"  control API: {sandbox.url}/_sandbox/  (Ctrl-C stops it)"
        )
        try:
            sandbox.wait()
        except KeyboardInterrupt:
            self.stdout.write("Stopping.")
        finally:
            sandbox.stop()


def _wire_partners(sandbox):
    """Point every partner at this receiver (where none is set) and share their secrets."""
    from partners.models import Endpoint, SigningSecret
    from partners.services import rotate_secret, set_endpoint
    from records.models import Partner

    partners = list(Partner.objects.all())
    for partner in partners:
        if not Endpoint.objects.filter(partner=partner).exists():
            set_endpoint(
                partner,
                f"{sandbox.url}/partners/{partner.partner_id}/webhooks",
                actor_name="sandbox",
            )
        if not SigningSecret.objects.active().filter(partner=partner).exists():
            rotate_secret(partner, actor_name="sandbox")
        secrets = [s.secret for s in SigningSecret.objects.active().filter(partner=partner)]
        sandbox.state.receiver.add_partner(partner.partner_id, {"secrets": secrets, "respond": 200})
    return len(partners)


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
