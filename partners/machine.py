"""``POST /internal/keys/verify``: the 0Pools network asks whether a key is good.

Authenticated as a machine: a bearer token from ``OPSPANEL_VERIFY_TOKENS``,
compared in constant time, never a user session (a signed-in admin's cookie
counts for nothing here). A key that is malformed, fails its checksum, is
unknown, revoked or expired gets the same 401, so the answer never tells
which.
"""

import hmac
import logging

import orjson
from csp.decorators import csp_exempt
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import apikeys

MAX_BODY = 1024

log = logging.getLogger(__name__)


def _json(payload, status=200, **headers):
    return HttpResponse(
        orjson.dumps(payload), status=status, content_type="application/json", headers=headers
    )


def _machine(request):
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    presented = token.strip().encode()
    # Every configured token is compared, whichever matches: no early exit.
    matched = False
    for expected in settings.OPSPANEL_VERIFY_TOKENS:
        matched |= hmac.compare_digest(presented, expected.encode())
    return matched


def _refused(code, message):
    return _json(
        {"error": {"code": code, "message": message}},
        status=401,
        **{"WWW-Authenticate": 'Bearer realm="0pools-keys"'},
    )


@csrf_exempt  # the bearer token is the authentication, never a cookie
@csp_exempt()  # JSON for a machine: no page to protect
@login_not_required
@never_cache
@require_POST
def verify_key(request):
    if not _machine(request):
        # Someone without the network's token is knocking: said, never the token.
        log.warning(
            "key verification refused: no valid machine token (from %s)",
            request.META.get("REMOTE_ADDR", "?"),
        )
        return _refused("unauthorized", "A valid machine bearer token is required.")
    length = request.headers.get("Content-Length") or "0"
    if not length.isdigit() or int(length) > MAX_BODY:
        return _json({"error": {"code": "too_large", "message": "Send at most 1 KiB."}}, 413)
    try:
        key = orjson.loads(request.body)["key"]
    except (orjson.JSONDecodeError, TypeError, KeyError, IndexError):
        return _json(
            {"error": {"code": "bad_request", "message": 'Send {"key": "sk_…"} as JSON.'}}, 400
        )
    answer = apikeys.verify_key(key)
    if answer is None:
        return _refused("key_refused", "This key is not valid.")
    return _json(answer)
