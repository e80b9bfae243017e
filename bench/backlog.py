#!/usr/bin/env python
"""What applying a backlog costs: .venv/bin/python bench/backlog.py [--trades N]

Stores two webhook events per trade (reserved, then settled), pending, and
applies them the way the Celery worker does (``apply_stored``, in batches
of 500, one transaction each), in a database of its own (bench/run.py's):

in order      oldest first, as the sweep does after a short outage (the baseline);
newest first  every settled before any reserved, as when re-sent tasks for
              the newer events beat the sweep: each trade's moves are then
              recorded again in arrival order (ingest.trades).

Prints events/s for both and the ratio, measured in the same process.
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import _bench_database, say  # noqa: E402

BATCH = 500


def _store(prefix, trades):
    from ingest import pipeline
    from ingest.contract import parse_envelope
    from tests import envelopes

    reserved, settled = [], []
    history = [{"status": "reserved", "at": "2026-06-28T20:13:11Z"}]
    for i in range(trades):
        tid, ref = f"pt_live_{prefix}{i:07d}", f"{prefix.lower()}_{i}"
        first = envelopes.trade(
            "reserved", transact_id=tid, reference=ref, at=history[0]["at"], history=history
        )
        second = envelopes.trade(
            "settled",
            transact_id=tid,
            reference=ref,
            history=[*history, {"status": "settled", "at": "2026-06-28T20:15:03Z"}],
        )
        reserved.append(parse_envelope(first))
        settled.append(parse_envelope(second))
    # Arrival: each trade's reserved, then its settled.
    arrivals = [e for pair in zip(reserved, settled, strict=True) for e in pair]
    stored = pipeline.store(arrivals, "webhook")
    pks = [s.pk for s in stored]
    return pks[0::2], pks[1::2]


def _apply(pks):
    from django.db import transaction

    from ingest import pipeline

    started = time.perf_counter()
    for start in range(0, len(pks), BATCH):
        with transaction.atomic():
            pipeline.apply_stored(pks[start : start + BATCH])
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trades", type=int, default=2_000)
    args = parser.parse_args()
    base_url = os.environ.get("DATABASE_URL")
    if not base_url:
        sys.exit("DATABASE_URL is not set")
    url, drop = _bench_database(base_url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("OPSPANEL_TESTING", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opspanel.settings")
    try:
        import django

        django.setup()
        from django.core.management import call_command

        from records.models import StatusChange

        call_command("migrate", verbosity=0)
        events = 2 * args.trades
        reserved, settled = _store("INORDER", args.trades)
        took = _apply(sorted(reserved + settled))
        say(f"in order      {events / took:>8,.0f} events/s ({took:.2f}s)")
        reserved, settled = _store("NEWEST", args.trades)
        backwards = _apply(settled) + _apply(reserved)
        say(
            f"newest first  {events / backwards:>8,.0f} events/s ({backwards:.2f}s)"
            f"  = {took / backwards:.2f}x in order"
        )
        late = StatusChange.objects.filter(outcome="late").count()
        say(f"moves flagged late: {late}")
    finally:
        from django.db import connections

        connections.close_all()
        drop()


if __name__ == "__main__":
    main()
