"""`verify` (issue 12's key verification): POST /internal/keys/verify over
loopback HTTP to gunicorn with 2 workers, against GET /healthz (one query and
a broker ping) and GET of the sign-in page on the same server, with the CPU
one request cost gunicorn, PostgreSQL and the client (from /proc).

Moved here from bench/run.py (main's, issue 12) when bench/ became a package
(issue 14). It makes partners and keys, so it runs in a scratch database (a
copy of the migrated schema), in a child process: the bench's own process is
on the reused data set, which must keep nothing a run does.
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import load  # noqa: E402
from bench.net import free_port, wait_until_served  # noqa: E402
from bench.report import Row  # noqa: E402


def _gunicorn(url, port, **env):
    server = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "opspanel.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": url,
            "SECRET_KEY": "bench",
            "ALLOWED_HOSTS": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            **env,
        },
    )
    wait_until_served(f"http://127.0.0.1:{port}/healthz", 100)
    return server


def bench_verify(url, total, concurrency):
    import random

    import orjson

    from partners import apikeys, services

    token = secrets.token_urlsafe(32)
    partners = [
        services.create_partner(f"ptn_bench_{n}", "", "live", verified=True, actor_name="bench")
        for n in range(5)
    ]
    for partner in partners:
        services.set_entitlement(partner, "EUR-USDT", "buy", max_per_quote="5000", reason="bench")
        services.set_entitlement(partner, "EUR-USDT", "sell", reason="bench")
    values = [apikeys.issue_key(p, actor_name="bench").value for p in partners for _ in range(10)]
    port = free_port()
    server = _gunicorn(url, port, OPSPANEL_VERIFY_TOKENS=token)
    headers = [("Authorization", f"Bearer {token}"), ("Content-Type", "application/json")]
    host = "127.0.0.1"
    verifications = [
        load.request(
            "POST",
            "/internal/keys/verify",
            host,
            headers,
            orjson.dumps({"key": random.choice(values)}),
        )
        for _ in range(total)
    ]
    try:
        load.run(host, port, verifications[:200], concurrency)  # both workers warm
        lines = []
        results = {}
        for label, requests in (
            ("baseline: GET /healthz        ", [load.request("GET", "/healthz", host)] * total),
            (
                "baseline: GET sign-in page    ",
                [load.request("GET", "/accounts/login/", host)] * total,
            ),
            ("POST /internal/keys/verify    ", verifications),
        ):
            measured = load.measure(server, url, port, requests, concurrency)
            assert measured.statuses == [200], measured.statuses
            results[label] = measured.seconds
            line = f"{label}{measured.rate:>8,.0f} req/s"
            if measured.gunicorn_ms:
                line += "; " + measured.cpu_text()
            lines.append(line)
        return {"lines": lines, "seconds": list(results.values()), "total": total}
    finally:
        server.terminate()
        server.wait(10)


def run(report, base_url, total, concurrency):
    """Measure in a scratch database, in a child process; add the rows to ``report``."""
    from bench import dataset

    name = f"{dataset.schema_template_name(base_url).rsplit('_bench_', 1)[0]}_bench_verify"
    url = dataset.empty_database(base_url, name)
    try:
        env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "opspanel.settings"}
        done = subprocess.run(
            [sys.executable, __file__, str(total), str(concurrency)],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
    finally:
        dataset.drop_database(base_url, name)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    health, sign_in, took = result["seconds"]
    n = result["total"]
    report.add(
        Row(
            "verify",
            f"POST /internal/keys/verify, gunicorn 2 workers, {concurrency} clients",
            f"{n / took:,.0f} req/s",
            f"GET /healthz {n / health:,.0f} req/s; sign-in page {n / sign_in:,.0f} req/s",
            f"{health / took:.2f}x /healthz, {sign_in / took:.2f}x sign-in",
            values={
                "rate": n / took,
                "healthz": n / health,
                "signin": n / sign_in,
                "lines": result["lines"],
            },
        )  # fmt: skip
    )
    report.notes.extend("verify: " + line.strip() for line in result["lines"])


if __name__ == "__main__":
    import django

    django.setup()
    print(json.dumps(bench_verify(os.environ["DATABASE_URL"], int(sys.argv[1]), int(sys.argv[2]))))
