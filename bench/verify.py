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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.net import free_port  # noqa: E402
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
    import httpx

    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    return server


def _raw_client(port, concurrency):
    """``run(requests)``: send each prepared HTTP/1.1 request (bytes) on its own
    connection, ``concurrency`` at a time; (seconds, [status]). Plain sockets,
    so the load generator costs little of the CPU it shares with the server
    (gunicorn's sync workers close every connection anyway)."""
    import socket

    def one(request):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(request)
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return int(b"".join(chunks)[9:12])

    def run(requests):
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            codes = list(pool.map(one, requests))
        return time.perf_counter() - started, codes

    return run


def _request(method, path, headers=(), body=b""):
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    if body:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _cpu_seconds(pids):
    """User + system CPU the processes have used so far (Linux /proc), by pid."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def _server_pids(server, url):
    """The gunicorn workers and the PostgreSQL backends serving the bench database."""
    import dj_database_url

    try:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    except OSError:
        children = []
    name = dj_database_url.parse(url)["NAME"]
    try:
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as conn:
            backends = [
                row[0]
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    [name],
                )
            ]
    except psycopg.Error:
        backends = []
    return [int(pid) for pid in children], backends


def _cpu_per_request(server, url, run, requests):
    """(seconds, codes, and the CPU milliseconds one request cost gunicorn's
    workers, PostgreSQL and this client): what a request costs whatever else
    the machine is doing, where requests per second depend on it."""
    import resource

    def client_cpu():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    workers, backends = _server_pids(server, url)
    before = _cpu_seconds(workers + backends)
    client_before = client_cpu()
    took, codes = run(requests)
    client_ms = (client_cpu() - client_before) * 1000 / len(requests)
    workers, backends = _server_pids(server, url)  # the pool may have opened more
    after = _cpu_seconds(workers + backends)

    def spent(pids):
        return sum(after.get(p, 0) - before.get(p, 0) for p in pids) * 1000 / len(requests)

    return took, codes, spent(workers), spent(backends), client_ms


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
    headers = (f"Authorization: Bearer {token}", "Content-Type: application/json")
    verifications = [
        _request(
            "POST", "/internal/keys/verify", headers, orjson.dumps({"key": random.choice(values)})
        )
        for _ in range(total)
    ]
    run = _raw_client(port, concurrency)
    try:
        run(verifications[:200])  # both workers warm
        lines = []
        results = {}
        for label, requests in (
            ("baseline: GET /healthz        ", [_request("GET", "/healthz")] * total),
            ("baseline: GET sign-in page    ", [_request("GET", "/accounts/login/")] * total),
            ("POST /internal/keys/verify    ", verifications),
        ):
            took, codes, web_ms, db_ms, client_ms = _cpu_per_request(server, url, run, requests)
            assert set(codes) == {200}, set(codes)
            results[label] = took
            line = f"{label}{total / took:>8,.0f} req/s"
            if web_ms:
                line += (
                    f"; CPU per request: gunicorn {web_ms:.2f} ms, PostgreSQL {db_ms:.2f} ms,"
                    f" this client {client_ms:.2f} ms: 2 idle cores would serve at most"
                    f" ~{2000 / (web_ms + db_ms + client_ms):,.0f}/s with this client,"
                    f" ~{2000 / (web_ms + db_ms):,.0f}/s without"
                )
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
