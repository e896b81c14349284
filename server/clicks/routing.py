"""The per-process routing table: for every link, an `AliasSampler` over its current approved
allocation and the offers' URL templates compiled once, so that a click costs a dictionary
lookup, one pre-drawn choice (`AliasSampler.choose`) and a string join.

Refresh (a background thread per process, started with the first click):

* every `ROUTING_REFRESH_SECONDS` (1 s) one cheap *version check* query reads a fingerprint of
  what routing depends on (link count and last update, newest allocation id, offer count and
  last update, arm count and newest arm); the table is rebuilt only when it changed, and
  unconditionally when it is older than `MAX_AGE` (30 s) as a safety net for changes that do not
  touch those columns;
* on the same tick, when some offer has a daily conversion cap, today's conversions of the capped
  offers are counted, so a cap takes effect within about one refresh interval (a soft cap).

A table being rebuilt never blocks a click: the new table replaces the old one in one reference
assignment. A failed refresh keeps the last table (clicks keep flowing on the last approved
allocations while the database is away)."""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from algorithms.base import AliasSampler
from server.db import Database
from server.links.models import Allocation, Conversion, LinkArm, Offer, SmartLink

log = logging.getLogger(__name__)

MAX_AGE = 30.0
#: Macros filled per click, in the order of `ClickValues`. {link} and {offer} are fixed per route.
CLICK_MACROS = ("click_id", "sub1", "sub2", "sub3", "sub4", "sub5", "country", "device")
_MACRO = re.compile(r"\{(click_id|link|offer|sub[1-5]|country|device)\}")
# Characters a URL template may carry as they are; anything else (spaces, non-ASCII, CR/LF) is
# percent-encoded once when the template is compiled, so a Location header is always clean.
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]~_"

_FINGERPRINT = text(
    """
    SELECT (SELECT COUNT(*) FROM smart_links), (SELECT MAX(updated_at) FROM smart_links),
           (SELECT MAX(id) FROM allocations),
           (SELECT COUNT(*) FROM offers), (SELECT MAX(updated_at) FROM offers),
           (SELECT COUNT(*) FROM link_arms), (SELECT MAX(added_at) FROM link_arms)
    """
)


def compile_template(template: str, link_id: str, offer_id: str) -> str:
    """The template as a `str.format` pattern: {link} and {offer} filled in, every per-click macro
    a positional field (its index in CLICK_MACROS), every other character URL-safe and braces
    escaped. Formatting it (C code) is the whole per-click cost of building the URL."""
    out: list[str] = []
    pos = 0

    def literal(text: str) -> str:
        return quote(text, safe=_URL_SAFE).replace("{", "{{").replace("}", "}}")

    for match in _MACRO.finditer(template):
        out.append(literal(template[pos : match.start()]))
        name = match.group(1)
        if name == "link":
            out.append(literal(quote(link_id, safe="")))
        elif name == "offer":
            out.append(literal(quote(offer_id, safe="")))
        else:
            out.append("{%d}" % CLICK_MACROS.index(name))  # noqa: UP031 - building a format pattern
        pos = match.end()
    out.append(literal(template[pos:]))
    return "".join(out)


def render_url(pattern: str, values: tuple[str, ...]) -> str:
    """The offer URL for one click; `values` are already URL-encoded, in CLICK_MACROS order."""
    return pattern.format(*values)


@dataclass(frozen=True, slots=True)
class Target:
    """An offer as one link routes to it."""

    offer_id: str
    pattern: str  # compile_template()
    active: bool
    countries: frozenset[str]
    devices: frozenset[str]
    capped: bool  # has a daily conversion cap

    @property
    def unrestricted(self) -> bool:
        return self.active and not self.countries and not self.devices and not self.capped

    def eligible(self, country: str | None, device: str, capped_out: frozenset[str]) -> bool:
        if not self.active:
            return False
        if self.countries and country not in self.countries:
            return False
        if self.devices and device not in self.devices:
            return False
        return not (self.capped and self.offer_id in capped_out)


@dataclass(frozen=True, slots=True)
class Choice:
    target: Target | None
    probability: float
    is_fallback: bool


@dataclass(frozen=True, slots=True)
class LinkRoute:
    link_id: str
    slug: str
    active: bool
    allocation_id: int | None
    sampler: AliasSampler | None
    targets: Mapping[str, Target]  # the link's arms that exist as offers
    fallback: Target | None
    unrestricted: bool  # every arm with positive weight is always eligible
    # The Choice of every arm with positive weight, built once: an unrestricted click returns one
    # of these rather than building a new one (which costs more than drawing the arm).
    choices: Mapping[str, Choice] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        choices: dict[str, Choice] = {}
        if self.sampler is not None:
            for arm, probability in self.sampler.weights.items():
                target = self.targets.get(arm)
                if probability > 0.0 and target is not None:
                    choices[arm] = Choice(target, probability, False)
        object.__setattr__(self, "choices", choices)

    def choose(
        self, country: str | None, device: str, capped_out: frozenset[str], rng: random.Random | None = None
    ) -> Choice:
        """The arm for one click, with the probability it had of being chosen for this click
        (renormalised over the arms eligible for it), or the fallback offer, or nothing.

        Without ``rng`` (the click path) the sampler's pre-drawn choices are used; a seeded
        ``random.Random`` gives a reproducible sequence instead."""
        sampler = self.sampler
        if self.active and sampler is not None:
            if self.unrestricted:
                return self.choices[sampler.choose(rng)[0]]
            targets = self.targets

            def eligible(arm: str) -> bool:
                target = targets.get(arm)
                return target is not None and target.eligible(country, device, capped_out)

            picked = sampler.sample_eligible(eligible, rng)
            if picked is not None:
                return Choice(targets[picked[0]], picked[1], False)
        if self.fallback is not None and self.fallback.active:
            return Choice(self.fallback, 1.0, True)
        return Choice(None, 0.0, False)


