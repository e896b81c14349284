"""Marshmallow schemas of the smart-link API and forms, the field rules they enforce (URL
templates, currencies, money) and the functions that turn domain rows into JSON bodies.

Load schemas reject unknown fields. Update schemas (`...UpdateSchema`) are loaded with
`partial=True` and leave out what may not change after creation (an offer's advertiser, a link's
slug and owner) and what only a governed action may change (the status of links and offers)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from algorithms import registry
from server.links.models import (
    Advertiser,
    Affiliate,
    Allocation,
    Campaign,
    CampaignCost,
    Offer,
    SmartLink,
    TrafficSource,
)

# --- field rules ----------------------------------------------------------------------------
URL_MACROS = ("click_id", "link", "offer", "sub1", "sub2", "sub3", "sub4", "sub5", "country", "device")
# ISO 4217 codes the platform books money in (a deliberate subset: every one needs FX rates).
CURRENCIES = ("AUD", "BRL", "CAD", "CHF", "CZK", "DKK", "EUR", "GBP", "INR", "JPY", "MXN", "NOK", "PLN", "SEK", "USD")
DEVICES = ("desktop", "mobile", "tablet")
COST_MODELS = ("cpc", "cpm", "cpa", "fixed")
MAX_ARMS = 50
WEIGHT_TOLERANCE = 1e-6
MONEY_MAX = Decimal("99999999999999.9999")  # Numeric(18, 4)
MONEY_STEP = Decimal("0.0001")
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")
_MACRO_RE = re.compile(r"\{([^{}]*)\}")


def url_template_errors(template: str) -> list[str]:
    """What is wrong with an offer URL template (empty when it is usable)."""
    errors: list[str] = []
    if any(ch.isspace() or ord(ch) < 32 for ch in template):
        errors.append("must not contain spaces or control characters (percent-encode them)")
    opened: int | None = None
    for position, char in enumerate(template, start=1):
        if char == "{":
            if opened is not None:
                errors.append(f"unbalanced braces: '{{' at character {position} inside the macro opened at {opened}")
                break
            opened = position
        elif char == "}":
            if opened is None:
                errors.append(f"unbalanced braces: '}}' at character {position} closes nothing")
                break
            opened = None
    else:
        if opened is not None:
            errors.append(f"unbalanced braces: the '{{' at character {opened} is never closed")
    if errors:
        return errors
    unknown = sorted({name for name in _MACRO_RE.findall(template) if name not in URL_MACROS})
    if unknown:
        allowed = " ".join("{" + m + "}" for m in URL_MACROS)
        errors.append(f"unknown macro {', '.join('{' + u + '}' for u in unknown)}; allowed: {allowed}")
    parts = urlsplit(template)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        errors.append("must be an absolute http:// or https:// URL")
    elif "{" in parts.netloc:
        # A host taken from a click's parameters would make every smart link an open redirect.
        errors.append("macros may not appear in the host; put them in the path or the query")
    return errors


def check_url_template(template: str) -> None:
    errors = url_template_errors(template)
    if errors:
        raise ValidationError(errors)


def check_money(value: Decimal) -> None:
    if value < 0:
        raise ValidationError("must not be negative")
    if value > MONEY_MAX:
        raise ValidationError(f"must be at most {MONEY_MAX}")
    try:
        exact = value == value.quantize(MONEY_STEP)
    except InvalidOperation:
        exact = False
    if not exact:
        raise ValidationError("must have at most 4 decimal places")


def check_rate(value: Decimal) -> None:
    if not Decimal(0) <= value <= Decimal(1):
        raise ValidationError("must be between 0 and 1 (the affiliate's share of the revenue)")
    if value != value.quantize(MONEY_STEP):
        raise ValidationError("must have at most 4 decimal places")


def check_slug(value: str) -> None:
    if not SLUG_RE.match(value):
        raise ValidationError(
            "use 1 to 64 lower-case letters, digits, '-' or '_', starting and ending with a letter or digit"
        )


def allocation_algorithms() -> list[str]:
    """Registry names that allocate traffic between a link's arms (not budget algorithms)."""
    return [name for name in registry.names() if registry.get(name).kind == "allocation"]


