import hashlib
import logging
from datetime import timedelta

import orjson
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection, transaction
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from lib.tasks import send_on_commit
from records.models import RejectedDelivery

from . import pipeline, tasks
from .contract import EVENT_RE, ContractError, parse_envelope
from .signatures import SignatureRejected, verify

log = logging.getLogger(__name__)


def _refuse(request, status, reason, body=b""):
    """Answer a refused delivery; keep when, why, size and hash, no payload.

    At most OPOOLS_REJECTED_PER_MINUTE rows a minute per sender: anyone can
    send unsigned requests, and the table must not grow with them.
    """
    webhook_id = request.headers.get("webhook-id", "")
    sender = request.META.get("REMOTE_ADDR") or None
    recent = RejectedDelivery.objects.filter(
        remote_addr=sender, received_at__gte=timezone.now() - timedelta(minutes=1)
    )
    if recent.count() >= settings.OPOOLS_REJECTED_PER_MINUTE:
        log.info("webhook refused: %s %s (not recorded: sender over its cap)", status, reason)
        return JsonResponse({"error": reason}, status=status)
    RejectedDelivery.objects.create(
        status_code=status,
        reason=reason[:200],
        webhook_id=webhook_id if EVENT_RE.fullmatch(webhook_id) else "",
        body_size=len(body),
        body_sha256=hashlib.sha256(body).hexdigest(),
        remote_addr=sender,
    )
    log.info("webhook refused: %s %s", status, reason)
    return JsonResponse({"error": reason}, status=status)


@csrf_exempt  # the signature is the authentication
@login_not_required
@require_POST
def receive_webhook(request):
    """``POST /webhooks/0pools``: verify, store durably, answer, process later."""
    limit = settings.OPOOLS_WEBHOOK_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        # A WSGI server reads a body without Content-Length (chunked) as
        # empty: say so, rather than refuse it as a bad signature.
        return _refuse(request, 411, "Content-Length is required")
    if declared > limit:
        return _refuse(request, 413, f"body over {limit} bytes")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _refuse(request, 413, f"body over {limit} bytes")

    try:
        secret = verify(body, request.headers, settings.OPOOLS_WEBHOOK_SECRETS)
    except SignatureRejected as exc:
        return _refuse(request, 401, str(exc), body)

    try:
        envelope = parse_envelope(orjson.loads(body))
    except orjson.JSONDecodeError:
        return _refuse(request, 400, "body is not valid JSON", body)
    except ContractError as exc:
        return _refuse(request, 400, str(exc), body)
    if envelope.event_id != request.headers["webhook-id"]:
        return _refuse(request, 400, "webhook-id does not match the envelope id", body)

    with transaction.atomic():
        (stored,) = pipeline.store([envelope], "webhook", verified_with=secret.label)
        if not stored.duplicate:
            send_on_commit(tasks.process_event, stored.pk)
    return JsonResponse(
        {"id": stored.event_id, "duplicate": stored.duplicate},
        status=200 if stored.duplicate else 202,
    )


@login_not_required
@never_cache
@require_GET
def healthz(request):
    """200 when the database and the broker answer, 503 otherwise."""
    checks = {"database": "ok", "broker": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure is "down"
        checks["database"] = f"down: {type(exc).__name__}"
    try:
        tasks.ping_broker()
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"down: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "down", **checks}, status=200 if healthy else 503
    )
