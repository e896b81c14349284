"""Conversions reported by advertisers (`/postback`): validation, attribution to a click, and
the idempotent record that feeds the autopilot's learning counters.

Choices (docs/api.md "Postback"):

* Idempotency key: (click, txid); a missing txid is the empty string, so a click converts at
  most once without one. A repeat returns the first conversion with `duplicate: true`; the
  unique constraint settles concurrent repeats (the loser reads the winner's row).
* A click older than `ATTRIBUTION_WINDOW_DAYS` is refused with 422 (`outside-attribution-window`):
  the request is well formed and the click exists, it just no longer earns a conversion.
* Learning counters (`arm_stats`): a conversion counts only when its click did (a human click
  routed by the allocation, not a bot or fallback click) and its status is not `rejected`. It is
  added to the **click's** hour bucket, so each bucket holds the conversions of its own traffic
  (conversions <= clicks per bucket, whatever the delay). `conversions` counts converting clicks
  (a click's second conversion adds revenue, not a conversion: the bandits model a conversion
  per click); `revenue` adds the amount when it is in the offer's currency (amounts in another
  currency stay out of the counters until the ledger converts them)."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.clicks.currencies import ISO_4217
from server.clicks.writer import hour_of
from server.errors import Problem
from server.links.models import MONEY, Click, Conversion, Offer

STATUSES = ("approved", "pending", "rejected")
MAX_AMOUNT = Decimal("99999999999999.9999")  # Numeric(18, 4)
_AMOUNT = re.compile(r"^\d+(?:\.\d+)?$")
_ARM_CONVERSION = text(
    """
    INSERT INTO arm_stats (link_id, offer_id, hour, clicks, bot_clicks, conversions, revenue)
    VALUES (:link_id, :offer_id, :hour, 0, 0, :conversions, :revenue)
    ON CONFLICT (link_id, offer_id, hour) DO UPDATE
       SET conversions = arm_stats.conversions + excluded.conversions,
           revenue = arm_stats.revenue + excluded.revenue
    """
).bindparams(bindparam("revenue", type_=MONEY))


@dataclass(frozen=True)
class Postback:
    click_id: str
    txid: str
    payout: Decimal | None
    status: str
    currency: str | None


def parse_amount(raw: str) -> tuple[Decimal | None, str | None]:
    """(amount, None) or (None, why it is refused)."""
    value = raw.strip()
    if value.startswith("-") and _AMOUNT.match(value[1:]):
        return None, "must not be negative"
    if not _AMOUNT.match(value):
        return None, "must be a decimal number such as 12.50"
    if "." in value and len(value.split(".", 1)[1]) > 4:
        return None, "has more than 4 decimal places"
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return None, "must be a decimal number such as 12.50"
    if amount > MAX_AMOUNT:
        return None, f"must not exceed {MAX_AMOUNT}"
    return amount, None


def parse_postback(values: Mapping[str, str]) -> Postback:
    """Validate the postback parameters; a 400 problem names every bad field."""
    errors: dict[str, list[str]] = {}
    click_id = (values.get("click_id") or "").strip()
    cid = (values.get("cid") or "").strip()
    if click_id and cid and click_id != cid:
        errors["cid"] = ["differs from click_id; send one of them"]
    click_id = click_id or cid
    if not click_id:
        errors["click_id"] = ["required (click_id or cid)"]
    elif len(click_id) > 64:
        errors["click_id"] = ["is longer than 64 characters"]
    txid = (values.get("txid") or "").strip()
    if len(txid) > 128:
        errors["txid"] = ["is longer than 128 characters"]
    payout: Decimal | None = None
    raw_payout = values.get("payout")
    if raw_payout is not None and raw_payout.strip() != "":
        payout, why = parse_amount(raw_payout)
        if why:
            errors["payout"] = [why]
    status = (values.get("status") or "approved").strip().lower()
    if status not in STATUSES:
        errors["status"] = [f"must be one of {', '.join(STATUSES)}"]
    currency = (values.get("currency") or "").strip().upper() or None
    if currency is not None and currency not in ISO_4217:
        errors["currency"] = ["is not an ISO 4217 currency code"]
    if errors:
        raise Problem(400, "Validation failed", "the postback has invalid parameters", errors=errors)
    return Postback(click_id=click_id, txid=txid, payout=payout, status=status, currency=currency)


def check_secret(expected: str | None, given: str | None) -> None:
    """When POSTBACK_SECRET is set, the postback must carry it as `secret`."""
    if expected is None:
        return
    if not given or not hmac.compare_digest(expected.encode(), given.encode()):
        raise Problem(403, "Forbidden", "the postback secret is missing or wrong")


@dataclass(frozen=True)
class Recorded:
    conversion: Conversion
    duplicate: bool

    def as_dict(self) -> dict[str, Any]:
        c = self.conversion
        return {
            "conversion_id": c.id,
            "click_id": c.click_id,
            "txid": c.txid,
            "link_id": c.link_id,
            "offer_id": c.offer_id,
            "amount": f"{Decimal(c.amount):.4f}",
            "currency": c.currency,
            "status": c.status,
            "created_at": c.created_at.isoformat(),
            "duplicate": self.duplicate,
        }


def _existing(session: Session, click_id: str, txid: str) -> Conversion | None:
    return session.scalar(select(Conversion).where(Conversion.click_id == click_id, Conversion.txid == txid))


def record_conversion(
    session: Session,
    postback: Postback,
    *,
    now: datetime,
    attribution_window: timedelta,
    flush_pending_clicks: Callable[[], object] | None = None,
) -> Recorded:
    """Record the conversion (or return the one already recorded for this click and txid).
    Writes nothing unless every check passes; the caller commits."""
    click = session.get(Click, postback.click_id)
    if click is None and flush_pending_clicks is not None:
        # The click may still wait in this process's buffer. End this transaction first: on
        # SQLite it holds the write lock the writer needs.
        # flush() waits for a flush already under way, so the click is written once it returns.
        session.rollback()
        flush_pending_clicks()
        click = session.get(Click, postback.click_id)
    if click is None:
        raise Problem(404, "Unknown click", f"no click with id {postback.click_id}", type_="unknown-click")
    existing = _existing(session, click.id, postback.txid)
    if existing is not None:
        return Recorded(existing, duplicate=True)
    if click.offer_id is None:
        raise Problem(422, "Click not routed", "this click was not sent to any offer", type_="click-not-routed")
    if now - click.created_at > attribution_window:
        raise Problem(
            422,
            "Outside attribution window",
            f"the click is older than the {attribution_window.days}-day attribution window",
            type_="outside-attribution-window",
        )
    offer = session.get(Offer, click.offer_id)
    currency = postback.currency or (offer.currency if offer is not None else None)
    amount = postback.payout if postback.payout is not None else (offer.payout if offer is not None else None)
    if currency is None or amount is None:
        raise Problem(
            400,
            "Validation failed",
            "the click's offer no longer exists: send payout and currency",
            errors={"payout": ["required"], "currency": ["required"]},
        )
    conversion = Conversion(
        click_id=click.id,
        txid=postback.txid,
        link_id=click.link_id,
        offer_id=click.offer_id,
        amount=amount,
        currency=currency,
        status=postback.status,
        created_at=now,
    )
    savepoint = session.begin_nested()
    try:
        session.add(conversion)
        session.flush()
    except IntegrityError:
        savepoint.rollback()  # a concurrent repeat won the race: answer with its row
        winner = _existing(session, click.id, postback.txid)
        if winner is None:
            raise
        return Recorded(winner, duplicate=True)
    savepoint.commit()
    if not click.is_bot and not click.is_fallback and postback.status != "rejected":
        converted_before = session.scalar(
            select(func.count())
            .select_from(Conversion)
            .where(Conversion.click_id == click.id, Conversion.id != conversion.id, Conversion.status != "rejected")
        )
        in_offer_currency = offer is not None and currency == offer.currency
        session.execute(
            _ARM_CONVERSION,
            {
                "link_id": click.link_id,
                "offer_id": click.offer_id,
                "hour": hour_of(click.created_at.timestamp()),
                "conversions": 0 if converted_before else 1,
                "revenue": amount if in_offer_currency else Decimal(0),
            },
        )
    return Recorded(conversion, duplicate=False)
