"""The 0Pools status API: ``GET {OPOOLS_API_URL}/v1/trades/{id}``.

Timeouts are set; a 429 is retried after its ``Retry-After``; a 5xx, a
timeout or a dropped connection is retried with exponential backoff and
jitter; all within a bounded number of tries and seconds. The answer is
handed back raw: the caller puts it through the ingest pipeline, whose
allowlist drops everything the contract does not name.
"""

import functools
import logging
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
from django.conf import settings
from django.utils import timezone

log = logging.getLogger(__name__)

MAX_TRIES = 4
MAX_WAIT = 10.0  # seconds: the longest single Retry-After we honour


@dataclass(frozen=True)
class Answer:
    outcome: str  # found, not_found, unavailable
    trade: dict | None
    tries: int
    detail: str


class UpstreamNotConfigured(Exception):
    pass


@functools.cache
def _client():
    """One client per process: it keeps connections to 0Pools open, and building
    its TLS context (loading the CA bundle) costs more than a status read."""
    return httpx.Client(follow_redirects=False, trust_env=False)


def _retry_after(response):
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - timezone.now()).total_seconds()
        except (TypeError, ValueError):
            seconds = 1.0
    return min(max(seconds, 0.0), MAX_WAIT)


def _backoff(attempt):
    return min(0.25 * 2**attempt, 4.0) * (0.5 + random.random())  # noqa: S311 - jitter


def fetch_trade(transact_id, *, sleep=time.sleep):
    """Ask 0Pools for a trade. Never raises for what the network does; see ``Answer``."""
    if not settings.OPOOLS_API_URL:
        raise UpstreamNotConfigured("OPOOLS_API_URL is not set")
    url = f"{settings.OPOOLS_API_URL.rstrip('/')}/v1/trades/{transact_id}"
    headers = {"Authorization": f"Bearer {settings.OPOOLS_API_KEY}", "Accept": "application/json"}
    last = "no answer"
    timeout = httpx.Timeout(
        settings.OPOOLS_API_TIMEOUT, connect=min(3.0, settings.OPOOLS_API_TIMEOUT)
    )
    client = _client()
    for attempt in range(1, MAX_TRIES + 1):
        wait = None
        try:
            response = client.get(url, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            last = "timed out"
        except httpx.TransportError as exc:
            last = f"connection failed ({type(exc).__name__})"
        else:
            status = response.status_code
            if status == 200:
                try:
                    return Answer("found", response.json(), attempt, "200")
                except ValueError:
                    last = "200 with a body that is not JSON"
            elif status == 404:
                return Answer("not_found", None, attempt, "404: 0Pools does not know this trade")
            elif status == 429:
                wait = _retry_after(response)
                last = f"429, retry after {wait:.1f}s"
            elif status >= 500:
                last = f"{status} from 0Pools"
            else:
                return Answer("unavailable", None, attempt, f"{status} from 0Pools")
        log.info("status read of %s, try %d: %s", transact_id, attempt, last)
        if attempt < MAX_TRIES:
            sleep(wait if wait is not None else _backoff(attempt))
    return Answer("unavailable", None, MAX_TRIES, f"gave up after {MAX_TRIES} tries: {last}")
