"""A partner's webhook endpoint, for the panel's redeliveries:
``POST /partners/{ptn_id}/webhooks``.

The signature check is ingest's own (``ingest.signatures``): the sandbox
plays the partner, and a partner checks what the panel signs the way the
panel checks what 0Pools signs.
"""

import threading
from contextlib import suppress

import orjson

from ingest.signatures import SignatureRejected, secret_problem, verify
from sandbox.refusals import bad_request


class Receiver:
    """Registered partner endpoints and every delivery they got."""

    def __init__(self):
        self.lock = threading.Lock()
        self.partners: dict[str, dict] = {}  # ptn id -> {"secrets", "respond", "verified"}
        self.received: list[dict] = []  # deliveries, oldest first

    def reset(self):
        with self.lock:
            self.partners.clear()
            self.received.clear()

    def add_partner(self, partner_id, body):
        if not isinstance(body, dict):
            raise bad_request("send a JSON object")
        unknown = set(body) - {"secrets", "respond"}
        if unknown:
            raise bad_request(f"unknown fields {sorted(unknown)}")
        secrets = body.get("secrets")
        if not isinstance(secrets, list) or not secrets:
            raise bad_request("secrets is a list of whsec_ secrets")
        for position, secret in enumerate(secrets, start=1):
            problem = (
                secret_problem(secret) if isinstance(secret, str) else "does not start with whsec_"
            )
            if problem:
                raise bad_request(f"secret #{position} {problem}")
        codes = _respond_codes(body.get("respond", 200))
        with self.lock:
            self.partners[partner_id] = {"secrets": secrets, "respond": codes, "verified": 0}
        return {"partner": partner_id, "secrets": len(secrets), "respond": codes}

    def receive(self, partner_id, body, headers, received_at):
        """Verify and record one delivery; return the record (``answered`` is the status)."""
        with self.lock:
            partner = self.partners.get(partner_id)
        record = {
            "partner": partner_id,
            "webhook_id": headers.get("webhook-id") or None,
            "timestamp": headers.get("webhook-timestamp") or None,
            "verified": False,
            "reason": None,
            "secret_position": None,
            "event": None,
            "received_at": received_at,
            "answered": None,
        }
        with suppress(orjson.JSONDecodeError):
            record["event"] = orjson.loads(body)
        if partner is None:
            record["reason"], record["answered"] = "unknown partner", 404
        else:
            try:
                secret = verify(body, headers, partner["secrets"])
            except SignatureRejected as rejected:
                record["reason"], record["answered"] = str(rejected), 400
            else:
                record["verified"] = True
                record["secret_position"] = secret.position
                if record["event"] is None:
                    record["reason"], record["answered"] = "body is not JSON", 400
        with self.lock:
            if record["answered"] is None:
                codes = partner["respond"]
                record["answered"] = codes[min(partner["verified"], len(codes) - 1)]
                partner["verified"] += 1
            self.received.append(record)
        return dict(record)

    def received_by(self, partner_id=None):
        with self.lock:
            return [r for r in self.received if partner_id in (None, r["partner"])]

    def clear_received(self):
        with self.lock:
            self.received.clear()


def _respond_codes(respond):
    codes = respond if isinstance(respond, list) else [respond]
    if not codes:
        raise bad_request("respond needs at least one status")
    for code in codes:
        if type(code) is not int or not 200 <= code <= 599:
            raise bad_request("respond is an HTTP status (200-599) or a list of them")
        if 300 <= code <= 399:
            raise bad_request("the receiver never answers a 3xx")
    return codes
