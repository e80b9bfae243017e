"""Faults the control API queues for the status API: a 4xx or 5xx, a slow
answer, or a dropped connection (``POST /_sandbox/faults``)."""

from dataclasses import dataclass

from sandbox.refusals import bad_request

MAX_DELAY = 120.0  # seconds


@dataclass
class Fault:
    match: str = "*"
    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    drop: bool = False
    times: int = 1

    @classmethod
    def parse(cls, raw):
        if not isinstance(raw, dict):
            raise bad_request("a fault is a JSON object")
        unknown = set(raw) - {"match", "status", "retry_after", "delay", "drop", "times"}
        if unknown:
            raise bad_request(f"unknown fault fields {sorted(unknown)}")
        match = raw.get("match", "*")
        status = raw.get("status")
        retry_after = raw.get("retry_after")
        delay = raw.get("delay", 0)
        drop = raw.get("drop", False)
        times = raw.get("times", 1)
        if not isinstance(match, str) or not match:
            raise bad_request('match is a transactId or "*"')
        if status is not None and (type(status) is not int or not 400 <= status <= 599):
            raise bad_request("status must be a 4xx or 5xx")
        if retry_after is not None:
            if status is None:
                raise bad_request("retry_after goes with a status")
            if isinstance(retry_after, bool) or not isinstance(retry_after, int | float | str):
                raise bad_request("retry_after is seconds or an HTTP date")
            if isinstance(retry_after, float) and retry_after.is_integer():
                retry_after = int(retry_after)
            retry_after = str(retry_after)
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise bad_request("delay is a number of seconds")
        if not 0 <= delay <= MAX_DELAY:
            raise bad_request(f"delay must be between 0 and {MAX_DELAY:g} seconds")
        if not isinstance(drop, bool):
            raise bad_request("drop is true or false")
        if drop and status is not None:
            raise bad_request("a dropped connection has no status")
        if not (drop or status is not None or delay):
            raise bad_request("a fault needs a status, a delay or drop")
        if type(times) is not int or times < 1:
            raise bad_request("times is a count of 1 or more")
        return cls(match, status, retry_after, float(delay), drop, times)

    @property
    def kind(self):
        if self.drop:
            return "drop"
        return "status" if self.status is not None else "delay"

    def as_json(self):
        return {
            "match": self.match,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "drop": self.drop,
            "times": self.times,
        }
