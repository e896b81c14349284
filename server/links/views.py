"""Admin pages of the smart-link domain: links (with their allocation, its history and the
decisions about them), offers and advertisers, campaigns, traffic sources and imported costs.

Forms post to one view each, which turns the form into the API's input, validates it with the
same marshmallow schema, calls one service and redirects (303) on success. A bad input re-renders
the page with readable messages and the values entered (400, 409); a policy denial re-renders it
with the decision's reasons (403, or 503 when OPA could not decide)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from marshmallow import Schema, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from algorithms import registry
from server.db import utcnow
from server.errors import Problem
from server.extensions import services
from server.governance.api import FAILED_CLOSED, caller_actor
from server.governance.gateway import Outcome
from server.links import schemas
from server.links import services as links
from server.links.charts import AllocationPoint, allocation_chart, color
from server.links.models import Advertiser, Affiliate, Offer, SmartLink

links_pages = Blueprint("links_pages", __name__)

PageResult = Response | str | tuple[str, int]


# --- form plumbing --------------------------------------------------------------------------
@dataclass
class Failure:
    """Why a form was not accepted, for the page that shows it again."""

    form: str
    status: int
    message: str
    errors: list[str] = field(default_factory=list)
    values: MultiDict[str, str] = field(default_factory=MultiDict)


def _messages(errors: Any, prefix: str = "") -> list[str]:
    """Marshmallow's nested error messages as readable lines ("payout: must not be negative")."""
    if isinstance(errors, dict):
        out: list[str] = []
        for key, value in errors.items():
            name = "" if key == "_schema" else str(key).replace("_", " ")
            out += _messages(value, f"{prefix} {name}".strip() if name else prefix)
        return out
    if isinstance(errors, list):
        return [line for item in errors for line in _messages(item, prefix)]
    return [f"{prefix}: {errors}" if prefix else str(errors)]


def _failure(form: str, exc: Exception) -> Failure:
    values = request.form.copy()
    if isinstance(exc, ValidationError):
        return Failure(form, 400, "Please correct the following:", _messages(exc.messages), values)
    if isinstance(exc, Problem):
        if exc.status == 404 and exc.errors is None:
            raise exc  # the page itself does not exist: the error page
        lines = _messages(exc.errors) if exc.errors else []
        return Failure(form, exc.status, exc.detail or exc.title, lines, values)
    raise exc


def _load(schema: Schema, data: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    loaded: dict[str, Any] = schema.load(data, partial=partial)
    return loaded


def _text(form: MultiDict[str, str], name: str) -> str | None:
    value = form.get(name, "").strip()
    return value or None


def _fields(form: MultiDict[str, str], *names: str, blank_as_none: tuple[str, ...] = ()) -> dict[str, Any]:
    """The named form fields; a blank one is left out (so the schema reports it if it is required)
    or given as None when it may be cleared."""
    out: dict[str, Any] = {}
    for name in names:
        value = _text(form, name)
        if value is not None:
            out[name] = value
        elif name in blank_as_none and name in form:
            out[name] = None
    return out


def _integer(value: Any) -> Any:
    try:
        return int(value) if isinstance(value, str) else value
    except ValueError:
        return value  # the schema reports "Not a valid integer."


def _json_object(form: MultiDict[str, str], name: str) -> dict[str, Any] | None:
    raw = _text(form, name)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"not valid JSON ({exc.msg} at character {exc.pos + 1})", name) from exc
    if not isinstance(value, dict):
        raise ValidationError('must be a JSON object such as {"gamma": 0.95}', name)
    return value


def _codes(form: MultiDict[str, str], name: str) -> list[str]:
    raw = form.get(name, "")
    return [part for part in raw.replace(",", " ").split() if part]