def algorithm_params(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The algorithm's validated parameters with defaults filled in; a ValidationError naming each
    bad parameter (under `algorithm_params`) or the unknown algorithm (under `algorithm`)."""
    if name not in allocation_algorithms():
        raise ValidationError(
            f"unknown algorithm {name!r}; allocation algorithms: {', '.join(allocation_algorithms())}", "algorithm"
        )
    try:
        return dict(registry.validate_params(name, params or {}))
    except registry.InvalidParameters as exc:
        raise ValidationError({"algorithm_params": {k: [v] for k, v in exc.errors.items()}}) from exc


class UpperString(fields.String):
    """A string stored upper-case (currency and country codes)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        return str(super()._deserialize(value, attr, data, **kwargs)).strip().upper()


class LowerString(fields.String):
    """A string stored lower-case (slugs)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        return str(super()._deserialize(value, attr, data, **kwargs)).strip().lower()


def _money(**kwargs: Any) -> fields.Decimal:
    return fields.Decimal(allow_nan=False, validate=check_money, **kwargs)


def _name(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.And(validate.Length(min=1, max=200), _not_blank), **kwargs)


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("must not be blank")


def _currency(**kwargs: Any) -> UpperString:
    return UpperString(
        validate=validate.OneOf(CURRENCIES, error="unknown currency {input}; use one of {choices}"), **kwargs
    )


# --- advertisers and affiliates -------------------------------------------------------------
class AdvertiserSchema(Schema):
    name = _name(required=True)
    email = fields.Email(load_default=None, allow_none=True, validate=validate.Length(max=254))


class AdvertiserUpdateSchema(AdvertiserSchema):
    status = fields.String(validate=validate.OneOf(["active", "paused"]))


class AffiliateSchema(Schema):
    name = _name(required=True)
    email = fields.Email(load_default=None, allow_none=True, validate=validate.Length(max=254))


class AffiliateUpdateSchema(AffiliateSchema):
    status = fields.String(validate=validate.OneOf(["active", "suspended"]))


# --- offers ---------------------------------------------------------------------------------
class OfferUpdateSchema(Schema):
    name = _name()
    url_template = fields.String(validate=validate.And(validate.Length(min=1, max=2048), check_url_template))
    payout = _money()
    currency = _currency()
    daily_cap = fields.Integer(allow_none=True, strict=True, validate=validate.Range(min=1, max=10_000_000))
    countries = fields.List(
        UpperString(validate=validate.Regexp(r"^[A-Z]{2}$", error="not an ISO 3166 alpha-2 country code")),
        validate=validate.Length(max=250),
    )
    devices = fields.List(fields.String(validate=validate.OneOf(DEVICES)), validate=validate.Length(max=3))

    @validates_schema
    def _no_duplicates(self, data: dict[str, Any], **_: Any) -> None:
        for key in ("countries", "devices"):
            values = data.get(key) or []
            if len(set(values)) != len(values):
                raise ValidationError("lists each value once", key)


class OfferCreateSchema(OfferUpdateSchema):
    advertiser_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    name = _name(required=True)
    url_template = fields.String(
        required=True, validate=validate.And(validate.Length(min=1, max=2048), check_url_template)
    )
    payout = _money(required=True)
    currency = _currency(required=True)
    daily_cap = fields.Integer(
        load_default=None, allow_none=True, strict=True, validate=validate.Range(min=1, max=10_000_000)
    )
    countries = fields.List(
        UpperString(validate=validate.Regexp(r"^[A-Z]{2}$", error="not an ISO 3166 alpha-2 country code")),
        load_default=list,
        validate=validate.Length(max=250),
    )
    devices = fields.List(
        fields.String(validate=validate.OneOf(DEVICES)), load_default=list, validate=validate.Length(max=3)
    )


# --- smart links ----------------------------------------------------------------------------
def _arm_list(**kwargs: Any) -> fields.List[Any]:
    return fields.List(
        fields.String(validate=validate.Length(min=1, max=40)), validate=validate.Length(max=MAX_ARMS), **kwargs
    )


def _weights(**kwargs: Any) -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=40)),
        values=fields.Float(allow_nan=False, validate=validate.Range(min=0.0, max=1.0)),
        **kwargs,
    )


def check_weights(arms: Sequence[str], weights: Mapping[str, float] | None, key: str = "weights") -> None:
    """Caller-given weights name every arm once and sum to 1."""
    if weights is None:
        return
    if set(weights) != set(arms):
        missing = sorted(set(arms) - set(weights))
        extra = sorted(set(weights) - set(arms))
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"not arms: {', '.join(extra)}"] if extra else []
        raise ValidationError(f"give one weight per arm ({'; '.join(parts)})", key)
    if not math.isclose(sum(weights.values()), 1.0, abs_tol=WEIGHT_TOLERANCE):
        raise ValidationError(f"weights must sum to 1, not {sum(weights.values()):.6f}", key)


def _unique(values: Sequence[str], key: str) -> None:
    if len(set(values)) != len(values):
        raise ValidationError("lists each offer once", key)


class LinkUpdateSchema(Schema):
    name = _name()
    algorithm = fields.String(validate=validate.Length(min=1, max=40))
    algorithm_params = fields.Dict(keys=fields.String(), allow_none=True)
    fallback_offer_id = fields.String(allow_none=True, validate=validate.Length(min=1, max=40))
    commission_rate = fields.Decimal(allow_nan=False, validate=check_rate)

    @validates_schema
    def _algorithm(self, data: dict[str, Any], **_: Any) -> None:
        if "algorithm" in data:
            algorithm_params(data["algorithm"], data.get("algorithm_params"))


class LinkCreateSchema(LinkUpdateSchema):
    slug = LowerString(required=True, validate=check_slug)
    name = _name(required=True)
    affiliate_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    algorithm = fields.String(load_default="thompson_sampling", validate=validate.Length(min=1, max=40))
    algorithm_params = fields.Dict(keys=fields.String(), load_default=dict, allow_none=True)
    fallback_offer_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=40))
    commission_rate = fields.Decimal(load_default=Decimal("0.7"), allow_nan=False, validate=check_rate)
    arms = _arm_list(load_default=list)
    weights = _weights(load_default=None, allow_none=True)

    @validates_schema
    def _arms_and_weights(self, data: dict[str, Any], **_: Any) -> None:
        arms = data.get("arms") or []
        _unique(arms, "arms")
        if data.get("weights") is not None and not arms:
            raise ValidationError("weights need arms", "weights")
        check_weights(arms, data.get("weights"))
        fallback = data.get("fallback_offer_id")
        if fallback is not None and fallback not in arms:
            raise ValidationError("the fallback offer must be one of the link's arms", "fallback_offer_id")


class ArmsSchema(Schema):
    arms = fields.List(
        fields.String(validate=validate.Length(min=1, max=40)),
        required=True,
        validate=validate.Length(min=1, max=MAX_ARMS),
    )
    weights = _weights(load_default=None, allow_none=True)

    @validates_schema
    def _arms_and_weights(self, data: dict[str, Any], **_: Any) -> None:
        _unique(data.get("arms") or [], "arms")
        check_weights(data.get("arms") or [], data.get("weights"))


class ReasonSchema(Schema):
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


# --- traffic sources, campaigns and costs ---------------------------------------------------
class TrafficSourceSchema(Schema):
    name = _name(required=True)
    cost_model = fields.String(required=True, validate=validate.OneOf(COST_MODELS))


class TrafficSourceUpdateSchema(Schema):
    name = _name()
    cost_model = fields.String(validate=validate.OneOf(COST_MODELS))


class CampaignUpdateSchema(Schema):
    name = _name()
    link_id = fields.String(allow_none=True, validate=validate.Length(min=1, max=40))
    daily_budget = _money()
    daily_cap = _money()
    status = fields.String(validate=validate.OneOf(["active", "paused"]))


class CampaignCreateSchema(CampaignUpdateSchema):
    name = _name(required=True)
    traffic_source_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    link_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=40))
    daily_budget = _money(required=True)
    daily_cap = _money(required=True)
    currency = _currency(required=True)
    status = fields.String(load_default="active", validate=validate.OneOf(["active", "paused"]))

    @validates_schema
    def _budget_within_cap(self, data: dict[str, Any], **_: Any) -> None:
        check_budget(data.get("daily_budget"), data.get("daily_cap"))


def check_budget(budget: Decimal | None, cap: Decimal | None) -> None:
    if budget is not None and cap is not None and budget > cap:
        raise ValidationError(f"the daily budget {budget} is above the daily cap {cap}", "daily_budget")


class CostRowSchema(Schema):
    day = fields.Date(required=True)
    amount = _money(required=True)
    clicks = fields.Integer(load_default=0, strict=False, validate=validate.Range(min=0, max=2_000_000_000))


class CostImportSchema(Schema):
    costs = fields.List(fields.Nested(CostRowSchema), required=True, validate=validate.Length(min=1, max=5000))

    @validates_schema
    def _one_row_per_day(self, data: dict[str, Any], **_: Any) -> None:
        days = [row["day"] for row in data.get("costs") or []]
        repeated = sorted({d.isoformat() for d in days if days.count(d) > 1})
        if repeated:
            raise ValidationError(f"one row per day; repeated: {', '.join(repeated)}", "costs")


# --- queries --------------------------------------------------------------------------------
class ListQuerySchema(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))


class OfferQuerySchema(ListQuerySchema):
    advertiser_id = fields.String(load_default=None, validate=validate.Length(max=40))
    status = fields.String(load_default=None, validate=validate.OneOf(["active", "paused"]))


class LinkQuerySchema(ListQuerySchema):
    affiliate_id = fields.String(load_default=None, validate=validate.Length(max=40))
    status = fields.String(load_default=None, validate=validate.OneOf(["active", "paused"]))


class CampaignQuerySchema(ListQuerySchema):
    traffic_source_id = fields.String(load_default=None, validate=validate.Length(max=40))
    link_id = fields.String(load_default=None, validate=validate.Length(max=40))


class CostQuerySchema(Schema):
    since = fields.Date(load_default=None)
    until = fields.Date(load_default=None)


# --- JSON bodies ----------------------------------------------------------------------------
def money(value: Decimal) -> str:
    """Money as a string with 4 decimals: exact, and the same on every database."""
    return format(Decimal(value).quantize(MONEY_STEP), "f")


def _iso(value: datetime | date) -> str:
    return value.isoformat()


def advertiser_body(a: Advertiser) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "email": a.email, "status": a.status, "created_at": _iso(a.created_at)}


def affiliate_body(a: Affiliate) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "email": a.email, "status": a.status, "created_at": _iso(a.created_at)}


def offer_body(o: Offer) -> dict[str, Any]:
    return {
        "id": o.id,
        "advertiser_id": o.advertiser_id,
        "name": o.name,
        "url_template": o.url_template,
        "payout": money(o.payout),
        "currency": o.currency,
        "daily_cap": o.daily_cap,
        "countries": list(o.countries),
        "devices": list(o.devices),
        "status": o.status,
        "created_at": _iso(o.created_at),
        "updated_at": _iso(o.updated_at),
    }


def allocation_body(a: Allocation) -> dict[str, Any]:
    return {
        "id": a.id,
        "weights": {str(k): float(v) for k, v in a.weights.items()},
        "algorithm": a.algorithm,
        "algorithm_version": a.algorithm_version,
        "decision_id": a.decision_id,
        "created_at": _iso(a.created_at),
    }


def link_body(link: SmartLink, arms: Sequence[str], current: Allocation | None) -> dict[str, Any]:
    return {
        "id": link.id,
        "slug": link.slug,
        "name": link.name,
        "affiliate_id": link.affiliate_id,
        "algorithm": link.algorithm,
        "algorithm_params": dict(link.algorithm_params),
        "fallback_offer_id": link.fallback_offer_id,
        "commission_rate": format(Decimal(link.commission_rate).quantize(MONEY_STEP), "f"),
        "status": link.status,
        "arms": list(arms),
        "current_allocation": allocation_body(current) if current is not None else None,
        "created_at": _iso(link.created_at),
        "updated_at": _iso(link.updated_at),
    }


def traffic_source_body(t: TrafficSource) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "cost_model": t.cost_model, "created_at": _iso(t.created_at)}


def campaign_body(c: Campaign) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "traffic_source_id": c.traffic_source_id,
        "link_id": c.link_id,
        "daily_budget": money(c.daily_budget),
        "daily_cap": money(c.daily_cap),
        "currency": c.currency,
        "status": c.status,
        "created_at": _iso(c.created_at),
    }


def cost_body(c: CampaignCost) -> dict[str, Any]:
    return {
        "campaign_id": c.campaign_id,
        "day": c.day.isoformat(),
        "amount": money(c.amount),
        "clicks": c.clicks,
        "imported_at": _iso(c.imported_at),
    }
