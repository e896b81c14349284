"""Liveness (`/healthz`) and readiness (`/readyz`: database reachable, OPA healthy with its
bundle active). Both answer without OPA's permission so that they work when OPA is down."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server.extensions import services

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "alive"})


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = services()
    checks: dict[str, dict[str, object]] = {}
    try:
        with svc.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except SQLAlchemyError as exc:
        checks["database"] = {"ok": False, "detail": f"unreachable: {type(exc).__name__}"}
    ok, detail = svc.opa.health(bundles=True)
    checks["opa"] = {"ok": ok, "detail": detail, "url": svc.opa.url}
    ready = all(bool(c["ok"]) for c in checks.values())
    not_ready = [name for name, c in checks.items() if not c["ok"]]
    body = {"status": "ready" if ready else "not_ready", "checks": checks, "not_ready": not_ready}
    return jsonify(body), 200 if ready else 503