def load_routes(session: Session) -> tuple[dict[str, LinkRoute], frozenset[str]]:
    """Build the routing table from the database: {slug: route}, and the capped offers' ids."""
    offers = {
        row.id: row
        for row in session.execute(
            select(Offer.id, Offer.url_template, Offer.status, Offer.daily_cap, Offer.countries, Offer.devices)
        )
    }
    arms: dict[str, list[str]] = {}
    for link_id, offer_id in session.execute(select(LinkArm.link_id, LinkArm.offer_id)):
        arms.setdefault(link_id, []).append(offer_id)
    rows = session.execute(
        select(
            SmartLink.id,
            SmartLink.slug,
            SmartLink.status,
            SmartLink.fallback_offer_id,
            SmartLink.current_allocation_id,
            Allocation.weights,
        ).outerjoin(Allocation, Allocation.id == SmartLink.current_allocation_id)
    )

    def target(link_id: str, offer_id: str) -> Target | None:
        offer = offers.get(offer_id)
        if offer is None:
            return None
        return Target(
            offer_id=offer_id,
            pattern=compile_template(offer.url_template, link_id, offer_id),
            active=offer.status == "active",
            countries=frozenset(str(c).upper() for c in offer.countries or ()),
            devices=frozenset(str(d).lower() for d in offer.devices or ()),
            capped=offer.daily_cap is not None,
        )

    table: dict[str, LinkRoute] = {}
    for link_id, slug, status, fallback_id, allocation_id, weights in rows:
        targets = {o: t for o in arms.get(link_id, ()) if (t := target(link_id, o)) is not None}
        sampler = None
        unrestricted = False
        if weights:
            try:
                sampler = AliasSampler({str(k): float(v) for k, v in weights.items()})
            except (ValueError, TypeError, AttributeError):
                log.error("allocation %s of link %s cannot be sampled; routing to the fallback", allocation_id, link_id)
            else:
                positive = [a for a, w in sampler.weights.items() if w > 0]
                unrestricted = all(a in targets and targets[a].unrestricted for a in positive)
        table[slug] = LinkRoute(
            link_id=link_id,
            slug=slug,
            active=status == "active",
            allocation_id=allocation_id if sampler is not None else None,
            sampler=sampler,
            targets=targets,
            fallback=target(link_id, fallback_id) if fallback_id else None,
            unrestricted=unrestricted,
        )
    capped = frozenset(o for o, row in offers.items() if row.daily_cap is not None)
    return table, capped


def capped_out_offers(session: Session, capped: frozenset[str], now: datetime) -> frozenset[str]:
    """The capped offers whose approved or pending conversions today (UTC) reached the cap."""
    if not capped:
        return frozenset()
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    caps = dict(session.execute(select(Offer.id, Offer.daily_cap).where(Offer.id.in_(sorted(capped)))).all())
    counts = session.execute(
        select(Conversion.offer_id, func.count())
        .where(Conversion.created_at >= day, Conversion.status != "rejected", Conversion.offer_id.in_(sorted(capped)))
        .group_by(Conversion.offer_id)
    )
    return frozenset(offer for offer, n in counts if caps.get(offer) is not None and n >= int(caps[offer] or 0))


class RoutingCache:
    """The routing table of this process, kept fresh by a background thread."""

    def __init__(
        self, db: Database, *, refresh_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self.table: dict[str, LinkRoute] = {}
        self.capped_out: frozenset[str] = frozenset()
        self._capped: frozenset[str] = frozenset()
        self._fingerprint: tuple[Any, ...] | None = None
        self._loaded_at = -MAX_AGE
        self.loaded = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, slug: str) -> LinkRoute | None:
        return self.table.get(slug)

    def refresh(self, *, force: bool = False) -> bool:
        """Check the version and rebuild when needed; recount capped offers. True if rebuilt."""
        with self._lock, self.db.reading() as session:
            rebuilt = False
            fingerprint = tuple(session.execute(_FINGERPRINT).one())
            stale = self._clock() - self._loaded_at >= MAX_AGE
            if force or stale or fingerprint != self._fingerprint:
                self.table, self._capped = load_routes(session)
                self._fingerprint = fingerprint
                self._loaded_at = self._clock()
                self.loaded = rebuilt = True
            self.capped_out = capped_out_offers(session, self._capped, datetime.now(UTC))
            return rebuilt

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="smartlinks-routing", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception:  # keep the last table; clicks keep flowing on it
                log.exception("routing table refresh failed; keeping the last table")

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
