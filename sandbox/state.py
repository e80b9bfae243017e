"""Everything a running sandbox knows, in memory; nothing is persisted."""

import threading
from hmac import compare_digest

from sandbox.faults import Fault
from sandbox.receiver import Receiver
from sandbox.refusals import Refusal, bad_request
from sandbox.truth import copied, moved


class SandboxState:
    """The status API's truth, its queued faults and the requests it saw, and
    the partner endpoints (``receiver``); the app and tests go through its methods."""

    def __init__(self, trades, *, api_key):
        self.lock = threading.Lock()
        self.api_key = api_key
        self._initial = copied(trades)
        self.trades = trades  # transactId -> trade object (the upstream truth)
        self.faults: list[Fault] = []
        self.requests: list[dict] = []  # status-API requests seen
        self.receiver = Receiver()

    def reset(self):
        with self.lock:
            self.trades = copied(self._initial)
            self.faults.clear()
            self.requests.clear()
        self.receiver.reset()

    # the status API's truth

    def authorized(self, header):
        scheme, _, key = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return False
        return compare_digest(key.strip().encode(), self.api_key.encode())

    def trade(self, transact_id):
        with self.lock:
            trade = self.trades.get(transact_id)
            return None if trade is None else copied(trade)

    def set_trade(self, transact_id, body):
        """Set or move a trade's truth from a control-API body; return the trade."""
        if not isinstance(body, dict):
            raise bad_request("send a JSON object")
        with self.lock:
            if body.get("object") == "trade":
                trade = copied(body)
                if trade.setdefault("transactId", transact_id) != transact_id:
                    raise bad_request("transactId differs from the one in the path")
            elif transact_id in self.trades:
                trade = moved(self.trades[transact_id], body)
            else:
                raise Refusal(404, "not_found", "unknown trade: send a whole trade object")
            self.trades[transact_id] = trade
            return copied(trade)

    def summary(self):
        with self.lock:
            return [
                {
                    "transactId": transact_id,
                    "partnerId": trade.get("partnerId"),
                    "partnerReference": trade.get("partnerReference"),
                    "status": trade.get("status"),
                }
                for transact_id, trade in self.trades.items()
            ]

    # faults

    def add_faults(self, raw):
        faults = [Fault.parse(item) for item in (raw if isinstance(raw, list) else [raw])]
        with self.lock:
            self.faults.extend(faults)
        return self.pending_faults()

    def clear_faults(self):
        with self.lock:
            self.faults.clear()

    def pending_faults(self):
        with self.lock:
            return [fault.as_json() for fault in self.faults]

    def take_fault(self, transact_id):
        """The first queued fault for this id, one of its ``times`` used up; or None."""
        with self.lock:
            for fault in self.faults:
                if fault.match in ("*", transact_id):
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # status-API requests seen

    def record_request(self, **entry):
        with self.lock:
            self.requests.append(entry)

    def requests_seen(self):
        with self.lock:
            return list(self.requests)

    def clear_requests(self):
        with self.lock:
            self.requests.clear()
