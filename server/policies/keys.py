"""The bundle signing key pair and OPA's bearer token for the bundle server.

Production takes them from files (`OPA_SIGNING_KEY_FILE`, `OPA_VERIFICATION_KEY_FILE`,
`OPA_BUNDLE_TOKEN[_FILE]`) and refuses to run the bundle server without them. Development and
tests generate them on first use under `var/` (`var/keys/` mode 700, private key and token mode
600); they are never committed (`var/` is ignored)."""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from server.config import ConfigError, Settings

PRIVATE_NAME = "bundle-signing.pem"
PUBLIC_NAME = "bundle-verification.pem"
TOKEN_NAME = "opa-bundle-token"  # noqa: S105 - a file name, not a secret
KEY_ID = "smartlinks"  # the key's name in the sidecars' `keys` configuration


@dataclass(frozen=True)
class SigningKeys:
    private: Path
    public: Path

    def public_pem(self) -> str:
        return self.public.read_text(encoding="utf-8")


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` (mode 600) atomically; a concurrent writer that got there first wins."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            os.link(tmp, path)  # fails if another process created it meanwhile
        except FileExistsError:
            pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def generate_key_pair(private: Path, public: Path) -> None:
    """A 2048-bit RSA key pair in PEM files (private mode 600)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(
        private,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    # The public key is derived from the private key that won any race.
    loaded = serialization.load_pem_private_key(private.read_bytes(), password=None)
    public_bytes = loaded.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tmp = public.with_name(f".{public.name}.{os.getpid()}")
    tmp.write_bytes(public_bytes)
    os.replace(tmp, public)


def signing_keys(settings: Settings) -> SigningKeys:
    """The configured key pair, or (outside production) one generated under var/keys/."""
    if settings.opa_signing_key_file and settings.opa_verification_key_file:
        keys = SigningKeys(Path(settings.opa_signing_key_file), Path(settings.opa_verification_key_file))
        for name, path in (("OPA_SIGNING_KEY_FILE", keys.private), ("OPA_VERIFICATION_KEY_FILE", keys.public)):
            if not path.is_file():
                raise ConfigError(f"{name}={path} is not a readable file")
        return keys
    if settings.environment == "production":
        raise ConfigError(
            "production signs policy bundles with a key you provide: set OPA_SIGNING_KEY_FILE and "
            "OPA_VERIFICATION_KEY_FILE (openssl genrsa -out signing.pem 2048; "
            "openssl rsa -in signing.pem -pubout -out verification.pem)"
        )
    folder = Path(settings.var_dir) / "keys"
    keys = SigningKeys(folder / PRIVATE_NAME, folder / PUBLIC_NAME)
    if not keys.private.is_file() or not keys.public.is_file():
        generate_key_pair(keys.private, keys.public)
    return keys


def bundle_token(settings: Settings, *, create: bool = True) -> str | None:
    """OPA's bearer token for /opa/*: OPA_BUNDLE_TOKEN, or (outside production) the one kept in
    var/opa-bundle-token, generated when absent and `create`. None in production when unset:
    the bundle endpoints then refuse every request."""
    if settings.opa_bundle_token:
        return settings.opa_bundle_token
    if settings.environment == "production":
        return None
    path = Path(settings.var_dir) / TOKEN_NAME
    if not path.is_file():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, secrets.token_urlsafe(32).encode())
    return path.read_text(encoding="utf-8").strip() or None
