"""Standard Webhooks verification against every configured secret.

``standardwebhooks`` raises one ``WebhookVerificationError`` for a missing
header, a stale or unreadable timestamp and no matching signature, told
apart only by its message. The headers and the timestamp are checked here
first, so the library's error can only mean that no signature matches. It
also raises ``ValueError`` (or its ``binascii.Error`` and
``UnicodeDecodeError``) for a malformed signature header or a body that is
not UTF-8. Every one of them is a refusal with a reason, never a 500.
"""

import base64
import binascii
import hashlib
import re
import time
from dataclasses import dataclass

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
# The library's tolerance, fixed inside it; the same here so that a
# timestamp refused by the library is refused here first.
TOLERANCE_SECONDS = 5 * 60
# Whole seconds since the epoch; bounded so int() never sees a huge number.
TIMESTAMP_RE = re.compile(r"[0-9]{1,20}")


class SignatureRejected(Exception):
    """The request does not carry a valid signature; the message says why."""


@dataclass(frozen=True)
class Secret:
    position: int
    value: str

    @property
    def label(self):
        """Which secret verified an event: its position and a fingerprint, never itself."""
        digest = hashlib.sha256(self.value.encode()).hexdigest()[:8]
        return f"#{self.position} sha256:{digest}"


def secret_problem(value):
    """Why a configured secret is unusable, or None."""
    if not value.startswith(SECRET_PREFIX):
        return "does not start with whsec_"
    try:
        raw = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        return "is not valid base64 after whsec_"
    if not 24 <= len(raw) <= 64:
        return f"decodes to {len(raw)} bytes; 24 to 64 expected"
    return None


def verify(body, headers, secrets):
    """Return the ``Secret`` that verifies ``body``; raise ``SignatureRejected``."""
    if not secrets:
        raise SignatureRejected("no webhook secret is configured")
    wanted = {
        "webhook-id": headers.get("webhook-id", ""),
        "webhook-timestamp": headers.get("webhook-timestamp", ""),
        "webhook-signature": headers.get("webhook-signature", ""),
    }
    if not all(wanted.values()):
        raise SignatureRejected("missing webhook-id, webhook-timestamp or webhook-signature")
    if not _timestamp_fresh(wanted["webhook-timestamp"]):
        raise SignatureRejected("webhook-timestamp is outside the 5-minute tolerance or unreadable")
    # During a rotation the header carries several signatures; one that is
    # malformed must not void a valid one beside it, so only the well-formed
    # ones reach the library (which gives up on the whole header otherwise).
    signatures = [entry for entry in wanted["webhook-signature"].split() if _well_formed(entry)]
    if not signatures:
        raise SignatureRejected("webhook-signature is malformed")
    wanted["webhook-signature"] = " ".join(signatures)
    for position, value in enumerate(secrets, start=1):
        try:
            Webhook(value).verify(body, wanted, json_parse=False)
        except WebhookVerificationError:
            # Headers and timestamp passed above: this secret signed nothing
            # here. (The library reads the clock again; a timestamp on the
            # edge of the tolerance can expire in between and land here.)
            continue
        except UnicodeDecodeError:
            raise SignatureRejected("body is not UTF-8") from None
        except ValueError:  # binascii.Error included: "garbage", "v1,abc"
            raise SignatureRejected("webhook-signature is malformed") from None
        return Secret(position, value)
    raise SignatureRejected("no signature matches a configured secret")


def _well_formed(entry):
    """``v1,<base64>``: a signature the library can read."""
    version, comma, signature = entry.partition(",")
    if version != "v1" or not comma or not signature:
        return False
    try:
        base64.b64decode(signature, validate=True)
    except binascii.Error:
        return False
    return True


def _timestamp_fresh(value):
    """True when ``webhook-timestamp`` is whole seconds within the tolerance of now."""
    if not TIMESTAMP_RE.fullmatch(value):
        return False
    return abs(int(value) - time.time()) <= TOLERANCE_SECONDS
