"""Per-app services, bound in the app factory and looked up through `current_app`.

Nothing here is created at import time; `init_extensions` builds the objects for one app (no
network calls: the database engine and the OPA session connect lazily)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from server.auth.authz import PublicEndpoints
from server.auth.services import TokenCache
from server.config import Settings
from server.db import Database
from server.governance.gateway import Gateway
from server.policy.opa_client import OpaClient

KEY = "smartlinks"


@dataclass
class Services:
    settings: Settings
    db: Database
    opa: OpaClient
    gateway: Gateway
    tokens: TokenCache
    public_endpoints: PublicEndpoints

    def close(self) -> None:
        """Release connections (database pool, OPA keep-alive sessions)."""
        self.opa.close()
        self.db.dispose()


def init_extensions(app: Flask, settings: Settings) -> Services:
    db = Database()
    db.configure(settings.database_url)
    opa = OpaClient(
        settings.opa_url or f"http://127.0.0.1:{settings.opa_port}",
        connect_timeout=settings.opa_connect_timeout,
        timeout=settings.opa_timeout,
    )
    opa.fallback_revision = settings.policy_revision
    services = Services(
        settings=settings,
        db=db,
        opa=opa,
        gateway=Gateway(opa, mode=settings.mode),
        tokens=TokenCache(),
        public_endpoints=PublicEndpoints(opa, ttl=settings.public_cache_seconds),
    )
    app.extensions[KEY] = services
    return services


def services(app: Flask | None = None) -> Services:
    target = app or current_app
    found: Services = target.extensions[KEY]
    return found
