"""WSGI entry point for a production server: ``gunicorn "app.wsgi:server"`` (as in docker/compose.yml).

Host, port, auth and paging come from ``dashboard:`` in conf/ (see ``app.security``).
"""

from __future__ import annotations

from app.data import SegmentLake
from app.security import protect
from app.views import create_app
from jobs.config import load_settings

settings = load_settings()
app = protect(create_app(SegmentLake.from_settings(settings), settings.dashboard), settings.dashboard)
server = app.server
