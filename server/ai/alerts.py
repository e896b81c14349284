"""AI supervisor alerts, through the payments engineer's alert mechanism (billing.alerts): one row
per incident (a dedupe key; a repeat only counts), delivered after commit through the configured
channels (webhook, email). Everything the AI code needs from it is wrapped here, so that a change
of that API is adapted in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.alerts import raise_alert
from billing.models import Alert
from server.config import Settings

KINDS = ("ai_degraded", "ai_recovered", "ai_error_rate", "ai_denial_rate", "ai_token_budget", "ai_supervisor")


def raise_ai_alert(
    session: Session,
    kind: str,
    dedupe_key: str,
    title: str,
    detail: str,
    *,
    severity: str = "warning",
    data: dict[str, Any] | None = None,
) -> str:
    """Record an AI incident in the caller's transaction (once per dedupe key); returns its id."""
    if kind not in KINDS:
        raise ValueError(f"unknown AI alert kind {kind!r}")
    return raise_alert(session, kind, dedupe_key, title, detail, severity=severity, data=data)


def recent_ai_alerts(session: Session, limit: int = 20) -> list[Alert]:
    return list(
        session.scalars(select(Alert).where(Alert.kind.in_(KINDS)).order_by(Alert.last_seen_at.desc()).limit(limit))
    )


def deliver_ai_alerts(session_factory: Callable[[], Session], settings: Settings) -> int:
    """Send undelivered alerts through the configured channels now (also the payment ones: a
    delivery is claimed per alert and channel, so nothing is sent twice)."""
    from server.finance.services import dispatch_alerts, make_channels

    return dispatch_alerts(session_factory, make_channels(settings))
