"""The format of partner API keys: what a secret scanner can match without us.

``sk_live_`` / ``sk_test_`` + 32 base62 characters from the CSPRNG (about
190 bits) + 6 base62 characters of CRC32 over everything before them, as
GitHub's tokens do. The checksum refuses a typo or a truncated paste before
any lookup; it is not a secret and proves nothing about the key being ours.

Only a SHA-256 of the whole key is stored. A slow password hash (bcrypt,
argon2) protects low-entropy passwords against guessing; a 190-bit random
key cannot be guessed, so one fast hash is as strong here and lets a
verification cost one indexed lookup.
"""

import hashlib
import re
import secrets
import string
import zlib

ALPHABET = string.digits + string.ascii_letters  # base62
BODY_LENGTH = 32
CHECKSUM_LENGTH = 6
PREFIXES = {"test": "sk_test_", "live": "sk_live_"}
PATTERN = re.compile(
    rf"^sk_(test|live)_([0-9A-Za-z]{{{BODY_LENGTH}}})([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})$"
)


def _base62(number, width):
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode()), CHECKSUM_LENGTH)


def generate(mode: str) -> str:
    head = PREFIXES[mode] + "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return head + checksum(head)


def parse(key: str) -> str | None:
    """The key's environment (``test``/``live``) if it is well formed and its
    checksum holds, else None."""
    if not isinstance(key, str):
        return None
    match = PATTERN.match(key)
    if not match or checksum(key[:-CHECKSUM_LENGTH]) != match.group(3):
        return None
    return match.group(1)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
