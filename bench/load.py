"""A lean HTTP/1.1 load generator for the benches that serve over loopback.

The server under test and the client share this machine's two cores, so
what the client spends per request is taken from the server: httpx spent
1.8-2.6 ms of CPU a request here, a third of the machine at S1's rate, and
the req/s it measured were the client's as much as the panel's. This one
keeps a connection per client thread, sends requests built beforehand as
bytes and reads back only the status line, the headers it needs and the
body's length: tens of microseconds a request, like ``wrk`` (C), which
cannot send a fixed list of distinct signed POSTs (S4: each event once).

Responses must carry ``Content-Length`` (Django's CommonMiddleware sets it
on every page and answer the panel sends) or be chunked; a server closing
the connection (``Connection: close``) is reconnected to.
"""

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


def request(method, path, host, headers=(), body=b""):
    """The bytes of one HTTP/1.1 request (keep-alive)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Response:
    status: int
    headers: dict = field(default_factory=dict)  # lower-cased names
    body: bytes = b""


class Connection:
    """One kept-alive connection to ``host:port``."""

    def __init__(self, host, port, timeout=30):
        self.address = (host, port)
        self.timeout = timeout
        self.sock = None
        self.buffer = b""

    def _connect(self):
        self.sock = socket.create_connection(self.address, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _read(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def _take(self, n):
        while len(self.buffer) < n:
            self._read()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _line(self):
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._read()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    def send(self, raw):
        """Send one request's bytes and return its ``Response``."""
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(raw)
            return self._response()
        except (ConnectionError, OSError):
            # A kept connection the server closed meanwhile: once more, afresh.
            self.close()
            self._connect()
            self.sock.sendall(raw)
            return self._response()

    def _response(self):
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._read()
        head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        status_line, *header_lines = head.split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int(self._line().split(b";")[0], 16):
                body += self._take(size)
                self._take(2)
            self._take(2)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            raise ValueError(f"a {status} with neither Content-Length nor chunks")
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, body)


def run(host, port, requests, concurrency, check=None):
    """Send every request of ``requests`` (bytes) once, over ``concurrency``
    kept connections, each from a thread of its own; return (seconds,
    [Response in the order of ``requests``], [seconds per request]).
    ``check(response)`` runs on each answer (an assertion, say)."""
    answers = [None] * len(requests)
    times = [0.0] * len(requests)
    position = iter(range(len(requests)))
    lock = threading.Lock()
    errors = []

    def client():
        connection = Connection(host, port)
        try:
            while True:
                with lock:
                    i = next(position, None)
                if i is None:
                    return
                started = time.perf_counter()
                answer = connection.send(requests[i])
                times[i] = time.perf_counter() - started
                if check is not None:
                    check(answer)
                answers[i] = answer
        except Exception as exc:  # noqa: BLE001 - reported once the others finish
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    if errors:
        raise errors[0]
    return took, answers, times


# --- what a request costs, whatever else the machine does ------------------------


def cpu_seconds(pids):
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


def server_pids(server, url):
    """The gunicorn workers of ``server`` (a Popen) and the PostgreSQL
    backends connected to ``url``'s database."""
    import dj_database_url
    import psycopg

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


@dataclass
class Measured:
    seconds: float
    answers: list
    times: list
    # CPU milliseconds one request cost: gunicorn's workers, PostgreSQL's
    # backends, this client. Requests per second depend on what else the
    # machine runs; these do much less.
    gunicorn_ms: float
    postgres_ms: float
    client_ms: float

    @property
    def rate(self):
        return len(self.answers) / self.seconds

    @property
    def statuses(self):
        """The response statuses seen, each once, in order."""
        return sorted({answer.status for answer in self.answers})

    def cpu(self):
        """The CPU milliseconds a request cost, by where they were spent."""
        return {
            "gunicorn": self.gunicorn_ms,
            "postgres": self.postgres_ms,
            "client": self.client_ms,
        }

    def cpu_text(self):
        server = self.gunicorn_ms + self.postgres_ms
        return (
            f"CPU a request: gunicorn {self.gunicorn_ms:.2f} ms, PostgreSQL"
            f" {self.postgres_ms:.2f} ms, client {self.client_ms:.2f} ms"
            f" (2 idle cores: ~{2000 / server:,.0f}/s without the client)"
        )


def measure(server, url, port, requests, concurrency, check=None):
    """``run`` the requests against gunicorn ``server`` on ``port``, with
    the CPU each request cost its workers, PostgreSQL (the backends of
    ``url``'s database) and this process."""
    import resource

    def client_cpu():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    workers, backends = server_pids(server, url)
    before = cpu_seconds(workers + backends)
    client_before = client_cpu()
    took, answers, times = run("127.0.0.1", port, requests, concurrency, check)
    client_ms = (client_cpu() - client_before) * 1000 / len(requests)
    workers, backends = server_pids(server, url)  # the pool may have opened more
    after = cpu_seconds(workers + backends)

    def spent(pids):
        return sum(after.get(p, 0) - before.get(p, 0) for p in pids) * 1000 / len(requests)

    return Measured(took, answers, times, spent(workers), spent(backends), client_ms)
