"""Standard Webhooks verification against every configured secret.

``standardwebhooks`` raises ``WebhookVerificationError`` for a missing
header, a stale timestamp or no matching signature, and plain ``ValueError``
subclasses (``binascii.Error``, ``UnicodeDecodeError``) for a malformed
signature header or a body that is not UTF-8. Every one of them is a
refusal with a reason here, never a 500.
"""

import base64
import binascii
import hashlib
from dataclasses import dataclass

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


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
    reason = "no signature matches a configured secret"
    for position, value in enumerate(secrets, start=1):
        try:
            Webhook(value).verify(body, wanted, json_parse=False)
        except WebhookVerificationError as exc:
            message = str(exc)
            if "timestamp" in message.lower() or "Invalid Signature Headers" in message:
                raise SignatureRejected(
                    "webhook-timestamp is outside the 5-minute tolerance or unreadable"
                ) from None
            continue
        except UnicodeDecodeError:
            raise SignatureRejected("body is not UTF-8") from None
        except ValueError:  # binascii.Error included: "garbage", "v1,%%%"
            raise SignatureRejected("webhook-signature is malformed") from None
        return Secret(position, value)
    raise SignatureRejected(reason)
