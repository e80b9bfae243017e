"""Standard Webhooks signing and the sending of one outbound delivery.

A delivery keeps its event id as ``webhook-id`` on every retry and replay, so
a partner can deduplicate, and gets a fresh ``webhook-timestamp`` each time,
so it passes the receiver's five-minute tolerance. During a rotation every
configured secret signs, and the partner verifies with whichever it holds.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from outbound.guard import ForbiddenTarget

SUCCEEDED = "succeeded"
FAILED = "failed"


def signed_headers(
    event_id: str, body: bytes, secrets: list[str], *, now: datetime | None = None
) -> dict[str, str]:
    """Headers for POSTing ``body`` (UTF-8 JSON) as event ``event_id``."""
    if not secrets:
        raise ValueError("no webhook signing secret configured")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    # Webhook.sign() stamps the datetime as UTC without converting it.
    now = now.astimezone(UTC)
    payload = body.decode("utf-8")
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(
            Webhook(secret).sign(event_id, now, payload) for secret in secrets
        ),
        "content-type": "application/json",
    }


@dataclass(frozen=True)
class Delivery:
    """What one POST to a partner endpoint came to.

    ``error`` is short and safe to store and show: it never carries the
    response body (only its declared length), the URL or a secret.
    """

    outcome: str
    status_code: int | None
    duration_ms: int
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.outcome == SUCCEEDED


def deliver(
    client: httpx.Client, url: str, event_id: str, body: bytes, secrets: list[str]
) -> Delivery:
    """POST ``body`` to ``url`` once, signed, through ``client`` (from
    ``guarded_client``). Only a 2xx succeeds; a redirect is not followed and
    fails like any other status. Network trouble and a refused target come
    back as a failed ``Delivery``, never as an exception."""
    headers = signed_headers(event_id, body, secrets)
    started = time.monotonic()

    def failed(error, status_code=None):
        return Delivery(FAILED, status_code, _elapsed_ms(started), error[:200])

    try:
        # Streamed and never read: the partner's body is not ours to keep, and
        # a slow one cannot hold the worker.
        with client.stream("POST", url, content=body, headers=headers) as response:
            status_code = response.status_code
            length = response.headers.get("content-length")
    except ForbiddenTarget as exc:
        return failed(f"refused: {exc}")
    except httpx.InvalidURL as exc:
        return failed(f"refused: partner endpoint URL is invalid: {exc}")
    except httpx.TimeoutException as exc:
        return failed(f"timeout: {type(exc).__name__} {exc}".strip())
    except httpx.HTTPError as exc:
        return failed(f"connection error: {type(exc).__name__} {exc}".strip())

    if 200 <= status_code < 300:
        return Delivery(SUCCEEDED, status_code, _elapsed_ms(started))
    if 300 <= status_code < 400:
        return failed(f"redirect {status_code} not followed", status_code)
    sized = f" ({length} bytes)" if length and length.isdigit() else ""
    return failed(f"HTTP {status_code}{sized}", status_code)


def _elapsed_ms(started):
    return round((time.monotonic() - started) * 1000)
