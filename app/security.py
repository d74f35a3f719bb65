"""Who may see the dashboard: basic auth (dash-auth) from ``dashboard.auth_user``/``auth_password``.

Credentials are required unless the app is *actually* bound to loopback (issue 27, item 7). What
``dashboard.host`` says is not enough (``gunicorn --bind 0.0.0.0 app.wsgi:server`` ignores it), so
without credentials the app checks the real sockets:

- at start-up, every listening TCP socket of this process (a gunicorn worker inherits the
  arbiter's) and the configured host must be loopback, else it refuses to start
  (``ExposedWithoutAuth``);
- on every request, the socket the request came in on (``gunicorn.socket`` / ``werkzeug.socket``:
  its local address) and the listener's address (``SERVER_NAME``: the bound address under both
  servers) must be loopback IPs, else the request is refused with 403. This also covers
  ``gunicorn --preload`` (the app is loaded before gunicorn binds) and unix sockets (never
  waived: a proxy may serve them to anyone). A server that exposes neither socket gets 403 too.

With credentials configured every request needs them, wherever the app listens.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import flask
import psutil
from dash import Dash

from jobs.config import Dashboard

REFUSED = (
    "this dashboard has no login and is not bound to loopback: set RFM__DASHBOARD__AUTH_USER and "
    "RFM__DASHBOARD__AUTH_PASSWORD, or bind 127.0.0.1"
)


class ExposedWithoutAuth(RuntimeError):
    """The dashboard would listen beyond loopback with no login."""


def is_loopback(host: Any) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]")).is_loopback
    except ValueError:
        return False


def listening_hosts() -> list[str]:
    """The addresses this process listens on over TCP (a gunicorn worker: the arbiter's sockets)."""
    return sorted({c.laddr.ip for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN})


def request_on_loopback(environ: dict[str, Any]) -> bool:
    """True when the request came in on a loopback TCP socket of a server bound to loopback."""
    connection = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if not isinstance(connection, socket.socket) or connection.family not in (socket.AF_INET, socket.AF_INET6):
        return False  # unknown server, or a unix socket
    try:
        local = connection.getsockname()[0]
    except OSError:
        return False
    return is_loopback(local) and is_loopback(environ.get("SERVER_NAME"))


def protect(app: Dash, config: Dashboard) -> Dash:
    """Add basic auth when credentials are configured; otherwise serve only a verified loopback bind."""
    if config.auth_user and config.auth_password:
        import dash_auth

        dash_auth.BasicAuth(app, {config.auth_user: config.auth_password})
        return app
    exposed = [host for host in [config.host, *listening_hosts()] if not is_loopback(host)]
    if exposed:
        raise ExposedWithoutAuth(f"listening on {', '.join(exposed)}: {REFUSED}")

    def loopback_only():
        if not request_on_loopback(flask.request.environ):
            return {"error": REFUSED}, 403
        return None

    # first of the server's hooks: refused before Dash sets anything up or reads the lake
    app.server.before_request_funcs.setdefault(None, []).insert(0, loopback_only)
    return app
