"""manage.py import_events --jobs N: a file imported by N forked processes
leaves exactly what one process leaves, reports each bad line once, and a
lane that fails stops the import with a clear error and loses nothing.

The lanes commit on connections of their own, so these tests run with
``transaction=True`` (the test database is emptied after each).
"""

import gzip
import io
import os
import signal
import subprocess
import sys
import time

import orjson
import psutil
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from bench import dataset
from ingest import imports, pipeline
from ingest import lanes as lanes_module
from ingest.lanes import EVENT_MEMORY, Router, run_lanes
from records.models import Identifier, Order, Trade, WebhookEvent
from sandbox.catalogue import RECON_PLANS
from sandbox.network import generate
from tests import envelopes
from tests.helpers import (
    ledger_truncate_allowed,
    ndjson,
    run_import_file,
    subprocess_database_url,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _network(orders, seed):
    """The sandbox's lines: every fault it plants (duplicates, events out of
    order, ledger entries before their trade, delivery reports), and the
    reconciliation exceptions (entries under trades that never come)."""
    start = dataset.stream_start(orders)
    return [orjson.dumps(e) for e in generate(orders, seed, start, exceptions=tuple(RECON_PLANS))]


def _url():
    return subprocess_database_url()


def _empty_tables():
    with ledger_truncate_allowed():
        call_command("flush", interactive=False, verbosity=0)


def _same_records(one, other, *, skip=()):
    """``dataset.snapshot``s hold the same records. A kept stuck-queue total
    at zero is no record: whether one exists depends on which events shared
    a batch (a trade reserved and settled within one statement never adds
    its pair's row), in one process as in lanes."""
    (one_counts, one_rows), (other_counts, other_rows) = one, other
    for counts in (one_counts, other_counts):
        counts.pop("records_reservedtotal")
    for rows in (one_rows, other_rows):
        rows["records_reservedtotal"] = [row for row in rows["records_reservedtotal"] if row[-1]]
    assert one_counts == other_counts  # the same rows in every table
    for name, rows in one_rows.items():
        if name not in skip:
            assert other_rows[name] == rows, name


def _pks_in_file_order(lines):
    first = list(dict.fromkeys(orjson.loads(line)["id"] for line in lines))
    pk = dict(WebhookEvent.objects.values_list("event_id", "pk"))
    return [pk[event_id] for event_id in first]


@pytest.mark.parametrize("batch_size", [1, 25])
def test_a_file_imported_in_lanes_leaves_what_one_process_leaves(tmp_path, batch_size):
    lines = _network(40, 11)
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")

    code, out, err = run_import_file(path, jobs=3, batch_size=batch_size)
    assert (code, err) == (0, "")
    in_lanes = dataset.snapshot(_url())
    in_lanes_pks = _pks_in_file_order(lines)
    _empty_tables()
    code, one_out, err = run_import_file(path, batch_size=batch_size)
    assert (code, err) == (0, "")
    in_one = dataset.snapshot(_url())

    assert out == one_out
    assert out.startswith(f"imported {in_one[0]['records_webhookevent']}, duplicates ")
    assert in_one[0]["records_webhookevent"] > 300
    _same_records(in_one, in_lanes)
    # One process stores events in the file's order; the lanes did not (each
    # takes ids as it stores its own lines).
    assert _pks_in_file_order(lines) == sorted(_pks_in_file_order(lines))
    assert in_lanes_pks != sorted(in_lanes_pks)


def test_bad_lines_are_reported_once_each_by_number_and_the_rest_imports(tmp_path):
    good = [envelopes.quote("created"), envelopes.trade("reserved"), envelopes.trade("settled")]
    broken = envelopes.trade("settled", transact_id="pt_live_BROKEN1")
    broken["data"]["amount"] = {"value": "lots", "currency": "EUR"}
    broken["data"]["poolId"] = "USD-USDC"  # another pair: another lane
    lines = [
        ndjson(good[0]),
        ndjson(broken),
        b"{this is not json\n",
        b"\n",
        ndjson(good[1]),
        b'["an", "array"]\n',
        ndjson(good[2]),
    ]
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"".join(lines))
    router = Router(2)
    lanes = [router.lane(n, _decoded(line)) for n, line in enumerate(lines, 1) if line.strip()]
    assert lanes[1] == lanes[2] != lanes[4]  # lines 2, 3 and 6: both lanes report

    code, out, err = run_import_file(path, jobs=2)

    assert code == 1
    assert out.strip() == "imported 3, duplicates 0, rejected 3"
    reported = sorted(err.splitlines())
    assert len(reported) == 3
    assert reported[0].startswith("line 2: data.amount.value: expected a decimal string")
    assert reported[1] == "line 3: not valid JSON"
    assert reported[2] == "line 6: envelope: expected a JSON object"
    assert set(WebhookEvent.objects.values_list("event_id", flat=True)) == {e["id"] for e in good}
    assert Trade.objects.get().status == "settled"


