"""Imports every model module so that Base.metadata knows all tables (migrations, tests)."""

from server.auth import models as auth_models
from server.governance import models as governance_models
from server.links import models as links_models

__all__ = ["auth_models", "governance_models", "links_models"]