def denial_message(outcome: Outcome) -> tuple[int, str] | None:
    """None when the policy allowed; else the status and message a page shows."""
    if outcome.allow:
        return None
    reasons = "; ".join(str(r.get("message") or r.get("code")) for r in outcome.reasons)
    if outcome.record.error_code in FAILED_CLOSED:
        return 503, f"Not done: the policy engine could not decide ({outcome.record.error_code})."
    return 403, f"Denied by policy: {reasons}"


def _done(message: str, endpoint: str, **values: Any) -> Response:
    flash(message, "ok")
    return redirect(url_for(endpoint, **values), 303)


def _status(page: str, failure: Failure | None, status: int | None = None) -> PageResult:
    code = status or (failure.status if failure else 200)
    return (page, code) if code != 200 else page


def _lookup_names(session: Session, model: type[Advertiser] | type[Affiliate] | type[Offer]) -> dict[str, str]:
    """{id: name} for a form's select box."""
    rows = session.execute(select(model.id, model.name).order_by(model.name).limit(1000))
    return {str(row_id): str(name) for row_id, name in rows}


# --- links ----------------------------------------------------------------------------------
def _links_page(failure: Failure | None = None) -> PageResult:
    page = links.Page(limit=200, cursor=request.args.get("cursor") or None)
    with services().db.unit_of_work() as uow:
        rows, cursor = links.list_links(uow.session, page)
        arms = links.arms_by_link(uow.session, [link.id for link in rows])
        html = render_template(
            "links/links.html",
            rows=rows,
            arms=arms,
            next_cursor=cursor,
            affiliates=_lookup_names(uow.session, Affiliate),
            offers=_lookup_names(uow.session, Offer),
            algorithms=schemas.allocation_algorithms(),
            defaults={name: registry.get(name).defaults() for name in schemas.allocation_algorithms()},
            failure=failure,
        )
    return _status(html, failure)


@links_pages.get("/links")
def links_index() -> PageResult:
    return _links_page()


@links_pages.post("/links")
def create_link() -> PageResult:
    form = request.form
    try:
        data = _fields(form, "slug", "name", "affiliate_id", "algorithm", "fallback_offer_id", "commission_rate")
        data["arms"] = form.getlist("arms")
        params = _json_object(form, "algorithm_params")
        if params is not None:
            data["algorithm_params"] = params
        payload = _load(schemas.LinkCreateSchema(), data)
        svc = services()
        with svc.db.unit_of_work() as uow:
            change = links.create_link(uow.session, svc.gateway, caller_actor(), payload)
            uow.commit()
    except (ValidationError, Problem) as exc:
        return _links_page(_failure("link", exc))
    message = f"Link {change.link.slug} created."
    if change.outcome is not None:
        denial = denial_message(change.outcome)
        message += (
            f" Its first allocation was not approved ({denial[1]}); clicks go to the fallback offer."
            if denial
            else f" First allocation {change.outcome.record.outcome}."
        )
    return _done(message, "links_pages.link_detail", link_id=change.link.id)


@links_pages.post("/affiliates")
def create_affiliate() -> PageResult:
    try:
        payload = _load(schemas.AffiliateSchema(), _fields(request.form, "name", "email"))
        with services().db.unit_of_work() as uow:
            affiliate = links.create_affiliate(uow.session, payload)
            uow.commit()
    except (ValidationError, Problem) as exc:
        return _links_page(_failure("affiliate", exc))
    return _done(f"Affiliate {affiliate.name} created.", "links_pages.links_index")


def _link_page(link_id: str, failure: Failure | None = None, *, alert: tuple[int, str] | None = None) -> PageResult:
    with services().db.unit_of_work() as uow:
        detail = links.link_detail(uow.session, link_id, decisions=20)
        points = [
            AllocationPoint(a.created_at, {str(k): float(v) for k, v in a.weights.items()}) for a in detail.history
        ]
        chart = allocation_chart(points, detail.offer_names, utcnow())
        affiliate = uow.session.get(Affiliate, detail.link.affiliate_id)
        html = render_template(
            "links/link_detail.html",
            d=detail,
            link=detail.link,
            chart=chart,
            names=detail.offer_names,
            arm_colors={s.key: s.color for s in chart.series} if chart else {},
            fallback_color=color(0),
            affiliate=affiliate,
            all_offers=_lookup_names(uow.session, Offer),
            algorithms=schemas.allocation_algorithms(),
            failure=failure,
            alert=alert[1] if alert else None,
        )
    return _status(html, failure, alert[0] if alert else None)