def _decoded(line):
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def test_a_broken_gzip_file_in_lanes_is_the_same_clear_error(tmp_path):
    path = tmp_path / "events.ndjson.gz"
    path.write_bytes(gzip.compress(b"\n".join(_network(10, 3)) + b"\n")[:-12])

    with pytest.raises(CommandError, match=r"the gzip stream is broken .*lines before it"):
        run_import_file(path, jobs=2)
    assert WebhookEvent.objects.exists()  # what came before the break is imported


def test_a_lane_that_fails_stops_the_import_and_a_rerun_finishes_it(tmp_path, monkeypatch):
    lines = _network(20, 5)
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    poisoned = orjson.loads(lines[len(lines) // 2])["id"]
    ingest = imports.ingest

    def failing(batch, source):
        if any(envelope.event_id == poisoned for envelope in batch):
            raise RuntimeError("the disk is on fire")
        return ingest(batch, source)

    # Patched before the lanes fork, so the lane that owns the line has it.
    monkeypatch.setattr(imports, "ingest", failing)
    with pytest.raises(CommandError) as failed:
        run_import_file(path, jobs=2, batch_size=10)
    message = str(failed.value)
    assert "of 2 stopped: RuntimeError: the disk is on fire" in message
    assert "run the same command again" in message
    assert not WebhookEvent.objects.filter(event_id=poisoned).exists()

    monkeypatch.setattr(imports, "ingest", ingest)
    code, _, err = run_import_file(path, jobs=2, batch_size=10)
    assert (code, err) == (0, "")
    after_rerun = dataset.snapshot(_url())
    _empty_tables()
    run_import_file(path, batch_size=10)
    clean = dataset.snapshot(_url())
    # A rerun counts what the first run stored as duplicates of it.
    _same_records(clean, after_rerun, skip={"events"})


def test_stdin_is_read_by_one_process(tmp_path, monkeypatch):
    content = ndjson(envelopes.trade("reserved"), envelopes.trade("settled"))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(content))))
    out, err = io.StringIO(), io.StringIO()

    call_command("import_events", "-", jobs=2, stdout=out, stderr=err)

    assert out.getvalue().strip() == "imported 2, duplicates 0, rejected 0"
    assert "--jobs needs a file" in err.getvalue()
    assert Trade.objects.get().status == "settled"


@pytest.mark.django_db(transaction=False)
def test_an_order_stays_in_one_lane_and_each_lane_has_a_fair_share():
    decoded = [orjson.loads(line) for line in _network(60, 2)]
    routers = [Router(3) for _ in range(3)]
    routes = [[r.lane(n, d) for n, d in enumerate(decoded, 1)] for r in routers]
    assert routes[0] == routes[1] == routes[2]

    lane_of_event = {}
    by_pair = {}
    for envelope, lane in zip(decoded, routes[0], strict=True):
        data = envelope["data"]
        lane_of_event.setdefault(envelope["id"], lane)
        if data["object"] == "delivery_attempt":
            if data["eventId"] in lane_of_event:
                assert lane == lane_of_event[data["eventId"]]
        else:
            by_pair.setdefault((data["partnerId"], data["poolId"]), set()).add(lane)
    assert all(len(lanes) == 1 for lanes in by_pair.values())
    counts = [routes[0].count(lane) for lane in range(3)]
    assert min(counts) > len(decoded) / 6  # every lane has a fair share


@pytest.mark.django_db(transaction=False)
def test_the_router_remembers_the_lanes_of_recent_events_only():
    router = Router(2)
    for n in range(EVENT_MEMORY + 1):
        router.lane(n, {"id": f"evt_{n}", "data": {"partnerId": "ptn_a", "poolId": "EUR-USDT"}})
    assert len(router.events) == EVENT_MEMORY // 2 + 1
    assert f"evt_{EVENT_MEMORY}" in router.events
    assert "evt_0" not in router.events


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_progress_bar_reaches_the_end_of_the_file(tmp_path, capsys, jobs):
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(_network(10, 4)) + b"\n")
    size = path.stat().st_size

    code, out, _ = run_import_file(path, jobs=jobs, progress="always")

    assert code == 0
    assert out.startswith("imported ")
    bar = capsys.readouterr().err
    assert "importing" in bar
    assert f"{size}/{size}" in bar


