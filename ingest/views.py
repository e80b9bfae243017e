import orjson
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import pipeline, tasks
from .contract import ContractError, parse_envelope
from .refusals import record_refusal
from .signatures import SignatureRejected, verify


def _refuse(request, status, reason, body=b""):
    """Record the refusal (``refusals``) and answer it with its reason."""
    record_refusal(
        status=status,
        reason=reason,
        body=body,
        webhook_id=request.headers.get("webhook-id", ""),
        sender=request.META.get("REMOTE_ADDR") or None,
    )
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
    if request.content_type != "application/json":
        return _refuse(request, 415, "Content-Type must be application/json")
    # A sender that declares more than it sends must not hold a worker until
    # the server's own timeout: bound each read of the socket (gunicorn hands
    # the view its socket; behind another server, bound it there).
    connection_socket = request.META.get("gunicorn.socket")
    if connection_socket is not None:
        connection_socket.settimeout(settings.OPOOLS_WEBHOOK_READ_SECONDS)
    try:
        body = request.read(limit + 1)
    except OSError:  # TimeoutError included: the body stopped coming
        return _refuse(request, 408, "the body stopped before its Content-Length")
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

    # One statement, in autocommit: it is committed (synchronous_commit: on
    # disk) when it returns, without a BEGIN and a COMMIT round trip of its
    # own, so a 2xx always means stored. The event then waits up to
    # OPOOLS_WEBHOOK_LINGER_SECONDS for others stored by this process, to go
    # to the worker in one task (ingest.tasks.apply_batches).
    (stored,) = pipeline.store([envelope], "webhook", verified_with=secret.label)
    if not stored.duplicate:
        tasks.apply_batches.add_on_commit(stored.pk)
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
