"""Refused webhook requests: the one writer of ``RejectedDelivery``.

A refusal keeps when, why, the body's size and hash and the sender's
address, never the body.
"""

import hashlib
import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from records.models import RejectedDelivery

from .contract import EVENT_RE

log = logging.getLogger(__name__)


def record_refusal(*, status, reason, body, webhook_id, sender):
    """Keep one refused request, unless its sender is over the cap.

    At most OPOOLS_REJECTED_PER_MINUTE rows a minute per sender: anyone can
    send unsigned requests, and the table must not grow with them.
    """
    recent = RejectedDelivery.objects.filter(
        remote_addr=sender, received_at__gte=timezone.now() - timedelta(minutes=1)
    )
    if recent.count() >= settings.OPOOLS_REJECTED_PER_MINUTE:
        log.info("webhook refused: %s %s (not recorded: sender over its cap)", status, reason)
        return
    RejectedDelivery.objects.create(
        status_code=status,
        reason=reason[:200],
        # Only a well-formed event id is kept: the header is the sender's text.
        webhook_id=webhook_id if EVENT_RE.fullmatch(webhook_id) else "",
        body_size=len(body),
        body_sha256=hashlib.sha256(body).hexdigest(),
        remote_addr=sender,
    )
    log.info("webhook refused: %s %s", status, reason)