def test_what_still_waits_when_the_lanes_end_is_linked(tmp_path, monkeypatch):
    """A record that reached its lane while what it refers to was being
    written by another waits; the command links it once the lanes end. The
    ledger entry names another pool than its trade, so it goes to the other
    lane; and the lanes' own linking is switched off (patched before they
    fork), so whichever lane commits first, only the command's can link it."""
    monkeypatch.setattr(pipeline, "link_late_arrivals", lambda *args: [])
    entry = envelopes.ledger(transact_id="pt_live_LANES1")
    entry["data"]["poolId"] = "USD-USDC"
    trade = envelopes.trade("reserved", transact_id="pt_live_LANES1", reference="order_lanes")
    router = Router(2)
    assert router.lane(1, entry) != router.lane(2, trade)
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(entry, trade))

    code, _, err = run_import_file(path, jobs=2, batch_size=1)

    assert (code, err) == (0, "")
    order = Order.objects.get(partner_reference="order_lanes")
    assert Identifier.objects.get(kind="ledger").order == order
    assert WebhookEvent.objects.get(event_id=entry["id"]).order == order
    assert not Identifier.objects.filter(order__isnull=True).exists()


def test_the_lanes_report_where_they_are_in_the_file(tmp_path, monkeypatch):
    """The progress bar follows the slowest lane's position in the file."""
    monkeypatch.setattr(imports, "TICK_LINES", 10)  # before the fork: the lanes have it
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(_network(10, 4)) + b"\n")
    size = path.stat().st_size

    class Out:
        positions = []

        def reject(self, number, reason):
            raise AssertionError(reason)

        def stored(self, imported, duplicates):
            pass

        def at(self, position):
            self.positions.append(position)

    run_lanes(str(path), 2, 25, Out())

    positions = Out.positions
    assert positions == sorted(positions)
    assert any(0 < p < size for p in positions)
    assert positions[-1] <= size


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_lanes_stop_when_the_command_is_killed(tmp_path, signum):
    """SIGTERM stops the lanes with the command; after SIGKILL (no word to
    them) they notice their parent is gone and stop too, rather than import
    on alone (they did, to the end of the file, until their reports filled
    the pipe)."""
    lines = _network(200, 8)
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "OPSPANEL_TESTING": "1"}
    command = [sys.executable, "manage.py", "import_events", str(path), "--jobs", "2"]
    command += ["--batch-size", "1", "--progress", "never"]
    parent = subprocess.Popen(
        command, cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        lanes = []
        while len(lanes) < 2 or not WebhookEvent.objects.exists():
            assert time.monotonic() < deadline, "the lanes never started importing"
            assert parent.poll() is None, parent.communicate()
            lanes = psutil.Process(parent.pid).children()
            time.sleep(0.05)

        os.kill(parent.pid, signum)
        parent.communicate(timeout=30)
        _, alive = psutil.wait_procs(lanes, timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.communicate()
    assert alive == []
    assert parent.returncode != 0
    assert WebhookEvent.objects.count() < len({orjson.loads(line)["id"] for line in lines})


def test_lanes_that_read_different_lines_fail_the_import(tmp_path, monkeypatch):
    """As if the file changed under the import: the second lane sees only
    the first half of it. The lines of the second half routed to that lane
    went unread, so the import must not say it is done."""
    lines = _network(20, 6)
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    run_lane = lanes_module._run_lane

    class Shorter(imports.Lines):
        def __iter__(self):
            for number, line in super().__iter__():
                if number > len(lines) // 2:
                    return
                yield number, line

    def second_lane_reads_less(lane, *args):
        if lane == 1:  # in that lane's forked process only
            lanes_module.Lines = Shorter
        return run_lane(lane, *args)

    monkeypatch.setattr(lanes_module, "_run_lane", second_lane_reads_less)
    with pytest.raises(CommandError, match=r"lane 2 of 2 stopped: it read \d+ lines where lane 1"):
        run_import_file(path, jobs=2)