@links_pages.get("/links/<link_id>")
def link_detail(link_id: str) -> PageResult:
    return _link_page(link_id)


def _stale_params(form: MultiDict[str, str], params: dict[str, Any]) -> bool:
    """The edit form shows the current algorithm's parameters; when another algorithm is chosen
    and they were left as shown, they belong to the old one (the new one gets its defaults)."""
    if form.get("algorithm") in (None, "", form.get("params_for")):
        return False
    try:
        shown = json.loads(form.get("params_shown", ""))
    except json.JSONDecodeError:
        return False
    return bool(shown == params)


@links_pages.post("/links/<link_id>")
def update_link(link_id: str) -> PageResult:
    form = request.form
    try:
        data = _fields(
            form, "name", "algorithm", "fallback_offer_id", "commission_rate", blank_as_none=("fallback_offer_id",)
        )
        params = _json_object(form, "algorithm_params")
        if params is not None and not _stale_params(form, params):
            data["algorithm_params"] = params
        changes = _load(schemas.LinkUpdateSchema(), data, partial=True)
        svc = services()
        with svc.db.unit_of_work() as uow:
            link, outcome = links.configure_link(uow.session, svc.gateway, caller_actor(), link_id, changes)
            uow.commit()
    except (ValidationError, Problem) as exc:
        return _link_page(link_id, _failure("edit", exc))
    denial = denial_message(outcome) if outcome is not None else None
    if denial:
        return _link_page(link_id, alert=(denial[0], f"The link was not changed. {denial[1]}"))
    return _done(f"Link {link.slug} saved.", "links_pages.link_detail", link_id=link_id)


@links_pages.post("/links/<link_id>/arms")
def replace_arms(link_id: str) -> PageResult:
    try:
        payload = _load(schemas.ArmsSchema(), {"arms": request.form.getlist("arms")})
        svc = services()
        with svc.db.unit_of_work() as uow:
            change = links.replace_arms(uow.session, svc.gateway, caller_actor(), link_id, payload["arms"])
            uow.commit()
    except (ValidationError, Problem) as exc:
        return _link_page(link_id, _failure("arms", exc))
    if change.outcome is None:
        return _done("The arm set is unchanged.", "links_pages.link_detail", link_id=link_id)
    denial = denial_message(change.outcome)
    if denial:
        return _link_page(link_id, alert=(denial[0], f"The arms were not changed. {denial[1]}"))
    if not change.changed:
        note = f"The arms were not changed: the decision is {change.outcome.record.outcome}."
        return _done(note, "links_pages.link_detail", link_id=link_id)
    return _done(
        f"Arms changed; new allocation {change.outcome.record.outcome}.", "links_pages.link_detail", link_id=link_id
    )


def _link_status(link_id: str, *, pause: bool) -> PageResult:
    svc = services()
    try:
        with svc.db.unit_of_work() as uow:
            _, outcome = links.set_link_status(
                uow.session, svc.gateway, caller_actor(), link_id, pause=pause, reason=_text(request.form, "reason")
            )
            uow.commit()
    except Problem as exc:
        return _link_page(link_id, _failure("status", exc))
    denial = denial_message(outcome)
    if denial:
        return _link_page(link_id, alert=denial)
    return _done("Link paused." if pause else "Link resumed.", "links_pages.link_detail", link_id=link_id)


@links_pages.post("/links/<link_id>/pause")
def pause_link(link_id: str) -> PageResult:
    return _link_status(link_id, pause=True)


