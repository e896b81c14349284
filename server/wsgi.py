"""WSGI entry point for gunicorn (`gunicorn server.wsgi:app`): configures this worker's logging
(LOG_LEVEL, LOG_FORMAT) and builds the app."""

from server import create_app
from server.config import Settings
from server.observability.logs import configure_logging

_settings = Settings.from_env()
configure_logging(_settings.log_level, _settings.log_format)
app = create_app(_settings)
