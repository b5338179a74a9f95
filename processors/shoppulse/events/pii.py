"""PII handling at ingestion: user ids become keyed hashes (HMAC-SHA256); e-mails and IPs are dropped."""

from __future__ import annotations

import hashlib
import hmac

MIN_KEY_BYTES = 16
DEMO_KEY = b"shoppulse-demo-key-not-secret!!"  # only in demo mode, never for real traffic
HASH_HEX_CHARS = 32


class MissingPiiKeyError(RuntimeError):
    """No PII hashing key was configured outside demo mode."""


class PiiHasher:
    """Keyed hashing: the same user gets the same pseudonym, which cannot be reversed or
    recomputed without the key (a plain hash of an e-mail or id can be brute-forced)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise MissingPiiKeyError(f"the PII hashing key must be at least {MIN_KEY_BYTES} bytes long")
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)  # copied per value: keying it is half the cost

    @classmethod
    def from_settings(cls, key: str | None, demo: bool) -> PiiHasher:
        if key:
            return cls(key.encode())
        if demo:
            return cls(DEMO_KEY)
        raise MissingPiiKeyError(
            "SHOPPULSE_PII_KEY is not set: ingestion refuses to start without a key to hash user ids "
            "(set it to a random secret of 16+ bytes, or SHOPPULSE_DEMO=1 for a local demo)")

    def pseudonym(self, value: str) -> str:
        mac = self._keyed.copy()
        mac.update(value.encode())
        return mac.hexdigest()[:HASH_HEX_CHARS]