@links_pages.post("/links/<link_id>/resume")
def resume_link(link_id: str) -> PageResult:
    return _link_status(link_id, pause=False)


@links_pages.post("/links/<link_id>/kill-switch")
def link_kill_switch(link_id: str) -> PageResult:
    enabled = request.form.get("enabled") == "on"
    svc = services()
    with svc.db.unit_of_work() as uow:
        outcome = links.set_link_kill_switch(
            uow.session,
            svc.gateway,
            caller_actor(),
            link_id,
            enabled=enabled,
            reason=(_text(request.form, "reason") or "")[:500] or None,
        )
        uow.commit()
    denial = denial_message(outcome)
    if denial:
        return _link_page(link_id, alert=denial)
    state = "on" if enabled else "off"
    return _done(f"The link's kill switch is {state}.", "links_pages.link_detail", link_id=link_id)


# --- offers and advertisers -----------------------------------------------------------------
def _offer_form(form: MultiDict[str, str]) -> dict[str, Any]:
    data = _fields(form, "advertiser_id", "name", "url_template", "payout", "currency", "daily_cap")
    if "daily_cap" in data:
        data["daily_cap"] = _integer(data["daily_cap"])
    elif "daily_cap" in form:
        data["daily_cap"] = None
    if "countries" in form:
        data["countries"] = _codes(form, "countries")
    if "devices_shown" in form:  # checkboxes send nothing when none is ticked
        data["devices"] = form.getlist("devices")
    return data


def _offers_page(failure: Failure | None = None) -> PageResult:
    page = links.Page(limit=200, cursor=request.args.get("cursor") or None)
    with services().db.unit_of_work() as uow:
        rows, cursor = links.list_offers(uow.session, page)
        html = render_template(
            "links/offers.html",
            rows=rows,
            next_cursor=cursor,
            advertisers=_lookup_names(uow.session, Advertiser),
            currencies=schemas.CURRENCIES,
            devices=schemas.DEVICES,
            macros=schemas.URL_MACROS,
            failure=failure,
        )
    return _status(html, failure)


@links_pages.get("/offers")
def offers_index() -> PageResult:
    return _offers_page()


@links_pages.post("/offers")
def create_offer() -> PageResult:
    try:
        payload = _load(schemas.OfferCreateSchema(), _offer_form(request.form))
        with services().db.unit_of_work() as uow:
            offer = links.create_offer(uow.session, payload)
            uow.commit()
    except (ValidationError, Problem) as exc:
        return _offers_page(_failure("offer", exc))
    return _done(f"Offer {offer.name} created.", "links_pages.offer_detail", offer_id=offer.id)


@links_pages.post("/advertisers")
def create_advertiser() -> PageResult:
    try:
        payload = _load(schemas.AdvertiserSchema(), _fields(request.form, "name", "email"))
        with services().db.unit_of_work() as uow:
            advertiser = links.create_advertiser(uow.session, payload)
            uow.commit()
    except (ValidationError, Problem) as exc:
        return _offers_page(_failure("advertiser", exc))
    return _done(f"Advertiser {advertiser.name} created.", "links_pages.offers_index")


def _offer_page(offer_id: str, failure: Failure | None = None, *, alert: tuple[int, str] | None = None) -> PageResult:
    with services().db.unit_of_work() as uow:
        offer = links.get_offer(uow.session, offer_id)
        html = render_template(
            "links/offer_detail.html",
            offer=offer,
            advertiser=uow.session.get(Advertiser, offer.advertiser_id),
            used_by=links.offer_links(uow.session, offer.id),
            currencies=schemas.CURRENCIES,
            devices=schemas.DEVICES,
            macros=schemas.URL_MACROS,
            decisions=links.target_decisions(uow.session, "offer", offer.id),
            failure=failure,
            alert=alert[1] if alert else None,
        )
    return _status(html, failure, alert[0] if alert else None)


@links_pages.get("/offers/<offer_id>")
def offer_detail(offer_id: str) -> PageResult:
    return _offer_page(offer_id)


