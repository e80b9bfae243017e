"""The 0Pools status API: ``GET {OPOOLS_API_URL}/v1/trades/{id}``.

Timeouts are set; a 429 is retried after its ``Retry-After``; a 5xx, a
timeout or a dropped connection is retried with exponential backoff and
jitter (stamina); all within a bounded number of tries and seconds. The
answer is handed back raw: the caller puts it through the ingest pipeline,
whose allowlist drops everything the contract does not name.
"""

import functools
import logging
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
import stamina
from django.conf import settings
from django.utils import timezone

log = logging.getLogger(__name__)

MAX_TRIES = 4
MAX_WAIT = 10.0  # seconds: the longest single Retry-After we honour
GIVE_UP_AFTER = 45.0  # seconds for all tries and waits together


@dataclass(frozen=True)
class Answer:
    outcome: str  # found, not_found, unavailable
    trade: dict | None
    tries: int
    detail: str


class UpstreamNotConfigured(Exception):
    pass


class _TryAgain(Exception):
    """One try that may succeed if repeated; the message is safe to log and store."""

    def __init__(self, detail, wait=None):
        super().__init__(detail)
        self.wait = wait  # seconds the answer asked for (Retry-After), or None


@functools.cache
def _client():
    """One client per process: it keeps connections to 0Pools open, and building
    its TLS context (loading the CA bundle) costs more than a status read."""
    return httpx.Client(follow_redirects=False, trust_env=False)


def retry_after(response):
    """Seconds a 429 asks us to wait (``Retry-After``: seconds or an HTTP date), capped."""
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - timezone.now()).total_seconds()
        except (TypeError, ValueError):
            seconds = 1.0
    return min(max(seconds, 0.0), MAX_WAIT)


def _backoff(exc):
    """stamina's backoff hook: retry only ``_TryAgain``; a 429 waits as it asked."""
    if not isinstance(exc, _TryAgain):
        return False
    return exc.wait if exc.wait is not None else True


def _read(url, headers, timeout):
    """One try: the ``Answer`` it settles, or ``_TryAgain``."""
    try:
        response = _client().get(url, headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        raise _TryAgain("timed out") from None
    except httpx.TransportError as exc:
        raise _TryAgain(f"connection failed ({type(exc).__name__})") from None
    status = response.status_code
    if status == 200:
        try:
            return Answer("found", response.json(), 0, "200")
        except ValueError:
            raise _TryAgain("200 with a body that is not JSON") from None
    if status == 404:
        return Answer("not_found", None, 0, "404: 0Pools does not know this trade")
    if status == 429:
        wait = retry_after(response)
        raise _TryAgain(f"429, retry after {wait:.1f}s", wait=wait)
    if status >= 500:
        raise _TryAgain(f"{status} from 0Pools")
    return Answer("unavailable", None, 0, f"{status} from 0Pools")


def fetch_trade(transact_id):
    """Ask 0Pools for a trade. Never raises for what the network does; see ``Answer``."""
    if not settings.OPOOLS_API_URL:
        raise UpstreamNotConfigured("OPOOLS_API_URL is not set")
    url = f"{settings.OPOOLS_API_URL.rstrip('/')}/v1/trades/{transact_id}"
    headers = {"Authorization": f"Bearer {settings.OPOOLS_API_KEY}", "Accept": "application/json"}
    timeout = httpx.Timeout(
        settings.OPOOLS_API_TIMEOUT, connect=min(3.0, settings.OPOOLS_API_TIMEOUT)
    )
    tries, last = 0, "no answer"
    try:
        for attempt in stamina.retry_context(
            on=_backoff,
            attempts=MAX_TRIES,
            timeout=GIVE_UP_AFTER,
            wait_initial=0.5,
            wait_max=4.0,
            wait_jitter=0.5,
        ):
            with attempt:
                tries = attempt.num
                try:
                    answer = _read(url, headers, timeout)
                except _TryAgain as exc:
                    last = str(exc)
                    log.info("status read of %s, try %d: %s", transact_id, tries, last)
                    raise
                return Answer(answer.outcome, answer.trade, tries, answer.detail)
    except _TryAgain:
        pass
    return Answer("unavailable", None, tries, f"gave up after {tries} tries: {last}")
