"""API keys: creation, hashing, verification and the client address.

A key reads ``dna_<id>_<secret>``. The store keeps the id and the SHA-256 of
the whole key, never the key; the id names the key in pages and URLs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from pathlib import Path

import attrs

from .http import HTTPError, Request
from .store import ApiKeyRecord, Store

__all__ = ["AUTH_HEADER", "KeyManager", "NewKey", "client_address"]

#: Header that carries the API key.
AUTH_HEADER = "App-Key-DNA"


def client_address(request: Request, trusted_proxies: int = 0) -> str:
    """Return the client's IP address.

    With ``trusted_proxies=0`` this is the connection's peer address. With
    ``N`` trusted proxies in front of the app, it is the address that the
    outermost trusted proxy saw, read from ``X-Forwarded-For``: the Nth
    entry from the right, since entries left of it are client-supplied.
    """
    if trusted_proxies > 0:
        forwarded = [part.strip() for part in (request.header("x-forwarded-for") or "").split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= trusted_proxies:
            candidate = forwarded[-trusted_proxies]
            try:
                return str(ipaddress.ip_address(candidate))
            except ValueError:
                pass
    return request.remote_addr


@attrs.frozen
class NewKey:
    """A key just created: ``key`` is shown once and then only its record is kept."""

    key: str
    record: ApiKeyRecord


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyManager:
    """Creates, verifies and revokes the API keys of one store.

    :param store: the engine's store.
    :param lifetime: seconds a new key stays valid.
    :param secret_path: file holding the secret that signs CSRF tokens.
    """

    def __init__(self, store: Store, lifetime: float = 3600.0, secret_path: Path | None = None) -> None:
        if lifetime <= 0:
            raise ValueError(f"key lifetime must be positive, not {lifetime!r}")
        self.store = store
        self.lifetime = lifetime
        self._secret = self._load_secret(secret_path or store.path.with_suffix(".secret"))

    @staticmethod
    def _load_secret(path: Path) -> bytes:
        try:
            return bytes.fromhex(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            secret = secrets.token_bytes(32)
            path.touch(mode=0o600)
            path.write_text(secret.hex())
            return secret

    def create(self, ip: str) -> NewKey:
        """Create a key bound to ``ip`` that expires after :attr:`lifetime`."""
        address = str(ipaddress.ip_address(ip))
        key_id = secrets.token_hex(6)
        key = f"dna_{key_id}_{secrets.token_urlsafe(32)}"
        record = self.store.add_key(key_id, _hash(key), address, time.time() + self.lifetime)
        return NewKey(key, record)

    def verify(self, key: str | None, ip: str) -> ApiKeyRecord:
        """Return the record of ``key`` if it is active and bound to ``ip``.

        :raises HTTPError: 403 with the reason, which never repeats the key.
        """
        if not key:
            raise HTTPError(403, f"Missing API key: send it in the {AUTH_HEADER} header.")
        parts = key.split("_", 2)
        record = self.store.get_key(parts[1]) if len(parts) == 3 and parts[0] == "dna" else None
        if record is None or not hmac.compare_digest(record.key_hash, _hash(key)):
            raise HTTPError(403, f"Invalid API key in the {AUTH_HEADER} header.")
        if record.revoked_at is not None:
            raise HTTPError(403, f"API key {record.key_id} was revoked: create a new one.")
        if record.expires_at <= time.time():
            raise HTTPError(403, f"API key {record.key_id} expired: create a new one.")
        if record.ip != ip:
            raise HTTPError(
                403,
                f"API key {record.key_id} is bound to {record.ip}, but this request comes from {ip}:"
                " create a key from this address.",
            )
        return record

    def csrf_token(self, ip: str) -> str:
        """Return the form token for ``ip``: an HMAC no other site can compute."""
        return hmac.new(self._secret, f"csrf:{ip}".encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, token: str | None, ip: str) -> None:
        """Raise 403 unless ``token`` is the form token for ``ip``."""
        # Bytes, because compare_digest raises TypeError on non-ASCII str.
        expected = self.csrf_token(ip).encode()
        if not token or not hmac.compare_digest(token.encode("utf-8", "replace"), expected):
            raise HTTPError(403, "Missing or invalid form token: reload the form and submit it again.")
