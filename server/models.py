"""Imports every model module so that Base.metadata knows all tables (migrations, tests)."""

from billing import models as billing_models
from server.ai import models as ai_models
from server.auth import models as auth_models
from server.autopilot import models as autopilot_models
from server.governance import models as governance_models
from server.links import models as links_models
from server.policies import models as policies_models
from server.portal import models as portal_models

__all__ = [
    "ai_models",
    "auth_models",
    "autopilot_models",
    "billing_models",
    "governance_models",
    "links_models",
    "policies_models",
    "portal_models",
]
