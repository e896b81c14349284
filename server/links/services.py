"""Use cases of the smart-link domain: advertisers, offers, affiliates, smart links and their arms,
traffic sources, campaigns and imported costs.

Each function takes the caller's Session (and, for governed actions, the Gateway and the Actor)
and never commits: the view's unit of work does. Descriptive data (names, emails, URL templates,
payouts) is plain CRUD; whatever changes where traffic or money goes (a link's allocation, its
algorithm or parameters, pausing or resuming a link or an offer, a campaign's budget, cap or
status) is decided by the governance gateway in the same transaction.
Domain errors are `Problem`s: 404 for an unknown id in the URL, 409 for a conflict, 400 with
field errors for a request that breaks a rule."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from marshmallow import ValidationError
from sqlalchemy import Select, and_, delete, func, insert, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db import Base, new_id, utcnow
from server.errors import Problem
from server.governance import services as governance
from server.governance.gateway import Action, Actor, Gateway, Outcome, Target
from server.governance.models import Control, Decision
from server.links import schemas
from server.links.allocations import approve_allocation, arm_evidence, arm_ids
from server.links.models import (
    Advertiser,
    Affiliate,
    Allocation,
    Campaign,
    CampaignCost,
    LinkArm,
    Offer,
    SmartLink,
    TrafficSource,
)

M = TypeVar("M", bound=Base)


# --- shared helpers -------------------------------------------------------------------------
def invalid(field_name: str, message: str) -> Problem:
    """A 400 validation problem about one field, shaped like marshmallow's errors."""
    return Problem(400, "Validation failed", message, errors={field_name: [message]})


def _get(session: Session, model: type[M], item_id: str, what: str) -> M:
    found = session.get(model, item_id)
    if found is None:
        raise Problem(404, "Not Found", f"no {what} with id {item_id}")
    return found


def _require(session: Session, model: type[M], item_id: str, what: str, field_name: str) -> M:
    """A row the request refers to in its body: a missing one is a 400 on that field."""
    found = session.get(model, item_id)
    if found is None:
        raise invalid(field_name, f"no {what} with id {item_id}")
    return found


