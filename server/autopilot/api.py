"""`POST /v1/links/<link_id>/optimize`: run one autopilot cycle for a link now.

200 with the cycle when its allocation was approved (as proposed or clamped); a denied cycle is a
403 `denied-by-policy` problem carrying the cycle and its decision (the old allocation stays);
503 when OPA could not decide; 409 when the link is not active or has no arms; 422 when its
algorithm or parameters are unusable. Every cycle is recorded, whatever the answer."""

from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, jsonify

from server.auth.authz import current_subject
from server.autopilot.services import autopilot_actor, optimize_link
from server.db import utcnow
from server.errors import Problem
from server.extensions import services
from server.governance.api import FAILED_CLOSED
from server.links.models import SmartLink

autopilot_api = Blueprint("autopilot_api", __name__, url_prefix="/v1/links")


@autopilot_api.post("/<link_id>/optimize")
def optimize(link_id: str) -> tuple[Response, int]:
    svc = services()
    with svc.db.unit_of_work() as uow:
        link = uow.session.get(SmartLink, link_id)
        if link is None:
            raise Problem(404, "Not Found", f"no link with id {link_id}")
        result = optimize_link(
            uow.session,
            svc.gateway,
            link,
            actor=autopilot_actor(link),
            rng=np.random.default_rng(),
            now=utcnow(),
            trigger="api",
            triggered_by=current_subject().id,
        )
        uow.commit()
    body = result.as_dict()
    detail = "; ".join(str(r.get("message", r.get("code"))) for r in result.reasons)
    if result.outcome in ("allowed", "clamped", "shadow", "pending_approval"):
        return jsonify(body), 200
    if result.error_code in FAILED_CLOSED:
        raise Problem(
            503,
            "Policy engine unavailable",
            "OPA could not decide: the allocation is unchanged",
            type_="opa-unavailable",
            extra=body,
        )
    if result.outcome == "failed":
        raise Problem(
            500, "Cycle failed", "the approved allocation could not be stored; it has been logged", extra=body
        )
    if result.outcome == "skipped":
        raise Problem(409, "Cycle skipped", detail, type_="cycle-skipped", extra=body)
    if result.decision_id is None:
        raise Problem(422, "Cannot optimise", detail, type_="cannot-optimise", extra=body)
    raise Problem(403, "Denied by policy", detail, type_="denied-by-policy", extra=body)