@links_pages.post("/offers/<offer_id>")
def update_offer(offer_id: str) -> PageResult:
    try:
        data = _offer_form(request.form)
        data.pop("advertiser_id", None)
        changes = _load(schemas.OfferUpdateSchema(), data, partial=True)
        with services().db.unit_of_work() as uow:
            offer = links.update_offer(uow.session, offer_id, changes)
            uow.commit()
    except (ValidationError, Problem) as exc:
        return _offer_page(offer_id, _failure("edit", exc))
    return _done(f"Offer {offer.name} saved.", "links_pages.offer_detail", offer_id=offer_id)


def _offer_status(offer_id: str, *, pause: bool) -> PageResult:
    svc = services()
    try:
        with svc.db.unit_of_work() as uow:
            _, outcome = links.set_offer_status(
                uow.session, svc.gateway, caller_actor(), offer_id, pause=pause, reason=_text(request.form, "reason")
            )
            uow.commit()
    except Problem as exc:
        return _offer_page(offer_id, _failure("status", exc))
    denial = denial_message(outcome)
    if denial:
        return _offer_page(offer_id, alert=denial)
    return _done("Offer paused." if pause else "Offer resumed.", "links_pages.offer_detail", offer_id=offer_id)


@links_pages.post("/offers/<offer_id>/pause")
def pause_offer(offer_id: str) -> PageResult:
    return _offer_status(offer_id, pause=True)


@links_pages.post("/offers/<offer_id>/resume")
def resume_offer(offer_id: str) -> PageResult:
    return _offer_status(offer_id, pause=False)


# --- campaigns, traffic sources and costs ---------------------------------------------------
def _campaigns_page(failure: Failure | None = None, *, alert: tuple[int, str] | None = None) -> PageResult:
    with services().db.unit_of_work() as uow:
        campaigns, cursor = links.list_campaigns(
            uow.session, links.Page(limit=200, cursor=request.args.get("cursor") or None)
        )
        sources, _ = links.list_traffic_sources(uow.session, links.Page(limit=500))
        since = utcnow().date() - timedelta(days=29)
        html = render_template(
            "links/campaigns.html",
            campaigns=campaigns,
            next_cursor=cursor,
            sources=sources,
            source_names={s.id: s.name for s in sources},
            links_by_id={
                link.id: link.slug
                for link in uow.session.scalars(select(SmartLink).order_by(SmartLink.slug).limit(1000))
            },
            totals=links.cost_totals(uow.session, [c.id for c in campaigns], since),
            since=since,
            currencies=schemas.CURRENCIES,
            cost_models=schemas.COST_MODELS,
            failure=failure,
            alert=alert[1] if alert else None,
        )
    return _status(html, failure, alert[0] if alert else None)


@links_pages.get("/campaigns")
def campaigns_index() -> PageResult:
    return _campaigns_page()


@links_pages.post("/campaigns")
def create_campaign() -> PageResult:
    form = request.form
    try:
        data = _fields(form, "name", "traffic_source_id", "link_id", "daily_budget", "daily_cap", "currency")
        payload = _load(schemas.CampaignCreateSchema(), data)
        svc = services()
        with svc.db.unit_of_work() as uow:
            campaign, outcome = links.open_campaign(uow.session, svc.gateway, caller_actor(), payload)
            uow.commit()
    except (ValidationError, Problem) as exc:
        return _campaigns_page(_failure("campaign", exc))
    denial = denial_message(outcome)
    if denial or campaign is None:
        status, message = denial or (409, f"The decision is {outcome.record.outcome}.")
        return _campaigns_page(alert=(status, f"The campaign was not created. {message}"))
    return _done(f"Campaign {campaign.name} created.", "links_pages.campaigns_index")


