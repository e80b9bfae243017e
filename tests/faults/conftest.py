"""Fixtures of the fault suite (``make test-faults``; see docs/faults.md).

Session: one PostgreSQL and one Redis of the suite's own (free ports, a
temporary folder), and a migrated template database. Each test: a fresh
database copied from the template, a fresh Redis database, and the panel's
processes on them, all stopped by finalizers whatever happens.
"""

import itertools
import os
import shutil
import subprocess
import sys

import pytest

from tests.faults import harness

_numbers = itertools.count(1)
RESULTS = {}


def pytest_collection_modifyitems(config, items):
    _, _, reason = harness.postgres_bin()
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if reason is None and not os.path.exists(redis_server):
        reason = "no redis-server (apt-get install redis-server)"
    if reason is None:
        return
    if os.environ.get("CI"):
        return  # in CI the suite must run: let the fixtures fail loudly
    skip = pytest.mark.skip(reason=f"fault suite needs its own servers: {reason}")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def workdir():
    folder = harness.mkdtemp()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(workdir):
    server = harness.Postgres(workdir)
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis(workdir):
    logs = workdir / "redis-logs"
    logs.mkdir()
    server = harness.Redis(workdir, logs)
    yield server
    server.close()


@pytest.fixture(scope="session")
def template(pg):
    """A migrated database that each test's database is copied from."""
    name = "faults_template"
    with pg.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    env.update(DATABASE_URL=pg.url(name), SECRET_KEY="fault-suite-only", LOG_LEVEL="WARNING")
    env.pop("OPSPANEL_TESTING", None)
    result = subprocess.run(  # noqa: S603
        [str(harness.BIN / "python"), "manage.py", "migrate", "--noinput"],
        cwd=harness.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return name


@pytest.fixture(scope="session", autouse=True)
def _summary():
    yield
    if RESULTS:
        harness.write_summary(RESULTS)


@pytest.fixture
def record():
    """``record(name, figures)``: keep a test's figures for the summary."""

    def keep(name, result):
        RESULTS[name] = result
        harness.write_figures(name, result)

    return keep


@pytest.fixture
def database(pg, template):
    name = f"faults_{next(_numbers)}"
    with pg.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


@pytest.fixture
def make_panel(request, pg, redis, database, workdir):
    """``make_panel(**extra_env)``: the panel's processes on this test's database."""
    started = []

    def make(**extra_env):
        with pg.connect() as conn:  # an earlier test may have left Redis down
            conn.execute("SELECT 1")
        if not harness.answers(redis.port):
            redis.start()
        import redis as redis_client

        redis_client.Redis(port=redis.port).flushall()
        logs = workdir / request.node.name
        logs.mkdir(exist_ok=True)
        panel = harness.Panel(pg, redis, database, logs, extra_env=extra_env)
        started.append(panel)
        return panel

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for panel in started:
        if failed:
            for name, tail in panel.logs().items():
                print(f"\n--- {name} (last lines) ---\n{tail}", file=sys.stderr)
        panel.close()
    if not pg.running():
        pg.start()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def network_envelopes():
    """``network_envelopes(count, seed)``: the first ``count`` envelopes of a
    sandbox network, in delivery order."""
    from sandbox.network import generate

    def make(count, seed):
        envelopes = []
        for envelope in generate(max(count // 4, 50), seed):
            envelopes.append(envelope)
            if len(envelopes) == count:
                break
        return envelopes

    return make
