"""Payout destinations encrypted at rest (Fernet) and masked for display.

The key comes from PAYOUT_ENCRYPTION_KEY (or _FILE); without one, destinations cannot be stored
or read, and the pages say so instead of showing anything."""

from __future__ import annotations

import re

from cryptography.fernet import Fernet, InvalidToken

_DESTINATIONS = re.compile(r"acct_[A-Za-z0-9]+|[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


class VaultError(RuntimeError):
    """No key, or a token this key did not make."""


class Vault:
    def __init__(self, key: str | None) -> None:
        self._fernet: Fernet | None = None
        if key:
            try:
                self._fernet = Fernet(key.encode())
            except (ValueError, TypeError) as exc:
                raise VaultError("PAYOUT_ENCRYPTION_KEY is not a Fernet key (32 url-safe base64 bytes)") from exc

    @property
    def ready(self) -> bool:
        return self._fernet is not None

    def encrypt(self, plain: str) -> str:
        if self._fernet is None:
            raise VaultError("set PAYOUT_ENCRYPTION_KEY to store payout destinations")
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        if self._fernet is None:
            raise VaultError("set PAYOUT_ENCRYPTION_KEY to read payout destinations")
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise VaultError("a payout destination was encrypted with another key") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode()


def mask(destination: str) -> str:
    """'acct_…4xYz' for a Stripe account, 'j…@example.com' for an email: enough to recognise."""
    if "@" in destination:
        local, _, domain = destination.partition("@")
        return f"{local[:1]}…@{domain}"
    if len(destination) <= 6:
        return "…" + destination[-2:]
    prefix = destination.split("_", 1)[0] + "_" if "_" in destination[:6] else ""
    return f"{prefix}…{destination[-4:]}"


def redact(text: str) -> str:
    """`text` with every Stripe account id and email address in it masked (provider error
    messages quote the destination; they end up in payouts.last_error, pages and logs)."""
    return _DESTINATIONS.sub(lambda m: mask(m.group(0)), text)
