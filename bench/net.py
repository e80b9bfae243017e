"""Loopback helpers the benches share."""

import socket
import time


def free_port():
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_served(url, tries, answers=None):
    """Ask ``url`` every 0.1 s, at most ``tries`` times, until a server
    answers it (with one of the status codes ``answers``, when given): a
    gunicorn just started. The caller's first real request says whether it
    came up."""
    import httpx

    for _ in range(tries):
        try:
            status = httpx.get(url, timeout=1).status_code
        except httpx.TransportError:
            status = None
        if status is not None and (answers is None or status in answers):
            return
        time.sleep(0.1)