def _apply(row: Base, changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        setattr(row, key, value)


@dataclass(frozen=True)
class Page:
    """Query options shared by every list: newest first, keyset-paginated on (created_at, id)."""

    limit: int = 100
    cursor: str | None = None


def _encode_cursor(created_at: datetime, item_id: str) -> str:
    raw = f"{created_at.isoformat()}|{item_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, item_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), item_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise Problem(400, "Invalid cursor", "the cursor is not one this API returned") from exc


def _paginate(session: Session, query: Select[M], model: type[M], page: Page) -> tuple[list[M], str | None]:
    created, ident = model.__table__.c["created_at"], model.__table__.c["id"]
    if page.cursor:
        stamp, last_id = _decode_cursor(page.cursor)
        query = query.where(or_(created < stamp, and_(created == stamp, ident < last_id)))
    rows = list(session.scalars(query.order_by(created.desc(), ident.desc()).limit(page.limit + 1)))
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    if not more or not rows:
        return rows, None
    last: Any = rows[-1]  # every paginated model has created_at and id
    return rows, _encode_cursor(last.created_at, last.id)


# --- advertisers and affiliates -------------------------------------------------------------
def list_advertisers(session: Session, page: Page) -> tuple[list[Advertiser], str | None]:
    return _paginate(session, select(Advertiser), Advertiser, page)


def get_advertiser(session: Session, advertiser_id: str) -> Advertiser:
    return _get(session, Advertiser, advertiser_id, "advertiser")


def create_advertiser(session: Session, data: Mapping[str, Any]) -> Advertiser:
    advertiser = Advertiser(id=new_id("adv"), name=data["name"].strip(), email=data.get("email"), status="active")
    session.add(advertiser)
    session.flush()
    return advertiser


def update_advertiser(session: Session, advertiser_id: str, changes: Mapping[str, Any]) -> Advertiser:
    advertiser = get_advertiser(session, advertiser_id)
    _apply(advertiser, changes)
    session.flush()
    return advertiser


def list_affiliates(session: Session, page: Page) -> tuple[list[Affiliate], str | None]:
    return _paginate(session, select(Affiliate), Affiliate, page)


def get_affiliate(session: Session, affiliate_id: str) -> Affiliate:
    return _get(session, Affiliate, affiliate_id, "affiliate")


def create_affiliate(session: Session, data: Mapping[str, Any]) -> Affiliate:
    affiliate = Affiliate(id=new_id("aff"), name=data["name"].strip(), email=data.get("email"), status="active")
    session.add(affiliate)
    session.flush()
    return affiliate


def update_affiliate(session: Session, affiliate_id: str, changes: Mapping[str, Any]) -> Affiliate:
    affiliate = get_affiliate(session, affiliate_id)
    _apply(affiliate, changes)
    session.flush()
    return affiliate


# --- offers ---------------------------------------------------------------------------------
def list_offers(
    session: Session, page: Page, *, advertiser_id: str | None = None, status: str | None = None
) -> tuple[list[Offer], str | None]:
    query = select(Offer)
    if advertiser_id:
        query = query.where(Offer.advertiser_id == advertiser_id)
    if status:
        query = query.where(Offer.status == status)
    return _paginate(session, query, Offer, page)


def get_offer(session: Session, offer_id: str) -> Offer:
    return _get(session, Offer, offer_id, "offer")


def create_offer(session: Session, data: Mapping[str, Any]) -> Offer:
    _require(session, Advertiser, data["advertiser_id"], "advertiser", "advertiser_id")
    offer = Offer(
        id=new_id("off"),
        advertiser_id=data["advertiser_id"],
        name=data["name"].strip(),
        url_template=data["url_template"],
        payout=data["payout"],
        currency=data["currency"],
        daily_cap=data.get("daily_cap"),
        countries=list(data.get("countries") or []),
        devices=list(data.get("devices") or []),
        status="active",
    )
    session.add(offer)
    session.flush()
    return offer


def update_offer(session: Session, offer_id: str, changes: Mapping[str, Any]) -> Offer:
    offer = get_offer(session, offer_id)
    _apply(offer, {k: (list(v) if k in ("countries", "devices") else v) for k, v in changes.items()})
    session.flush()
    return offer


def offer_links(session: Session, offer_id: str) -> list[SmartLink]:
    """The links that may route to this offer."""
    query = select(SmartLink).join(LinkArm, LinkArm.link_id == SmartLink.id).where(LinkArm.offer_id == offer_id)
    return list(session.scalars(query.order_by(SmartLink.slug)))


def set_offer_status(
    session: Session, gateway: Gateway, actor: Actor, offer_id: str, *, pause: bool, reason: str | None = None
) -> tuple[Offer, Outcome]:
    """Pause or resume an offer: the `offer.pause` / `offer.resume` governed action. The status
    changes only when the policy allows, in the transaction that records the decision."""
    offer = get_offer(session, offer_id)
    wanted = "paused" if pause else "active"
    if offer.status == wanted:
        raise Problem(409, "Conflict", f"offer {offer_id} is already {wanted}")

    def change_status(db: Session, _params: dict[str, Any]) -> str:
        offer.status = wanted
        db.flush()
        return wanted

    outcome = gateway.decide(
        session,
        Action(
            type="offer.pause" if pause else "offer.resume",
            actor=actor,
            target=Target(kind="offer", id=offer.id),
            params={"reason": reason},
        ),
        caller=actor,
        execute=change_status,
    )
    return offer, outcome


# --- smart links ----------------------------------------------------------------------------
@dataclass
class LinkChange:
    """A link after a change, with the allocation decision the change asked for (if any)."""

    link: SmartLink
    outcome: Outcome | None = None
    allocation: Allocation | None = None
    changed: bool = True


@dataclass
class ArmView:
    offer: Offer
    weight: float | None
    evidence: dict[str, Any]


@dataclass
class LinkDetail:
    """What the link's API body and page show."""

    link: SmartLink
    arms: list[ArmView]
    current: Allocation | None
    history: list[Allocation]
    kill_switch: Control | None = None
    decisions: list[Decision] = field(default_factory=list)
    offer_names: dict[str, str] = field(default_factory=dict)  # arms and offers in the history

    @property
    def arm_ids(self) -> list[str]:
        return sorted(arm.offer.id for arm in self.arms)


def list_links(
    session: Session, page: Page, *, affiliate_id: str | None = None, status: str | None = None
) -> tuple[list[SmartLink], str | None]:
    query = select(SmartLink)
    if affiliate_id:
        query = query.where(SmartLink.affiliate_id == affiliate_id)
    if status:
        query = query.where(SmartLink.status == status)
    return _paginate(session, query, SmartLink, page)


def get_link(session: Session, link_id: str) -> SmartLink:
    return _get(session, SmartLink, link_id, "link")


def current_allocation(session: Session, link: SmartLink) -> Allocation | None:
    return session.get(Allocation, link.current_allocation_id) if link.current_allocation_id is not None else None


def arms_by_link(session: Session, link_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each link's arm offer ids (sorted), for many links in one query."""
    out: dict[str, list[str]] = {link_id: [] for link_id in link_ids}
    if link_ids:
        rows = session.execute(
            select(LinkArm.link_id, LinkArm.offer_id)
            .where(LinkArm.link_id.in_(link_ids))
            .order_by(LinkArm.link_id, LinkArm.offer_id)
        )
        for link_id, offer_id in rows:
            out[link_id].append(offer_id)
    return out


def allocation_history(session: Session, link_id: str, limit: int = 100) -> list[Allocation]:
    """The link's approved allocations, newest first."""
    query = (
        select(Allocation)
        .where(Allocation.link_id == link_id)
        .order_by(Allocation.created_at.desc(), Allocation.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def target_decisions(session: Session, kind: str, target_id: str, limit: int = 20) -> list[Decision]:
    """Recent decisions about one target (a link's allocations, pauses and kill switch; an
    offer's pauses), newest first."""
    query = (
        select(Decision)
        .where(Decision.target_kind == kind, Decision.target_id == target_id)
        .order_by(Decision.created_at.desc(), Decision.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def kill_switch_key(link_id: str) -> str:
    return f"kill_switch:link:{link_id}"


def link_detail(session: Session, link_id: str, *, decisions: int = 0, history: int = 100) -> LinkDetail:
    link = get_link(session, link_id)
    current = current_allocation(session, link)
    weights = {str(k): float(v) for k, v in current.weights.items()} if current is not None else {}
    evidence = arm_evidence(session, link.id)
    offers = {o.id: o for o in session.scalars(select(Offer).where(Offer.id.in_(arm_ids(session, link.id))))}
    arms = [
        ArmView(offers[offer_id], weights.get(offer_id), evidence.get(offer_id, {}))
        for offer_id in sorted(offers, key=lambda o: (offers[o].name, o))
    ]
    past = allocation_history(session, link.id, history)
    former = {str(k) for a in past for k in a.weights} - set(offers)
    names = {o.id: o.name for o in offers.values()}
    if former:
        names |= dict(session.execute(select(Offer.id, Offer.name).where(Offer.id.in_(former))).tuples().all())
    return LinkDetail(
        link=link,
        arms=arms,
        current=current,
        history=past,
        kill_switch=session.get(Control, kill_switch_key(link.id)),
        decisions=target_decisions(session, "link", link.id, decisions) if decisions else [],
        offer_names=names,
    )


def uniform(arms: Sequence[str]) -> dict[str, float]:
    return {arm: 1.0 / len(arms) for arm in arms}


def _check_offers(session: Session, offer_ids: Sequence[str], field_name: str = "arms") -> None:
    found = set(session.scalars(select(Offer.id).where(Offer.id.in_(offer_ids))))
    missing = [o for o in offer_ids if o not in found]
    if missing:
        raise invalid(field_name, f"no offer with id {', '.join(missing)}")


def create_link(session: Session, gateway: Gateway, actor: Actor, data: Mapping[str, Any]) -> LinkChange:
    """Create a link and its arms; a link with arms gets its first allocation (the caller's weights,
    or an equal split) through `approve_allocation`, with the caller as the actor. A denied
    allocation leaves the link without one (clicks go to the fallback offer); the outcome says so."""
    if session.scalar(select(SmartLink.id).where(SmartLink.slug == data["slug"])) is not None:
        raise Problem(409, "Conflict", f"a link with slug {data['slug']!r} already exists")
    _require(session, Affiliate, data["affiliate_id"], "affiliate", "affiliate_id")
    arms: list[str] = list(data.get("arms") or [])
    _check_offers(session, arms)
    link = SmartLink(
        id=new_id("lnk"),
        slug=data["slug"],
        name=data["name"].strip(),
        affiliate_id=data["affiliate_id"],
        algorithm=data["algorithm"],
        algorithm_params=schemas.algorithm_params(data["algorithm"], data.get("algorithm_params")),
        fallback_offer_id=data.get("fallback_offer_id"),
        commission_rate=data["commission_rate"],
        status="active",
    )
    try:
        with session.begin_nested():  # a concurrent request may take the slug first
            session.add(link)
            session.flush()
    except IntegrityError as exc:
        raise Problem(409, "Conflict", f"a link with slug {data['slug']!r} already exists") from exc
    session.add_all(LinkArm(link_id=link.id, offer_id=offer_id) for offer_id in arms)
    session.flush()
    if not arms:
        return LinkChange(link)
    outcome, allocation = approve_allocation(
        session, gateway, link, data.get("weights") or uniform(arms), actor=actor, note="first allocation"
    )
    return LinkChange(link, outcome, allocation)


def _resolved_algorithm(link: SmartLink, changes: Mapping[str, Any]) -> dict[str, Any]:
    """`changes` with `algorithm_params` validated against the algorithm the link will have (with
    its defaults filled in) when the algorithm or its parameters change."""
    changes = dict(changes)
    if "algorithm" in changes or "algorithm_params" in changes:
        algorithm = changes.get("algorithm", link.algorithm)
        given = changes["algorithm_params"] if "algorithm_params" in changes else link.algorithm_params
        if "algorithm" in changes and "algorithm_params" not in changes and algorithm != link.algorithm:
            given = {}  # another algorithm: its own defaults, not the old one's parameters
        try:
            changes["algorithm_params"] = schemas.algorithm_params(algorithm, given)
        except ValidationError as exc:
            raise Problem(400, "Validation failed", "invalid algorithm parameters", errors=exc.messages) from exc
    return changes


def update_link(session: Session, link_id: str, changes: Mapping[str, Any]) -> SmartLink:
    """Apply `changes` to a link, ungoverned: the building block of `configure_link` and of the AI
    supervisor's executors, which decide the change themselves first."""
    link = get_link(session, link_id)
    changes = _resolved_algorithm(link, changes)
    fallback = changes.get("fallback_offer_id")
    if fallback is not None and fallback not in arm_ids(session, link.id):
        raise invalid("fallback_offer_id", "the fallback offer must be one of the link's arms")
    _apply(link, changes)
    session.flush()
    return link


def configure_link(
    session: Session, gateway: Gateway, actor: Actor, link_id: str, changes: Mapping[str, Any]
) -> tuple[SmartLink, Outcome | None]:
    """A person's or a service's edit of a link. Two changes are governed actions: the commission
    rate (`link.commission`: the affiliate's share, what payouts pay) and the algorithm or its
    parameters (`link.configure`). The whole edit is applied only when every governed change in it
    is allowed, in the transaction that records the decisions; the outcome returned is the denying
    one, else the last one (None when only descriptive data changes: the name, the fallback offer)."""
    link = get_link(session, link_id)
    resolved = _resolved_algorithm(link, changes)
    algorithm = str(resolved.get("algorithm", link.algorithm))
    params = resolved.get("algorithm_params", link.algorithm_params)
    rate = changes.get("commission_rate")
    actions: list[tuple[Action, dict[str, Any]]] = []
    if rate is not None and Decimal(rate) != Decimal(link.commission_rate):
        actions.append(
            (
                Action(
                    type="link.commission",
                    actor=actor,
                    target=Target(kind="link", id=link.id),
                    params={"commission_rate": float(rate)},
                ),
                {"commission_rate": float(link.commission_rate)},
            )
        )
    if algorithm != link.algorithm or params != link.algorithm_params:
        actions.append(
            (
                Action(
                    type="link.configure",
                    actor=actor,
                    target=Target(kind="link", id=link.id),
                    params={"algorithm": algorithm, "algorithm_params": dict(params)},
                ),
                {"algorithm": link.algorithm, "algorithm_params": dict(link.algorithm_params)},
            )
        )
    if not actions:
        return update_link(session, link_id, changes), None

    def apply(db: Session, _params: dict[str, Any]) -> str:
        update_link(db, link_id, changes)
        return algorithm

    outcome: Outcome | None = None
    for position, (action, state) in enumerate(actions):
        last = position == len(actions) - 1
        # Every decision is recorded; the edit runs inside the last one, once all were allowed.
        outcome = gateway.decide(session, action, state=state, caller=actor, execute=apply if last else None)
        if not outcome.allow:
            break
    assert outcome is not None
    _raise_if_failed(outcome)
    return link, outcome


def _raise_if_failed(outcome: Outcome) -> None:
    """An allowed edit whose execution failed (a rule of the domain, say) is the edit's error."""
    if outcome.allow and not outcome.executed and outcome.error is not None:
        raise Problem(400, "Validation failed", outcome.record.note or "the change could not be applied")


def _record_again(session: Session, record: Decision) -> None:
    """Insert a decision record again after rolling back the savepoint that held it."""
    columns = [c.key for c in Decision.__table__.columns]
    session.execute(insert(Decision), [{c: getattr(record, c) for c in columns}])


def replace_arms(
    session: Session,
    gateway: Gateway,
    actor: Actor,
    link_id: str,
    offer_ids: Sequence[str],
    weights: Mapping[str, float] | None = None,
) -> LinkChange:
    """Replace the link's arm set, together with a new allocation over the new arms (the caller's
    weights or an equal split) approved through `approve_allocation`.

    Both happen or neither: the arms are changed in a savepoint so that the policy sees them in the
    allocation's state; when the allocation is not made current (denied, failed, shadow or pending
    approval) the savepoint is rolled back and only the decision record is kept."""
    link = get_link(session, link_id)
    new_arms = list(offer_ids)
    _check_offers(session, new_arms)
    if link.fallback_offer_id is not None and link.fallback_offer_id not in new_arms:
        raise invalid(
            "arms", f"the fallback offer {link.fallback_offer_id} must stay an arm; change the link's fallback first"
        )
    old_arms = arm_ids(session, link.id)
    if set(old_arms) == set(new_arms) and weights is None:
        return LinkChange(link, changed=False)
    savepoint = session.begin_nested()
    session.execute(delete(LinkArm).where(LinkArm.link_id == link.id, LinkArm.offer_id.not_in(new_arms)))
    session.add_all(LinkArm(link_id=link.id, offer_id=o) for o in new_arms if o not in old_arms)
    session.flush()
    outcome, allocation = approve_allocation(
        session, gateway, link, weights or uniform(new_arms), actor=actor, note="arm set changed"
    )
    if allocation is None:
        savepoint.rollback()
        _record_again(session, outcome.record)
        return LinkChange(link, outcome, None, changed=False)
    savepoint.commit()
    return LinkChange(link, outcome, allocation)


def set_link_status(
    session: Session, gateway: Gateway, actor: Actor, link_id: str, *, pause: bool, reason: str | None = None
) -> tuple[SmartLink, Outcome]:
    """Pause or resume a link: the `link.pause` / `link.resume` governed action. The status changes
    only when the policy allows, in the transaction that records the decision."""
    link = get_link(session, link_id)
    wanted = "paused" if pause else "active"
    if link.status == wanted:
        raise Problem(409, "Conflict", f"link {link_id} is already {wanted}")

    def change_status(db: Session, _params: dict[str, Any]) -> str:
        link.status = wanted
        db.flush()
        return wanted

    outcome = gateway.decide(
        session,
        Action(
            type="link.pause" if pause else "link.resume",
            actor=actor,
            target=Target(kind="link", id=link.id),
            params={"reason": reason},
        ),
        caller=actor,
        execute=change_status,
    )
    return link, outcome


def set_link_kill_switch(
    session: Session, gateway: Gateway, actor: Actor, link_id: str, *, enabled: bool, reason: str | None = None
) -> Outcome:
    """Turn the link's kill switch on or off (the governed `controls.kill_switch` action)."""
    get_link(session, link_id)
    return governance.set_kill_switch(
        session, gateway, actor, enabled=enabled, scope="link", target_id=link_id, reason=reason
    )


# --- traffic sources, campaigns and costs ---------------------------------------------------
def list_traffic_sources(session: Session, page: Page) -> tuple[list[TrafficSource], str | None]:
    return _paginate(session, select(TrafficSource), TrafficSource, page)


def get_traffic_source(session: Session, source_id: str) -> TrafficSource:
    return _get(session, TrafficSource, source_id, "traffic source")


def create_traffic_source(session: Session, data: Mapping[str, Any]) -> TrafficSource:
    source = TrafficSource(id=new_id("ts"), name=data["name"].strip(), cost_model=data["cost_model"])
    session.add(source)
    session.flush()
    return source


def update_traffic_source(session: Session, source_id: str, changes: Mapping[str, Any]) -> TrafficSource:
    source = get_traffic_source(session, source_id)
    _apply(source, changes)
    session.flush()
    return source


def list_campaigns(
    session: Session, page: Page, *, traffic_source_id: str | None = None, link_id: str | None = None
) -> tuple[list[Campaign], str | None]:
    query = select(Campaign)
    if traffic_source_id:
        query = query.where(Campaign.traffic_source_id == traffic_source_id)
    if link_id:
        query = query.where(Campaign.link_id == link_id)
    return _paginate(session, query, Campaign, page)


def get_campaign(session: Session, campaign_id: str) -> Campaign:
    return _get(session, Campaign, campaign_id, "campaign")


def create_campaign(session: Session, data: Mapping[str, Any], *, campaign_id: str | None = None) -> Campaign:
    """Create a campaign, ungoverned: the building block of `open_campaign`."""
    _require(session, TrafficSource, data["traffic_source_id"], "traffic source", "traffic_source_id")
    if data.get("link_id") is not None:
        _require(session, SmartLink, data["link_id"], "link", "link_id")
    _check_budget(data["daily_budget"], data["daily_cap"])
    campaign = Campaign(
        id=campaign_id or new_id("cmp"),
        name=data["name"].strip(),
        traffic_source_id=data["traffic_source_id"],
        link_id=data.get("link_id"),
        daily_budget=data["daily_budget"],
        daily_cap=data["daily_cap"],
        currency=data["currency"],
        status=data.get("status") or "active",
    )
    session.add(campaign)
    session.flush()
    return campaign


def _check_budget(budget: Decimal, cap: Decimal) -> None:
    if budget > cap:
        raise invalid("daily_budget", f"the daily budget {budget} is above the daily cap {cap}")


def update_campaign(session: Session, campaign_id: str, changes: Mapping[str, Any]) -> Campaign:
    """Apply `changes` to a campaign, ungoverned: the building block of `configure_campaign` and
    of the AI supervisor's budget executor, which decides the change itself first."""
    campaign = get_campaign(session, campaign_id)
    if changes.get("link_id") is not None:
        _require(session, SmartLink, changes["link_id"], "link", "link_id")
    _check_budget(changes.get("daily_budget", campaign.daily_budget), changes.get("daily_cap", campaign.daily_cap))
    _apply(campaign, changes)
    session.flush()
    return campaign


_SPENDING = ("daily_budget", "daily_cap", "status")


def _others_total(session: Session, currency: str, campaign_id: str) -> float:
    total = session.scalar(
        select(func.coalesce(func.sum(Campaign.daily_budget), 0)).where(
            Campaign.status == "active", Campaign.currency == currency, Campaign.id != campaign_id
        )
    )
    return float(total or 0)


def _campaign_state(campaign: Campaign) -> dict[str, Any]:
    return {
        "daily_budget": float(campaign.daily_budget),
        "daily_cap": float(campaign.daily_cap),
        "status": campaign.status,
        "currency": campaign.currency,
    }


def _decide_campaign(
    session: Session,
    gateway: Gateway,
    actor: Actor,
    target_id: str,
    before: dict[str, Any] | None,
    after: Mapping[str, Any],
    apply: Callable[[Session], Campaign],
) -> Outcome:
    params = {k: float(v) if isinstance(v, Decimal) else v for k, v in after.items()}
    outcome = gateway.decide(
        session,
        Action(type="campaign.configure", actor=actor, target=Target(kind="campaign", id=target_id), params=params),
        state={"campaign": before, "others_total": _others_total(session, str(after["currency"]), target_id)},
        caller=actor,
        execute=lambda db, _params: apply(db).id,
    )
    _raise_if_failed(outcome)
    return outcome


def open_campaign(
    session: Session, gateway: Gateway, actor: Actor, data: Mapping[str, Any]
) -> tuple[Campaign | None, Outcome]:
    """A person's or a service's creation of a campaign: the governed `campaign.configure` action,
    so that its budget stays under the per-campaign and global caps the budget engine obeys. The
    campaign is None when the policy refused it (the decision is recorded all the same)."""
    _require(session, TrafficSource, data["traffic_source_id"], "traffic source", "traffic_source_id")
    if data.get("link_id") is not None:
        _require(session, SmartLink, data["link_id"], "link", "link_id")
    _check_budget(data["daily_budget"], data["daily_cap"])
    campaign_id = new_id("cmp")
    after = {
        "daily_budget": data["daily_budget"],
        "daily_cap": data["daily_cap"],
        "status": data.get("status") or "active",
        "currency": data["currency"],
    }
    outcome = _decide_campaign(
        session, gateway, actor, campaign_id, None, after, lambda db: create_campaign(db, data, campaign_id=campaign_id)
    )
    return (session.get(Campaign, campaign_id) if outcome.executed else None), outcome


def configure_campaign(
    session: Session, gateway: Gateway, actor: Actor, campaign_id: str, changes: Mapping[str, Any]
) -> tuple[Campaign, Outcome | None]:
    """A person's or a service's edit of a campaign. A change of its daily budget, daily cap or
    status is the governed `campaign.configure` action, applied (with the rest of the edit) only
    when the policy allows, in the transaction that records the decision. The outcome is None when
    only descriptive data changed."""
    campaign = get_campaign(session, campaign_id)
    if not any(k in changes and changes[k] != getattr(campaign, k) for k in _SPENDING):
        return update_campaign(session, campaign_id, changes), None
    if changes.get("link_id") is not None:
        _require(session, SmartLink, changes["link_id"], "link", "link_id")
    _check_budget(changes.get("daily_budget", campaign.daily_budget), changes.get("daily_cap", campaign.daily_cap))
    after = {k: changes.get(k, getattr(campaign, k)) for k in (*_SPENDING, "currency")}
    outcome = _decide_campaign(
        session,
        gateway,
        actor,
        campaign.id,
        _campaign_state(campaign),
        after,
        lambda db: update_campaign(db, campaign_id, changes),
    )
    return campaign, outcome


def cost_totals(session: Session, campaign_ids: Sequence[str], since: date) -> dict[str, tuple[Decimal, int]]:
    """Each campaign's imported cost and clicks since a day (inclusive)."""
    if not campaign_ids:
        return {}
    rows = session.execute(
        select(CampaignCost.campaign_id, func.sum(CampaignCost.amount), func.sum(CampaignCost.clicks))
        .where(CampaignCost.campaign_id.in_(campaign_ids), CampaignCost.day >= since)
        .group_by(CampaignCost.campaign_id)
    )
    return {campaign_id: (Decimal(amount or 0), int(clicks or 0)) for campaign_id, amount, clicks in rows}


@dataclass(frozen=True)
class CostImport:
    created: int
    updated: int
    rows: list[CampaignCost]


def list_costs(
    session: Session, campaign_id: str, *, since: date | None = None, until: date | None = None
) -> list[CampaignCost]:
    get_campaign(session, campaign_id)
    query = select(CampaignCost).where(CampaignCost.campaign_id == campaign_id)
    if since:
        query = query.where(CampaignCost.day >= since)
    if until:
        query = query.where(CampaignCost.day <= until)
    return list(session.scalars(query.order_by(CampaignCost.day)))


def import_costs(session: Session, campaign_id: str, rows: Sequence[Mapping[str, Any]]) -> CostImport:
    """Upsert the campaign's cost per day: importing the same file twice changes nothing, a
    corrected file replaces the days it names. Days in the future (UTC) are refused."""
    get_campaign(session, campaign_id)
    today = datetime.now(UTC).date()
    future = {str(i): {"day": [f"{row['day']} is in the future"]} for i, row in enumerate(rows) if row["day"] > today}
    if future:
        raise Problem(400, "Validation failed", "costs can only be imported for past days", errors=future)
    days = [row["day"] for row in rows]
    existing = set(
        session.scalars(
            select(CampaignCost.day).where(CampaignCost.campaign_id == campaign_id, CampaignCost.day.in_(days))
        )
    )
    now = utcnow()
    values = [
        {
            "campaign_id": campaign_id,
            "day": row["day"],
            "amount": row["amount"],
            "clicks": row.get("clicks", 0),
            "imported_at": now,
        }
        for row in rows
    ]
    # One statement with ON CONFLICT: two imports of the same day at once cannot both insert.
    upsert = pg_insert(CampaignCost) if session.get_bind().dialect.name == "postgresql" else sqlite_insert(CampaignCost)
    statement = upsert.values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[CampaignCost.campaign_id, CampaignCost.day],
        set_={
            "amount": statement.excluded.amount,
            "clicks": statement.excluded.clicks,
            "imported_at": statement.excluded.imported_at,
        },
    )
    session.execute(statement)
    stored = list(
        session.scalars(
            select(CampaignCost)
            .where(CampaignCost.campaign_id == campaign_id, CampaignCost.day.in_(days))
            .order_by(CampaignCost.day)
            .execution_options(populate_existing=True)
        )
    )
    return CostImport(created=len(set(days) - existing), updated=len(existing), rows=stored)