@links_pages.post("/traffic-sources")
def create_traffic_source() -> PageResult:
    try:
        payload = _load(schemas.TrafficSourceSchema(), _fields(request.form, "name", "cost_model"))
        with services().db.unit_of_work() as uow:
            source = links.create_traffic_source(uow.session, payload)
            uow.commit()
    except (ValidationError, Problem) as exc:
        return _campaigns_page(_failure("source", exc))
    return _done(f"Traffic source {source.name} created.", "links_pages.campaigns_index")


@links_pages.post("/campaigns/<campaign_id>")
def update_campaign(campaign_id: str) -> PageResult:
    form = request.form
    try:
        data = _fields(form, "daily_budget", "daily_cap", "status", "link_id", blank_as_none=("link_id",))
        changes = _load(schemas.CampaignUpdateSchema(), data, partial=True)
        svc = services()
        with svc.db.unit_of_work() as uow:
            campaign, outcome = links.configure_campaign(uow.session, svc.gateway, caller_actor(), campaign_id, changes)
            uow.commit()
    except (ValidationError, Problem) as exc:
        return _campaigns_page(_failure(f"campaign:{campaign_id}", exc))
    denial = denial_message(outcome) if outcome is not None else None
    if denial:
        return _campaigns_page(alert=(denial[0], f"Campaign {campaign.name} was not changed. {denial[1]}"))
    return _done(f"Campaign {campaign.name} saved.", "links_pages.campaigns_index")


def _csv_rows(text: str) -> list[dict[str, Any]]:
    """CSV with a header naming `day` and `amount` (and optionally `clicks`), one row per day."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [name for name in ("day", "amount") if name not in header]
    if missing:
        wanted = "the first line must name the columns day, amount and optionally clicks"
        raise ValidationError(f"{wanted}; missing {', '.join(missing)}", "file")
    reader.fieldnames = header
    rows = []
    for row in reader:
        values = {k: (v or "").strip() for k, v in row.items() if k in ("day", "amount", "clicks")}
        if not any(values.values()):
            continue  # a blank line
        if not values.get("clicks"):
            values.pop("clicks", None)
        rows.append(values)
    if not rows:
        raise ValidationError("the file has no rows", "file")
    return rows


def _line_errors(errors: Mapping[str, Any]) -> dict[str, Any]:
    """Row indexes as CSV line numbers (the header is line 1)."""
    return {(f"line {int(k) + 2}" if str(k).isdigit() else k): v for k, v in errors.items()}


@links_pages.post("/campaigns/costs")
def import_costs() -> PageResult:
    campaign_id = request.form.get("campaign_id", "")
    upload = request.files.get("file")
    try:
        if not campaign_id:
            raise ValidationError("choose a campaign", "campaign")
        if upload is None or not upload.filename:
            raise ValidationError("choose a CSV file", "file")
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationError("the file is not UTF-8 text", "file") from exc
        try:
            rows = _csv_rows(text)
        except csv.Error as exc:
            raise ValidationError(f"not a CSV file the server can read ({exc})", "file") from exc
        try:
            payload = _load(schemas.CostImportSchema(), {"costs": rows})
        except ValidationError as exc:
            costs = exc.messages.get("costs", {}) if isinstance(exc.messages, dict) else {}
            raise ValidationError(_line_errors(costs) if isinstance(costs, dict) else {"file": costs}) from exc
        with services().db.unit_of_work() as uow:
            result = links.import_costs(uow.session, campaign_id, payload["costs"])
            uow.commit()
    except Problem as exc:
        if exc.errors:
            exc.errors = _line_errors(exc.errors)
        if exc.status == 404:
            exc.errors = exc.errors or {"campaign": [exc.detail]}
        return _campaigns_page(_failure("costs", exc))
    except ValidationError as exc:
        return _campaigns_page(_failure("costs", exc))
    return _done(
        f"Imported {len(result.rows)} day{'' if len(result.rows) == 1 else 's'} of cost"
        f" ({result.created} new, {result.updated} updated).",
        "links_pages.campaigns_index",
    )
