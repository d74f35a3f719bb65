"""Who may see the dashboard: basic auth (dash-auth) from ``dashboard.auth_user``/``auth_password``.

On loopback no login is needed. Bound to any other address the dashboard refuses to start
without credentials (a segment explorer lists customers).
"""

from __future__ import annotations

import ipaddress

from dash import Dash

from jobs.config import Dashboard


class ExposedWithoutAuth(RuntimeError):
    """The dashboard would listen beyond loopback with no login."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def protect(app: Dash, config: Dashboard) -> Dash:
    """Add basic auth when credentials are configured; refuse a non-loopback bind without them."""
    if config.auth_user and config.auth_password:
        import dash_auth

        dash_auth.BasicAuth(app, {config.auth_user: config.auth_password})
    elif not is_loopback(config.host):
        raise ExposedWithoutAuth(
            f"dashboard.host is {config.host}, not loopback: set RFM__DASHBOARD__AUTH_USER and "
            "RFM__DASHBOARD__AUTH_PASSWORD, or bind 127.0.0.1"
        )
    return app
