import io
import os
import time
from urllib.parse import urlsplit

import httpx
import orjson
from django.conf import settings
from django.core.management import call_command


def ndjson(*envelopes):
    return b"".join(orjson.dumps(e) + b"\n" for e in envelopes)


def run_import(tmp_path, content, name="events.ndjson"):
    """Run ``manage.py import_events`` on ``content``; return (exit code, stdout, stderr)."""
    path = tmp_path / name
    path.write_bytes(content)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        call_command("import_events", str(path), stdout=out, stderr=err)
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def import_events(tmp_path, *envelopes):
    code, out, err = run_import(tmp_path, ndjson(*envelopes))
    assert code == 0, err
    return out


def import_network(sandbox_file, orders, seed):
    """Import the simulated network ``sandbox_file`` (the conftest fixture) made."""
    call_command("import_events", str(sandbox_file(orders, seed)), stdout=io.StringIO())


def subprocess_database_url():
    """The test database as a URL, for subprocesses (socket hosts included)."""
    name = settings.DATABASES["default"]["NAME"]
    return urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{name}").geturl()


def wait_for(condition, timeout=20):
    """Poll ``condition`` until true (a worker or server in another thread is at work)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def received(upstream, partner="ptn_acme"):
    """What the sandbox partner receiver got (the ``upstream`` fixture's), oldest first."""
    return httpx.get(f"{upstream.url}/_sandbox/received", params={"partner": partner}).json()
