"""An answer other than success, raised from anywhere below the WSGI app."""


class Refusal(Exception):
    """Status, error code, optional message and headers; the body is the contract's error shape."""

    def __init__(self, status, code, message=None, headers=None):
        super().__init__(message or code)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self):
        error = {"code": self.code}
        if self.message:
            error["message"] = self.message
        return {"error": error}


def bad_request(message):
    return Refusal(400, "bad_request", message)
