"""Users and API tokens: creation, password checks, token resolution, administration."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.auth.models import PORTAL_ROLES, ROLES, ApiToken, User
from server.db import utcnow
from server.governance.gateway import Action, Actor, Gateway, Outcome, Target

log = logging.getLogger(__name__)

TOKEN_PREFIX = "slk_"  # noqa: S105 - a public prefix that makes leaked tokens greppable
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 12
_hasher = PasswordHasher()
# A hash to verify against when the email is unknown, so timing does not reveal which emails exist.
_DUMMY_HASH = _hasher.hash("not-a-real-password-" + secrets.token_hex(8))


class AuthError(ValueError):
    """Bad credentials or an invalid request to the auth services (message is user-facing)."""


@dataclass(frozen=True)
class Subject:
    """Who is calling: a logged-in user, an API token, or nobody."""

    id: str
    kind: str
    roles: tuple[str, ...]
    name: str = ""

    def as_input(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind, "roles": list(self.roles)}


ANONYMOUS = Subject(id="anonymous", kind="anonymous", roles=())


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}; roles are: {', '.join(ROLES)}")


def create_user(
    session: Session,
    email: str,
    password: str,
    role: str,
    *,
    affiliate_id: str | None = None,
    advertiser_id: str | None = None,
) -> User:
    """Create a user. A portal user (role affiliate / advertiser) names the one entity it acts
    for; a staff user names none."""
    email = email.strip().lower()
    if not EMAIL_RE.match(email):
        raise AuthError(f"{email!r} is not an email address")
    _check_role(role)
    _check_entity(session, role, affiliate_id, advertiser_id)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise AuthError(f"a user with email {email} already exists")
    user = User(
        email=email,
        password_hash=_hasher.hash(password),
        role=role,
        active=True,
        affiliate_id=affiliate_id,
        advertiser_id=advertiser_id,
    )
    session.add(user)
    session.flush()
    return user


def _check_entity(session: Session, role: str, affiliate_id: str | None, advertiser_id: str | None) -> None:
    from server.links.models import Advertiser, Affiliate

    if role not in PORTAL_ROLES:
        if affiliate_id or advertiser_id:
            raise AuthError(f"a {role} user belongs to no affiliate or advertiser")
        return
    own, other = (affiliate_id, advertiser_id) if role == "affiliate" else (advertiser_id, affiliate_id)
    if not own or other:
        raise AuthError(f"a {role} user belongs to exactly one {role}: give its id")
    model = Affiliate if role == "affiliate" else Advertiser
    if session.get(model, own) is None:
        raise AuthError(f"no {role} {own}")


def authenticate(session: Session, email: str, password: str) -> User:
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError) as exc:
        raise AuthError("unknown email or wrong password") from exc
    if user is None or not user.active:
        raise AuthError("unknown email or wrong password")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = utcnow()
    return user


def user_subject(user: User) -> Subject:
    return Subject(id=f"user:{user.id}", kind="user", roles=(user.role,), name=user.email)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, name: str, role: str, created_by: int | None = None) -> tuple[ApiToken, str]:
    """Create an API token; the plain token is returned once and only its SHA-256 is stored."""
    name = name.strip()
    if not name or len(name) > 120:
        raise AuthError("a token needs a name of 1 to 120 characters")
    _check_role(role)
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, role=role, prefix=plain[:12], token_hash=hash_token(plain), created_by=created_by)
    session.add(token)
    session.flush()
    return token, plain


def revoke_token(session: Session, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise AuthError(f"no token with id {token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return token


class TokenCache:
    """Resolves bearer tokens to subjects, caching hits briefly so the hot path skips the
    database; a revocation takes effect within `ttl` seconds."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[Subject | None, float]] = {}
        self._lock = threading.Lock()

    def resolve(self, session_factory: Callable[[], Session], plain: str) -> Subject | None:
        digest = hash_token(plain)
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        subject = self._load(session_factory, digest)
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[digest] = (subject, now + self.ttl)
        return subject

    @staticmethod
    def _load(session_factory: Callable[[], Session], digest: str) -> Subject | None:
        session = session_factory()
        try:
            token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
            if token is None or token.revoked_at is not None:
                return None
            token.last_used_at = utcnow()
            session.commit()
            return Subject(id=f"token:{token.id}", kind="token", roles=(token.role,), name=token.name)
        finally:
            session.close()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# -- administration ---------------------------------------------------------------------------------
STAFF_ROLES = tuple(r for r in ROLES if r not in PORTAL_ROLES and r != "service")


class AdminRefused(AuthError):
    """An administration change that breaks a rule of the data (HTTP 409)."""


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.role, User.email)))


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise AuthError(f"no user {user_id}")
    return user


def _other_active_admins(session: Session, user_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == "admin", User.active.is_(True), User.id != user_id)
        )
        or 0
    )


def update_user(
    session: Session,
    gateway: Gateway,
    actor: Actor,
    user_id: int,
    *,
    active: bool | None = None,
    role: str | None = None,
) -> tuple[User, Outcome | None]:
    """Activate or deactivate a user, or change a staff user's role: the governed `user.update`
    action (policy `smartlinks.configuration`: admins only, nobody changes themselves, the last
    active admin stays), applied in the transaction that records the decision. A deactivated
    user's session ends at its next request (every request reloads the user). Raises AuthError
    for an unknown user, AdminRefused for a change between a staff role and a portal role (a
    portal user belongs to an affiliate or advertiser: invite instead; services use tokens).
    The outcome is None when nothing would change."""
    user = _user(session, user_id)
    if role is not None and role != user.role:
        _check_role(role)
        if role not in STAFF_ROLES or user.role not in STAFF_ROLES:
            raise AdminRefused(
                "only staff roles change here ("
                + ", ".join(STAFF_ROLES)
                + "); portal users belong to an affiliate or advertiser, services use API tokens"
            )
    new_active = user.active if active is None else active
    new_role = user.role if role is None else role
    if (new_active, new_role) == (user.active, user.role):
        return user, None

    def apply(db: Session, _params: dict[str, object]) -> None:
        user.active, user.role = new_active, new_role
        db.flush()
        log.info("user %s (%s) updated by %s: active=%s role=%s", user.id, user.email, actor.id, new_active, new_role)

    outcome = gateway.decide(
        session,
        Action(
            type="user.update",
            actor=actor,
            target=Target(kind="user", id=f"user:{user.id}"),
            params={"active": new_active, "role": new_role},
        ),
        state={"active": user.active, "role": user.role, "other_active_admins": _other_active_admins(session, user.id)},
        caller=actor,
        execute=apply,
    )
    return user, outcome
