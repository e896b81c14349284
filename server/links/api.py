"""JSON API of the smart-link domain under /v1: advertisers, offers, affiliates, links and their
arms, traffic sources, campaigns and imported costs.

Each HTTP method has its own view (and so its own endpoint name and permission in the authz
data). Views validate with a marshmallow schema, call one service and answer; pausing, resuming
and arm changes are governed actions whose denial is a 403 problem carrying the decision."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import Schema, ValidationError

from server.errors import Problem
from server.extensions import services
from server.governance import services as governance
from server.governance.api import caller_actor, json_body, raise_if_denied
from server.governance.gateway import Outcome
from server.links import schemas
from server.links import services as links
from server.links.services import LinkDetail, Page

links_api = Blueprint("links_api", __name__, url_prefix="/v1")


# --- helpers --------------------------------------------------------------------------------
def _query(schema: Schema) -> dict[str, Any]:
    loaded: dict[str, Any] = schema.load(request.args.to_dict())
    return loaded


def _body(schema: Schema, *, partial: bool = False) -> dict[str, Any]:
    loaded: dict[str, Any] = schema.load(json_body(), partial=partial)
    return loaded


def _optional_body(schema: Schema) -> dict[str, Any]:
    """The body of an action endpoint, which may be empty."""
    if not request.get_data(cache=True):
        loaded: dict[str, Any] = schema.load({})
        return loaded
    return _body(schema)


def _page(args: dict[str, Any]) -> Page:
    return Page(limit=args.pop("limit"), cursor=args.pop("cursor"))


def _listing(items: list[dict[str, Any]], cursor: str | None) -> Response:
    return jsonify({"items": items, "next_cursor": cursor})


def _decision(outcome: Outcome | None) -> dict[str, Any] | None:
    return governance.outcome_body(outcome) if outcome is not None else None


def _governed(body: dict[str, Any], outcome: Outcome) -> Response:
    """The answer of a governed action, after its unit of work committed: the decision is recorded
    whatever it says; a denial is a 403 (503 when OPA failed) problem that carries it."""
    decision = governance.outcome_body(outcome)
    raise_if_denied(outcome.allow, outcome.record.error_code, decision)
    return jsonify(body | {"decision": decision})


def _detail_body(detail: LinkDetail) -> dict[str, Any]:
    return schemas.link_body(detail.link, detail.arm_ids, detail.current) | {
        "arm_offers": [
            {
                "offer_id": arm.offer.id,
                "name": arm.offer.name,
                "status": arm.offer.status,
                "weight": arm.weight,
                "clicks": int(arm.evidence.get("clicks", 0)),
                "conversions": int(arm.evidence.get("conversions", 0)),
                "revenue": float(arm.evidence.get("revenue", 0.0)),
            }
            for arm in detail.arms
        ],
        "allocation_history": [schemas.allocation_body(a) for a in detail.history],
        "kill_switch": bool(detail.kill_switch and detail.kill_switch.enabled),
    }


def _string_keys(errors: Any) -> Any:
    """Marshmallow keys list items by int; JSON (and sorted keys) want strings."""
    if isinstance(errors, dict):
        return {str(k): _string_keys(v) for k, v in errors.items()}
    return errors


# --- advertisers ----------------------------------------------------------------------------
@links_api.get("/advertisers")
def list_advertisers() -> Response:
    args = _query(schemas.ListQuerySchema())
    with services().db.unit_of_work() as uow:
        rows, cursor = links.list_advertisers(uow.session, _page(args))
        return _listing([schemas.advertiser_body(a) for a in rows], cursor)


@links_api.post("/advertisers")
def create_advertiser() -> tuple[Response, int]:
    payload = _body(schemas.AdvertiserSchema())
    with services().db.unit_of_work() as uow:
        body = schemas.advertiser_body(links.create_advertiser(uow.session, payload))
        uow.commit()
    return jsonify(body), 201


@links_api.get("/advertisers/<advertiser_id>")
def get_advertiser(advertiser_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(schemas.advertiser_body(links.get_advertiser(uow.session, advertiser_id)))


@links_api.patch("/advertisers/<advertiser_id>")
def update_advertiser(advertiser_id: str) -> Response:
    changes = _body(schemas.AdvertiserUpdateSchema(), partial=True)
    with services().db.unit_of_work() as uow:
        body = schemas.advertiser_body(links.update_advertiser(uow.session, advertiser_id, changes))
        uow.commit()
    return jsonify(body)


# --- offers ---------------------------------------------------------------------------------
@links_api.get("/offers")
def list_offers() -> Response:
    args = _query(schemas.OfferQuerySchema())
    with services().db.unit_of_work() as uow:
        rows, cursor = links.list_offers(uow.session, _page(args), **args)
        return _listing([schemas.offer_body(o) for o in rows], cursor)


@links_api.post("/offers")
def create_offer() -> tuple[Response, int]:
    payload = _body(schemas.OfferCreateSchema())
    with services().db.unit_of_work() as uow:
        body = schemas.offer_body(links.create_offer(uow.session, payload))
        uow.commit()
    return jsonify(body), 201


@links_api.get("/offers/<offer_id>")
def get_offer(offer_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(schemas.offer_body(links.get_offer(uow.session, offer_id)))


@links_api.patch("/offers/<offer_id>")
def update_offer(offer_id: str) -> Response:
    changes = _body(schemas.OfferUpdateSchema(), partial=True)
    with services().db.unit_of_work() as uow:
        body = schemas.offer_body(links.update_offer(uow.session, offer_id, changes))
        uow.commit()
    return jsonify(body)


def _offer_status(offer_id: str, *, pause: bool) -> Response:
    payload = _optional_body(schemas.ReasonSchema())
    svc = services()
    with svc.db.unit_of_work() as uow:
        offer, outcome = links.set_offer_status(
            uow.session, svc.gateway, caller_actor(), offer_id, pause=pause, reason=payload["reason"]
        )
        body = schemas.offer_body(offer)
        uow.commit()
    return _governed(body, outcome)


@links_api.post("/offers/<offer_id>/pause")
def pause_offer(offer_id: str) -> Response:
    return _offer_status(offer_id, pause=True)


@links_api.post("/offers/<offer_id>/resume")
def resume_offer(offer_id: str) -> Response:
    return _offer_status(offer_id, pause=False)


# --- affiliates -----------------------------------------------------------------------------
@links_api.get("/affiliates")
def list_affiliates() -> Response:
    args = _query(schemas.ListQuerySchema())
    with services().db.unit_of_work() as uow:
        rows, cursor = links.list_affiliates(uow.session, _page(args))
        return _listing([schemas.affiliate_body(a) for a in rows], cursor)


@links_api.post("/affiliates")
def create_affiliate() -> tuple[Response, int]:
    payload = _body(schemas.AffiliateSchema())
    with services().db.unit_of_work() as uow:
        body = schemas.affiliate_body(links.create_affiliate(uow.session, payload))
        uow.commit()
    return jsonify(body), 201


@links_api.get("/affiliates/<affiliate_id>")
def get_affiliate(affiliate_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(schemas.affiliate_body(links.get_affiliate(uow.session, affiliate_id)))


@links_api.patch("/affiliates/<affiliate_id>")
def update_affiliate(affiliate_id: str) -> Response:
    changes = _body(schemas.AffiliateUpdateSchema(), partial=True)
    with services().db.unit_of_work() as uow:
        body = schemas.affiliate_body(links.update_affiliate(uow.session, affiliate_id, changes))
        uow.commit()
    return jsonify(body)


# --- smart links ----------------------------------------------------------------------------
@links_api.get("/links")
def list_links() -> Response:
    args = _query(schemas.LinkQuerySchema())
    with services().db.unit_of_work() as uow:
        rows, cursor = links.list_links(uow.session, _page(args), **args)
        arms = links.arms_by_link(uow.session, [link.id for link in rows])
        items = [schemas.link_body(link, arms[link.id], links.current_allocation(uow.session, link)) for link in rows]
        return _listing(items, cursor)


@links_api.post("/links")
def create_link() -> tuple[Response, int]:
    payload = _body(schemas.LinkCreateSchema())
    svc = services()
    with svc.db.unit_of_work() as uow:
        change = links.create_link(uow.session, svc.gateway, caller_actor(), payload)
        body = _detail_body(links.link_detail(uow.session, change.link.id)) | {"decision": _decision(change.outcome)}
        uow.commit()
    return jsonify(body), 201


@links_api.get("/links/<link_id>")
def get_link(link_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(_detail_body(links.link_detail(uow.session, link_id)))


@links_api.patch("/links/<link_id>")
def update_link(link_id: str) -> Response:
    changes = _body(schemas.LinkUpdateSchema(), partial=True)
    svc = services()
    with svc.db.unit_of_work() as uow:
        _, outcome = links.configure_link(uow.session, svc.gateway, caller_actor(), link_id, changes)
        body = _detail_body(links.link_detail(uow.session, link_id))
        uow.commit()
    if outcome is None:
        return jsonify(body | {"decision": None})
    return _governed(body, outcome)


@links_api.put("/links/<link_id>/arms")
def replace_arms(link_id: str) -> Response:
    payload = _body(schemas.ArmsSchema())
    svc = services()
    with svc.db.unit_of_work() as uow:
        change = links.replace_arms(
            uow.session, svc.gateway, caller_actor(), link_id, payload["arms"], payload["weights"]
        )
        body = _detail_body(links.link_detail(uow.session, change.link.id))
        uow.commit()
    if change.outcome is None:
        return jsonify(body | {"decision": None})
    return _governed(body, change.outcome)


def _link_status(link_id: str, *, pause: bool) -> Response:
    payload = _optional_body(schemas.ReasonSchema())
    svc = services()
    with svc.db.unit_of_work() as uow:
        link, outcome = links.set_link_status(
            uow.session, svc.gateway, caller_actor(), link_id, pause=pause, reason=payload["reason"]
        )
        body = _detail_body(links.link_detail(uow.session, link.id))
        uow.commit()
    return _governed(body, outcome)


@links_api.post("/links/<link_id>/pause")
def pause_link(link_id: str) -> Response:
    return _link_status(link_id, pause=True)


@links_api.post("/links/<link_id>/resume")
def resume_link(link_id: str) -> Response:
    return _link_status(link_id, pause=False)


# --- traffic sources ------------------------------------------------------------------------
@links_api.get("/traffic-sources")
def list_traffic_sources() -> Response:
    args = _query(schemas.ListQuerySchema())
    with services().db.unit_of_work() as uow:
        rows, cursor = links.list_traffic_sources(uow.session, _page(args))
        return _listing([schemas.traffic_source_body(t) for t in rows], cursor)


@links_api.post("/traffic-sources")
def create_traffic_source() -> tuple[Response, int]:
    payload = _body(schemas.TrafficSourceSchema())
    with services().db.unit_of_work() as uow:
        body = schemas.traffic_source_body(links.create_traffic_source(uow.session, payload))
        uow.commit()
    return jsonify(body), 201


@links_api.get("/traffic-sources/<source_id>")
def get_traffic_source(source_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(schemas.traffic_source_body(links.get_traffic_source(uow.session, source_id)))


@links_api.patch("/traffic-sources/<source_id>")
def update_traffic_source(source_id: str) -> Response:
    changes = _body(schemas.TrafficSourceUpdateSchema(), partial=True)
    with services().db.unit_of_work() as uow:
        body = schemas.traffic_source_body(links.update_traffic_source(uow.session, source_id, changes))
        uow.commit()
    return jsonify(body)


# --- campaigns and costs --------------------------------------------------------------------
@links_api.get("/campaigns")
def list_campaigns() -> Response:
    args = _query(schemas.CampaignQuerySchema())
    with services().db.unit_of_work() as uow:
        rows, cursor = links.list_campaigns(uow.session, _page(args), **args)
        return _listing([schemas.campaign_body(c) for c in rows], cursor)


@links_api.post("/campaigns")
def create_campaign() -> tuple[Response, int]:
    payload = _body(schemas.CampaignCreateSchema())
    svc = services()
    with svc.db.unit_of_work() as uow:
        campaign, outcome = links.open_campaign(uow.session, svc.gateway, caller_actor(), payload)
        body = schemas.campaign_body(campaign) if campaign is not None else {}
        uow.commit()
    # Allowed but not executed (shadow mode, pending approval): nothing was created.
    return _governed(body, outcome), 201 if campaign is not None else 202


@links_api.get("/campaigns/<campaign_id>")
def get_campaign(campaign_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(schemas.campaign_body(links.get_campaign(uow.session, campaign_id)))


@links_api.patch("/campaigns/<campaign_id>")
def update_campaign(campaign_id: str) -> Response:
    changes = _body(schemas.CampaignUpdateSchema(), partial=True)
    svc = services()
    with svc.db.unit_of_work() as uow:
        campaign, outcome = links.configure_campaign(uow.session, svc.gateway, caller_actor(), campaign_id, changes)
        body = schemas.campaign_body(campaign)
        uow.commit()
    if outcome is None:
        return jsonify(body | {"decision": None})
    return _governed(body, outcome)


@links_api.get("/campaigns/<campaign_id>/costs")
def list_costs(campaign_id: str) -> Response:
    args = _query(schemas.CostQuerySchema())
    with services().db.unit_of_work() as uow:
        rows = links.list_costs(uow.session, campaign_id, **args)
        return jsonify({"items": [schemas.cost_body(c) for c in rows]})


@links_api.post("/campaigns/<campaign_id>/costs")
def import_costs(campaign_id: str) -> Response:
    if not request.is_json:
        raise Problem(415, "Unsupported Media Type", "send the body as application/json")
    rows = request.get_json(silent=True)
    if rows is None:
        raise Problem(400, "Malformed JSON", "the request body is not valid JSON")
    if not isinstance(rows, list):
        raise Problem(400, "Validation failed", "the request body must be a JSON array of {day, amount, clicks}")
    try:
        payload = schemas.CostImportSchema().load({"costs": rows})
    except ValidationError as exc:
        errors = _string_keys(exc.messages).get("costs", {})
        if not isinstance(errors, dict):  # a rule about the whole list (one row per day)
            errors = {"_schema": errors}
        raise Problem(400, "Validation failed", "the request has invalid rows", errors=errors) from exc
    with services().db.unit_of_work() as uow:
        result = links.import_costs(uow.session, campaign_id, payload["costs"])
        body = {
            "created": result.created,
            "updated": result.updated,
            "items": [schemas.cost_body(c) for c in result.rows],
        }
        uow.commit()
    return jsonify(body)
