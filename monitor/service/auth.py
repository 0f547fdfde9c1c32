"""The read API's bearer token, checked in constant time (``docs/api.md``).

    guard = BearerGuard(token)            # None: no token configured
    refusal = guard.refusal(request)      # a 401/403 response, or None: let it through

With a token, a request needs ``Authorization: Bearer TOKEN`` (RFC 6750 section 2.1);
without one, or with another, it gets 401 and a ``WWW-Authenticate`` challenge (section 3).
Without a token configured the API answers clients on a loopback address only (403 for
others): ``serve`` may listen on every interface for its webhooks, and what the store
knows about recipients is not for anyone who can reach the port.
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["REALM", "BearerGuard"]

REALM = "mailmon"


class BearerGuard:
    """Lets a request through when it carries the token (or, with none set, comes from loopback)."""

    def __init__(self, token: str | None) -> None:
        self._token = None if token is None else token.encode()

    @property
    def required(self) -> bool:
        return self._token is not None

    def refusal(self, request: Request) -> Response | None:
        if self._token is None:
            client = request.client.host if request.client else ""
            if _loopback(client):
                return None
            return JSONResponse({"error": "no API token is configured: the API answers "
                                 "loopback clients only"}, status_code=403)  # fmt: skip
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _challenge("bearer token required", None)
        if not hmac.compare_digest(given.strip().encode(), self._token):
            return _challenge("invalid token", "invalid_token")
        return None


def _challenge(message: str, error: str | None) -> Response:
    value = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    return JSONResponse({"error": message}, status_code=401, headers={"WWW-Authenticate": value})


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
